//! Rescue: turns the errors middleware returns into precise gRPC statuses with
//! `ErrorInfo` — tonic alone would say UNKNOWN. An elapsed deadline is
//! DEADLINE_EXCEEDED, a shed call UNAVAILABLE (OVERLOADED), anything else INTERNAL with
//! an opaque message and the cause in a `warn!`.

use std::convert::Infallible;
use std::task::{Context, Poll};

use ferrobank_proto::common::ErrorReason;
use ferrobank_proto::status;
use tonic::Code;
use tower::{Layer, Service};

use super::{BoxError, GrpcRequest, GrpcResponse, refuse};

/// Adds [`Rescue`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RescueLayer;

impl<S> Layer<S> for RescueLayer {
    type Service = Rescue<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Rescue { inner }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct Rescue<S> {
    inner: S,
}

/// The status for a middleware error.
pub fn status_for(err: &BoxError) -> tonic::Status {
    if err.is::<tower::timeout::error::Elapsed>() {
        status::error(
            Code::DeadlineExceeded,
            ErrorReason::DeadlineExceeded,
            "deadline exceeded at the gateway",
        )
    } else if err.is::<tower::load_shed::error::Overloaded>() {
        status::error(
            Code::Unavailable,
            ErrorReason::Overloaded,
            "the gateway is at capacity; retry with backoff",
        )
    } else if let Some(status) = err.downcast_ref::<tonic::Status>() {
        status.clone()
    } else {
        tracing::warn!(error = %err, source = ?err.source(), "gateway middleware failed");
        status::error(Code::Internal, ErrorReason::Internal, "internal error")
    }
}

impl<S> Service<GrpcRequest> for Rescue<S>
where
    S: Service<GrpcRequest, Response = GrpcResponse> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = GrpcResponse;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<GrpcResponse, Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The layers below are always ready (they refuse inside `call`), so an error
        // here would be a bug; surface it on the next call instead of failing the
        // connection.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: GrpcRequest) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move {
            match fut.await {
                Ok(response) => Ok(response),
                Err(err) => Ok(refuse(status_for(&err.into()))),
            }
        })
    }
}
