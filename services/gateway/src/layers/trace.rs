//! Tracing and request metrics: one span per call (method, request id, status,
//! latency), continuing the client's W3C `traceparent` and injecting the gateway's own
//! span context upstream, so one trace runs client → gateway → service → SQL. When
//! the process exports no spans ([`ferrobank_telemetry::exporting_spans`]) there is no
//! trace to continue: the headers pass as they came, a client's `traceparent` too.
//! The span ends when the response's trailers arrive, which is also when the call is
//! counted (`gateway_requests_total{method, code}`) and timed
//! (`gateway_request_duration_seconds{method}`).
//!
//! Lines logged during the call — by the layers below, by a service in this process,
//! and the call's own last line — are logged in its span, so they carry its method
//! and request id. With JSON logs and no span export, the span's only reader, that is
//! all a span would do, and a [`CallScope`] does it for less: the lines carry the same
//! `span` object, and no `tracing` span is made
//! ([`ferrobank_telemetry::call_scopes`]).
//!
//! Logging is tuned: a finished call is logged at DEBUG unless its code means the
//! platform failed (INTERNAL, UNKNOWN, DATA_LOSS, UNAVAILABLE, DEADLINE_EXCEEDED),
//! which is a WARN — client mistakes never reach ERROR. That event carries the code and
//! latency; the exported span gets the code as `rpc.grpc.status_code` (and an error
//! status for those codes) straight from OpenTelemetry. Neither is recorded as a
//! `tracing` field after the span is created: with JSON logs every such record
//! re-parses and re-writes the span's stored fields, which cost more per call than the
//! rest of this layer together.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use ferrobank_telemetry::CallScope;
use ferrobank_telemetry::HeaderExtractor;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use opentelemetry::propagation::Injector;
use tonic::Code;
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::request_id::X_REQUEST_ID;
use super::{BoxError, GrpcRequest, GrpcResponse};
use crate::methods::{self, MethodInfo, code_name};

/// Adds [`Trace`].
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceLayer;

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Trace { inner }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct Trace<S> {
    inner: S,
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// The grpc-status in a header or trailer map, if any.
pub fn grpc_status(map: &HeaderMap) -> Option<Code> {
    map.get(GRPC_STATUS).map(|v| Code::from_bytes(v.as_bytes()))
}

impl<S> Service<GrpcRequest> for Trace<S>
where
    S: Service<GrpcRequest, Response = GrpcResponse> + Clone + Send + 'static,
    S::Future: Unpin + Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = GrpcResponse;
    type Error = BoxError;
    type Future = TraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: GrpcRequest) -> Self::Future {
        let start = Instant::now();
        let method = methods::lookup(req.uri().path());
        let scope = if ferrobank_telemetry::call_scopes() {
            Scope::Call(call_scope(method, &req))
        } else {
            Scope::Span(span(method, &mut req))
        };
        TraceFuture {
            inner: Some(self.inner.call(req)),
            done: Some(Done {
                scope,
                method,
                start,
            }),
        }
    }
}

/// The call's context for the JSON log output, when that is all a span would serve
/// (see [`ferrobank_telemetry::CallScope`]).
fn call_scope(method: &'static MethodInfo, req: &GrpcRequest) -> CallScope {
    let path = req.uri().path();
    let path = if method.path == path {
        Cow::Borrowed(method.path)
    } else {
        Cow::Owned(path.to_owned())
    };
    let request_id = req
        .headers()
        .get(&X_REQUEST_ID)
        .cloned()
        .unwrap_or_else(|| http::HeaderValue::from_static(""));
    CallScope::new("grpc", path, request_id)
}

/// The call's span, continuing the client's trace and passed on upstream when spans
/// are exported.
fn span(method: &'static MethodInfo, req: &mut GrpcRequest) -> Span {
    let request_id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let span = tracing::info_span!(
        "grpc",
        otel.name = method.path,
        otel.kind = "server",
        rpc.method = req.uri().path(),
        request_id,
    );
    if ferrobank_telemetry::exporting_spans() {
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(req.headers()))
        });
        // Errors only if the OpenTelemetry layer went away: then the client's own
        // traceparent goes upstream unchanged, as when none is installed.
        let _ = span.set_parent(parent);
        let cx = span.context();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut HeaderInjector(req.headers_mut()))
        });
    }
    span
}

/// What lines logged during the call are logged in.
enum Scope {
    Span(Span),
    Call(CallScope),
}

impl Scope {
    fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        match self {
            Scope::Span(span) => span.in_scope(f),
            Scope::Call(scope) => scope.in_scope(f),
        }
    }
}

/// The call's future in its span (or call scope): entered while it is polled, so the
/// layers below and a service in this process log with the call's request id. Unlike
/// `tracing::Instrumented` it owns the span alone, and drops the finished call's
/// future during the last poll, while the span is entered anyway, rather than
/// entering it once more to drop it.
pub struct TraceFuture<F> {
    inner: Option<F>,
    done: Option<Done>,
}

impl<F, E> Future for TraceFuture<F>
where
    F: Future<Output = Result<GrpcResponse, E>> + Unpin,
    E: Into<BoxError>,
{
    type Output = Result<GrpcResponse, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let TraceFuture { inner, done } = &mut *self;
        let Some(scope) = done.as_ref().map(|done| &done.scope) else {
            panic!("TraceFuture polled after it finished");
        };
        let Poll::Ready(result) = scope.in_scope(|| {
            let polled = match inner.as_mut() {
                Some(fut) => Pin::new(fut).poll(cx),
                None => panic!("TraceFuture polled after it finished"),
            };
            if polled.is_ready() {
                *inner = None;
            }
            polled
        }) else {
            return Poll::Pending;
        };
        let response = result.map_err(Into::into)?;
        let done = self.done.take().expect("checked above");
        if let Some(code) = grpc_status(response.headers()) {
            // Trailers-only: the call is over.
            done.finish(code);
            return Poll::Ready(Ok(response));
        }
        Poll::Ready(Ok(response.map(|inner| {
            Body::new(TraceBody {
                inner,
                done: Some(done),
            })
        })))
    }
}

impl<F> Drop for TraceFuture<F> {
    fn drop(&mut self) {
        // A call given up before it finished (the client went away): its future is
        // dropped in the span, as it ran.
        if let (Some(inner), Some(done)) = (self.inner.take(), self.done.as_ref()) {
            done.scope.in_scope(|| drop(inner));
        }
    }
}

struct Done {
    scope: Scope,
    method: &'static MethodInfo,
    start: Instant,
}

impl Done {
    fn finish(self, code: Code) {
        let elapsed = self.start.elapsed();
        let name = code_name(code);
        self.method.count(code);
        self.method.observe(elapsed.as_secs_f64());
        let failed = matches!(
            code,
            Code::Internal
                | Code::Unknown
                | Code::DataLoss
                | Code::Unavailable
                | Code::DeadlineExceeded
        );
        if let Scope::Span(span) = &self.scope {
            // A no-op unless an OpenTelemetry layer is installed.
            span.set_attribute("rpc.grpc.status_code", code as i64);
            if failed {
                span.set_status(opentelemetry::trace::Status::error(name));
            }
        }
        let latency_ms = elapsed.as_millis() as u64;
        if failed {
            self.scope
                .in_scope(|| tracing::warn!(code = name, latency_ms, "call failed"));
        } else if tracing::enabled!(tracing::Level::DEBUG) {
            // Entering the span costs more than the rest of this; only for a line.
            self.scope
                .in_scope(|| tracing::debug!(code = name, latency_ms, "call finished"));
        }
    }
}

/// A response body that finishes the call's span when its trailers pass (or when the
/// client goes away first: CANCELLED).
struct TraceBody {
    inner: Body,
    done: Option<Done>,
}

impl HttpBody for TraceBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(done) = this.done.take()
                {
                    done.finish(grpc_status(trailers).unwrap_or(Code::Unknown));
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(done) = this.done.take() {
                    done.finish(Code::Unavailable);
                }
            }
            Poll::Ready(None) => {
                if let Some(done) = this.done.take() {
                    done.finish(Code::Unknown);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TraceBody {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done.finish(Code::Cancelled);
        }
    }
}
