//! Spans a test can look at: OpenTelemetry export into memory.

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
