//! Load shedding: a gateway-wide cap on calls in flight. Over it, a call is refused at
//! once (`Overloaded`, which `rescue` answers UNAVAILABLE with reason OVERLOADED) — never
//! queued, so an overload shows up as fast refusals clients can back off from, not as
//! growing latency for everyone. It sits before authentication so a flood is refused
//! before it costs a token check or a Redis round trip.
//!
//! The permit is held until the response headers come back (for unary calls, the
//! whole call); streaming responses release it when they start streaming.

use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;
use tower::{Layer, Service};

use super::{BoxError, GrpcRequest, GrpcResponse, ResponseFuture};

/// Adds [`Shed`]; every service it makes shares one budget.
#[derive(Clone, Debug)]
pub struct ShedLayer {
    permits: Arc<Semaphore>,
}

impl ShedLayer {
    /// At most `max_in_flight` calls at once.
    pub fn new(max_in_flight: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
        }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Shed {
            inner,
            permits: self.permits.clone(),
        }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct Shed<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S> Service<GrpcRequest> for Shed<S>
where
    S: Service<GrpcRequest, Response = GrpcResponse> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = GrpcResponse;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: GrpcRequest) -> Self::Future {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            metrics::counter!("gateway_shed_total", "scope" => "global").increment(1);
            return Box::pin(std::future::ready(Err(
                tower::load_shed::error::Overloaded::new().into(),
            )));
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await.map_err(Into::into);
            drop(permit);
            result
        })
    }
}
