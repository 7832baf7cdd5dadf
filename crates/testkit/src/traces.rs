//! Spans and logs a test can look at: OpenTelemetry export into memory, and the JSON
//! log lines.

use std::sync::{Arc, Mutex};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;

/// Installs, for the whole test process, a global subscriber that exports every span
/// to the returned in-memory exporter as it ends, and the W3C trace-context
/// propagator. Once per process: a test that calls it runs in a process of its own
/// (as under nextest) or is the only one in its binary that does.
pub fn export_spans_in_memory() -> InMemorySpanExporter {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).expect("one subscriber per process");
    ferrobank_telemetry::set_exporting_spans();
    exporter
}

/// The JSON log lines a test process wrote, as `ferrobank_telemetry::json_log_layer`
/// writes them in production.
#[derive(Clone, Default)]
pub struct LogLines(Arc<Mutex<Vec<u8>>>);

impl LogLines {
    /// Every line so far, parsed.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().expect("log lines").clone();
        String::from_utf8(bytes)
            .expect("utf-8 log output")
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
            .collect()
    }
}

impl std::io::Write for LogLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lines").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs, for the whole test process, a global subscriber that logs every event
/// (all levels) as production's JSON output does, into the returned [`LogLines`];
/// with `call_scopes`, a call's log context may be a `CallScope` rather than a span,
/// as in production ([`ferrobank_telemetry::call_scopes`]). Once per process, like
/// [`export_spans_in_memory`].
pub fn capture_json_logs(call_scopes: bool) -> LogLines {
    let lines = LogLines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::registry()
        .with(ferrobank_telemetry::json_log_layer(move || writer.clone()));
    tracing::subscriber::set_global_default(subscriber).expect("one subscriber per process");
    if call_scopes {
        ferrobank_telemetry::set_call_scopes();
    }
    lines
}
