//! A call's log context without a `tracing` span.
//!
//! While a process exports no spans, the gateway's span per call has one reader: the
//! JSON log output, which prints the current span's fields on every line logged during
//! the call. Creating, entering and closing that span cost the gateway two to three
//! points of throughput (see benches/README.md). A [`CallScope`] carries the same
//! fields for a fraction of that: [`CallScope::in_scope`] makes it the thread's current
//! call while a closure runs, and the JSON output ([`WithCallScope`]) prints it as the
//! line's `span` (and `spans`), the shape a real span would give. Used only when
//! [`call_scopes`] says that output is installed and no spans are exported; otherwise
//! the caller makes a real span.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::json_fields::push_json_str;

static CALL_SCOPES: AtomicBool = AtomicBool::new(false);

/// Whether a call's log context should be a [`CallScope`] rather than a span: the
/// global subscriber's log output renders call scopes ([`WithCallScope`]) and no spans
/// are exported ([`crate::exporting_spans`]).
pub fn call_scopes() -> bool {
    CALL_SCOPES.load(Ordering::Relaxed) && !crate::exporting_spans()
}

/// Records that the global subscriber's log output renders call scopes: [`crate::init`]
/// does for JSON logs, and so must anything else that installs such an output.
pub fn set_call_scopes() {
    CALL_SCOPES.store(true, Ordering::Relaxed);
}

thread_local! {
    static CURRENT: RefCell<Option<CallScope>> = const { RefCell::new(None) };
}

/// One call's log context: what its span would be named and carry.
#[derive(Clone, Debug)]
pub struct CallScope {
    name: &'static str,
    method: Cow<'static, str>,
    request_id: http::HeaderValue,
}

impl CallScope {
    /// The context of a call to `method` (`rpc.method`) with `request_id`, shown as a
    /// span named `name`.
    pub fn new(
        name: &'static str,
        method: Cow<'static, str>,
        request_id: http::HeaderValue,
    ) -> Self {
        Self {
            name,
            method,
            request_id,
        }
    }

    /// Runs `f` with this as the thread's current call (the one before comes back
    /// after, also if `f` panics).
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<CallScope>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let previous = self.0.take();
                let _ = CURRENT.try_with(|current| *current.borrow_mut() = previous);
            }
        }
        let previous = CURRENT.with(|current| current.borrow_mut().replace(self.clone()));
        let _restore = Restore(previous);
        f()
    }

    /// The scope as a JSON object, like a span's under `span`.
    fn write_json(&self, out: &mut String) {
        out.push_str("{\"name\":");
        push_json_str(out, self.name);
        out.push_str(",\"rpc.method\":");
        push_json_str(out, &self.method);
        out.push_str(",\"request_id\":");
        push_json_str(out, self.request_id.to_str().unwrap_or("(not ASCII)"));
        out.push('}');
    }
}

/// A JSON event format that adds the thread's current [`CallScope`], when there is one
/// and no span is current, as the line's `span` and `spans`.
#[derive(Clone, Debug)]
pub struct WithCallScope<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for WithCallScope<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let scope = CURRENT
            .try_with(|current| current.borrow().clone())
            .ok()
            .flatten();
        let Some(scope) = scope.filter(|_| ctx.lookup_current().is_none()) else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let Some(open) = line.trim_end().strip_suffix('}') else {
            // Not a JSON object: leave the line as it is.
            return writer.write_str(&line);
        };
        let mut object = String::new();
        scope.write_json(&mut object);
        let comma = if open.ends_with('{') { "" } else { "," };
        writeln!(
            writer,
            "{open}{comma}\"span\":{object},\"spans\":[{object}]}}"
        )
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::test_lines::Lines;

    /// A line logged in a call scope carries it as its span, escaped; a line outside
    /// has none; a real span, when one is current, wins; the scope before comes back.
    #[test]
    fn lines_in_a_call_scope_carry_it_as_their_span() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber =
            tracing_subscriber::registry().with(crate::json_log_layer(move || writer.clone()));
        let outer = CallScope::new(
            "grpc",
            Cow::Borrowed("/pkg.Service/Outer"),
            http::HeaderValue::from_static("id-1"),
        );
        let scope = CallScope::new(
            "grpc",
            Cow::Owned("/pkg.Service/\"Odd\"".to_owned()),
            http::HeaderValue::from_static("id-\"2\""),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("before");
            outer.in_scope(|| {
                scope.in_scope(|| tracing::warn!(n = 3, "inside"));
                tracing::info!("outer again");
                let span = tracing::info_span!("real", request_id = "id-3");
                span.in_scope(|| tracing::info!("in a real span"));
            });
            tracing::info!("after");
        });
        let text = lines.text();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].get("span").is_none(), "{}", lines[0]);
        let inside = &lines[1];
        assert_eq!(inside["message"], "inside");
        assert_eq!(inside["n"], 3);
        assert_eq!(inside["level"], "WARN");
        assert_eq!(inside["span"]["name"], "grpc");
        assert_eq!(inside["span"]["rpc.method"], "/pkg.Service/\"Odd\"");
        assert_eq!(inside["span"]["request_id"], "id-\"2\"");
        assert_eq!(inside["spans"][0], inside["span"]);
        assert_eq!(lines[2]["span"]["request_id"], "id-1");
        assert_eq!(lines[3]["span"]["name"], "real");
        assert_eq!(lines[3]["span"]["request_id"], "id-3");
        assert!(lines[4].get("span").is_none(), "{}", lines[4]);
    }
}
