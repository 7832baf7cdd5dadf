//! How a span's fields are kept for JSON log lines: one JSON object, written straight
//! into the span's buffer when the span is created.
//!
//! tracing-subscriber's own `JsonFields` first builds a map of `serde_json::Value`s
//! (an allocation per field, and one per `%`-formatted value) and then serializes it;
//! the gateway makes a span on every call, so that showed in its profile. This writes
//! the same object directly, and leaves out `otel.*` fields: they name the span for
//! trace export and only repeat the method in a log line.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::Writer;

/// See the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonSpanFields;

impl<'w> FormatFields<'w> for JsonSpanFields {
    /// The object is built in a buffer kept per thread and written in one piece: the
    /// span's own buffer starts empty, and three writes into it grew it three times.
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        thread_local! {
            static SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => {
                let mut object = Object {
                    buf: std::mem::take(&mut *scratch),
                };
                object.buf.clear();
                object.buf.push('{');
                fields.record(&mut object);
                object.buf.push('}');
                let written = writer.write_str(&object.buf);
                // A span with a huge field does not pin its size to the thread.
                if object.buf.capacity() <= 4096 {
                    *scratch = object.buf;
                }
                written
            }
            // A field's Debug formatting that formats a span's fields itself.
            Err(_) => {
                let mut object = Object::default();
                fields.record(&mut object);
                writer.write_str(&object.finish())
            }
        })
    }

    /// A field recorded after the span was created joins the object (a later value of
    /// the same name wins when the line is read back).
    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut object = Object::default();
        fields.record(&mut object);
        if object.buf.is_empty() {
            return Ok(());
        }
        match current.fields.strip_suffix('}') {
            Some(open) if open.len() > 1 => {
                let mut merged = String::with_capacity(open.len() + object.buf.len() + 2);
                merged.push_str(open);
                merged.push(',');
                merged.push_str(&object.buf);
                merged.push('}');
                current.fields = merged;
            }
            _ => current.fields = object.finish(),
        }
        Ok(())
    }
}

/// The `"name":value` pairs of one object, comma-separated, without the braces.
struct Object {
    buf: String,
}

impl Default for Object {
    fn default() -> Self {
        // Room for a call span's fields without growing.
        Self {
            buf: String::with_capacity(192),
        }
    }
}

impl Object {
    fn key(&mut self, field: &Field) -> bool {
        let name = field.name();
        if name.starts_with("otel.") {
            return false;
        }
        if !(self.buf.is_empty() || self.buf.ends_with('{')) {
            self.buf.push(',');
        }
        push_json_str(&mut self.buf, name);
        self.buf.push(':');
        true
    }

    fn finish(self) -> String {
        let mut out = String::with_capacity(self.buf.len() + 2);
        out.push('{');
        out.push_str(&self.buf);
        out.push('}');
        out
    }
}

impl Visit for Object {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.key(field) {
            push_json_str(&mut self.buf, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.key(field) {
            let _ = write!(self.buf, "{value}");
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.key(field) {
            let _ = write!(self.buf, "{value}");
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field) {
            self.buf.push_str(if value { "true" } else { "false" });
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.key(field) {
            if value.is_finite() {
                let _ = write!(self.buf, "{value}");
            } else {
                // JSON has no NaN or infinity.
                push_json_str(&mut self.buf, &value.to_string());
            }
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.key(field) {
            push_json_str(&mut self.buf, &value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.key(field) {
            push_json_str(&mut self.buf, &format!("{value:?}"));
        }
    }
}

/// `s` as a JSON string literal. Runs that need no escape are copied whole.
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        // Every byte escaped is ASCII, so `i` is a char boundary.
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::test_lines::Lines;

    /// A log line inside a span carries the span's fields as JSON the reader can
    /// parse — strings escaped, numbers as numbers, `%` and `?` values as strings, a
    /// field recorded later included — and no `otel.*` field.
    #[test]
    fn span_fields_are_json_without_otel_fields() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber =
            tracing_subscriber::registry().with(crate::json_log_layer(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "grpc",
                otel.name = "/pkg.Service/Method",
                otel.kind = "server",
                rpc.method = %"/pkg.Service/Method",
                request_id = "a\"b\\c\nd",
                attempt = 3u64,
                delta = -2i64,
                ok = true,
                reason = ?Some("x"),
                later = tracing::field::Empty,
            );
            span.record("later", 7u64);
            let _entered = span.enter();
            tracing::warn!("inside");
        });
        let text = lines.text();
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
        let span = &line["span"];
        assert_eq!(span["name"], "grpc");
        assert_eq!(span["rpc.method"], "/pkg.Service/Method");
        assert_eq!(span["request_id"], "a\"b\\c\nd");
        assert_eq!(span["attempt"], 3);
        assert_eq!(span["delta"], -2);
        assert_eq!(span["ok"], true);
        assert_eq!(span["reason"], "Some(\"x\")");
        assert_eq!(span["later"], 7);
        assert!(
            span.get("otel.name").is_none() && span.get("otel.kind").is_none(),
            "{span}"
        );
        assert_eq!(line["message"], "inside");
    }

    /// Strings read back as they went in: quotes, backslashes, every control
    /// character, multi-byte text and escapes at both ends.
    #[test]
    fn strings_round_trip_through_json() {
        let controls: String = (0u8..0x20).map(char::from).collect();
        for s in [
            "",
            "plain",
            "\"quoted\" and \\ back",
            controls.as_str(),
            "żółw → 🐢\u{7f}",
            "\nstarts and ends\t",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, s);
            let back: String = serde_json::from_str(&out).expect("valid JSON string");
            assert_eq!(back, s, "{out}");
        }
    }
}
