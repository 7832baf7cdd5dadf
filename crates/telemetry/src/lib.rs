//! Process-wide telemetry: `tracing` logs (pretty or JSON), OpenTelemetry OTLP export
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and a Prometheus recorder whose text is
//! served by the admin HTTP port together with `/healthz`.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use ferrobank_config::{LogFormat, TelemetryArgs};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

mod call_scope;
mod json_fields;
#[cfg(test)]
mod test_lines;

pub use call_scope::{CallScope, WithCallScope, call_scopes, set_call_scopes};
pub use json_fields::JsonSpanFields;

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether this process's subscriber exports spans (has an OpenTelemetry layer). Without
/// one there is no trace to continue or pass on, so a span's W3C context is neither
/// extracted from a caller's headers nor injected into a callee's: a `traceparent`
/// already in the headers goes on unchanged.
pub fn exporting_spans() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Records that the global subscriber has an OpenTelemetry layer: [`init`] does when an
/// exporter is configured, and so must anything else that installs one (a test's
/// in-memory exporter).
pub fn set_exporting_spans() {
    EXPORTING.store(true, Ordering::Relaxed);
}

/// Target of spans made for trace export only: a service's span per call
/// ([`rpc_span`]) and a SQL statement's ([`sql_span`]). They are made only while spans
/// are exported ([`exporting_spans`]), and the log output leaves them out, so a log
/// line inside one still carries the enclosing logged span (the gateway's call, with
/// its request id).
pub const EXPORT_TARGET: &str = "ferrobank::export";

/// W3C trace context read from HTTP headers.
pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The span of one call a service serves (`path` is `/package.Service/Method`): a
/// child of the trace context in `headers` — the gateway's span, whose context the
/// gateway sends on, or a direct client's `traceparent`.
pub fn rpc_span(path: &str, headers: &http::HeaderMap) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !exporting_spans() {
        // Nothing would read it: the log output leaves export spans out.
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: EXPORT_TARGET,
        "rpc",
        otel.name = path,
        otel.kind = "server",
        rpc.system = "grpc",
    );
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    // Errors only if the OpenTelemetry layer went away: then nothing is exported.
    let _ = span.set_parent(parent);
    span
}

/// The span of one SQL statement, for trace export (none when spans are not exported).
pub fn sql_span() -> tracing::Span {
    if !exporting_spans() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        target: EXPORT_TARGET,
        "sql",
        otel.kind = "client",
        db.system = "postgresql",
    )
}

/// Keeps exporters alive; flushes pending spans when dropped at shutdown.
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take()
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(error = %err, "opentelemetry shutdown failed");
        }
    }
}

/// `filter` as a static [`Targets`] filter when it holds only `target=level` and bare
/// level or target directives (`info`, `warn,ferrobank_ledger=debug`), else `None`
/// (span and field directives need an `EnvFilter`). An `EnvFilter` tracks every span
/// and takes shared locks on each span's creation, every enter and exit, and its close,
/// from every thread; without span or field directives that is only a cost, paid
/// several times per call.
fn static_targets(filter: &str) -> Option<Targets> {
    if filter.contains(['[', '{']) {
        return None;
    }
    let directives: Vec<&str> = filter
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return None;
    }
    directives.join(",").parse().ok()
}

/// The JSON log output: one object per line, the event's fields flattened into it,
/// the current span's fields under `span` ([`JsonSpanFields`]), or else the thread's
/// current [`CallScope`] ([`WithCallScope`]), written to `writer`.
pub fn json_log_layer<S, W>(
    writer: W,
) -> tracing_subscriber::fmt::Layer<
    S,
    JsonSpanFields,
    WithCallScope<tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json>>,
    W,
>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + 'static,
{
    let format = tracing_subscriber::fmt::format()
        .json()
        .flatten_event(true)
        .with_current_span(true);
    tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .fmt_fields(JsonSpanFields)
        .event_format(WithCallScope(format))
        .with_writer(writer)
}

/// Installs the global subscriber and metrics recorder. Call once, from `main`.
pub fn init(args: &TelemetryArgs) -> anyhow::Result<TelemetryGuard> {
    let (static_filter, env_filter) = match static_targets(&args.log_filter) {
        Some(targets) => (Some(targets), None),
        None => {
            let filter = EnvFilter::try_new(&args.log_filter)
                .with_context(|| format!("invalid log filter {:?} (RUST_LOG)", args.log_filter))?;
            (None, Some(filter))
        }
    };

    let fmt = match args.log_format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => {
            set_call_scopes();
            json_log_layer(std::io::stderr).boxed()
        }
    };
    // Export spans exist only while spans are exported (see `rpc_span`), and only then
    // does the log output need a filter to leave them out: a per-layer filter looks the
    // span up again on every enter, exit and close of every span.
    let fmt = if args.otlp_endpoint.is_some() {
        fmt.with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            !(meta.is_span() && meta.target() == EXPORT_TARGET)
        }))
        .boxed()
    } else {
        fmt
    };

    let tracer_provider = match &args.otlp_endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.as_str())
                .build()
                .context("building the OTLP span exporter (OTEL_EXPORTER_OTLP_ENDPOINT)")?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(args.service_name.clone())
                .build();
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        }
        None => None,
    };
    let otel = tracer_provider.as_ref().map(|provider| {
        set_exporting_spans();
        opentelemetry::global::set_tracer_provider(provider.clone());
        tracing_opentelemetry::layer().with_tracer(provider.tracer("ferrobank"))
    });
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );

    tracing_subscriber::registry()
        .with(static_filter)
        .with(env_filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .context("a tracing subscriber is already installed")?;

    install_metrics_recorder()?;
    Ok(TelemetryGuard { tracer_provider })
}

/// Installs the Prometheus recorder once per process (tests may call it repeatedly).
pub fn install_metrics_recorder() -> anyhow::Result<&'static PrometheusHandle> {
    if let Some(handle) = PROMETHEUS.get() {
        return Ok(handle);
    }
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .context("installing the Prometheus metrics recorder")?;
    Ok(PROMETHEUS.get_or_init(|| handle))
}

/// The admin HTTP router: `/metrics` (Prometheus text) and `/healthz`. Services add
/// their own routes (e.g. `/.well-known/jwks.json`) with `Router::merge`.
pub fn admin_router() -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/metrics",
            get(|| async {
                match PROMETHEUS.get() {
                    Some(handle) => handle.render(),
                    None => String::new(),
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
}

/// Binds the admin port and serves `router` until `shutdown` resolves. Returns the
/// bound address (useful with port 0) and the serving task.
pub async fn serve_admin(
    addr: SocketAddr,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the admin port {addr} (FERROBANK_ADMIN_ADDR)"))?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "admin http listening");
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    /// Plain target and level directives become a static filter with the same meaning
    /// (spaces around commas ignored); span and field directives, and an empty filter,
    /// are left to `EnvFilter`.
    #[test]
    fn static_filter_only_for_target_and_level_directives() {
        let targets = static_targets("warn, ferrobank_gateway=debug ,").expect("static");
        assert!(targets.would_enable("ferrobank_gateway::layers::auth", &Level::DEBUG));
        assert!(!targets.would_enable("ferrobank_gateway", &Level::TRACE));
        assert!(targets.would_enable("hyper::proto", &Level::WARN));
        assert!(!targets.would_enable("hyper::proto", &Level::INFO));
        let info = static_targets("info").expect("static");
        assert!(info.would_enable("anything", &Level::INFO));
        assert!(!info.would_enable("anything", &Level::DEBUG));
        for dynamic in ["[grpc]=debug", "ferrobank[{request_id}]=debug", "", " , "] {
            assert!(static_targets(dynamic).is_none(), "{dynamic:?}");
        }
    }
}
