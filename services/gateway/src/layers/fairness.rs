//! Per-principal fairness: a cap on each caller's calls in flight, on top of the
//! gateway-wide cap in `shed`. One principal flooding the gateway fills only its own
//! share; everyone else's calls keep their slots. Over the cap a call is refused at
//! once with RESOURCE_EXHAUSTED (reason RATE_LIMITED, `method_class` "concurrency") —
//! the caller's own doing, so retrying later helps, unlike a platform-wide overload.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use ferrobank_proto::common::ErrorReason;
use ferrobank_proto::status;
use tonic::Code;
use tower::{Layer, Service};

use super::auth::Caller;
use super::{BoxError, GrpcRequest, GrpcResponse, ResponseFuture, refuse};

/// Adds [`Fairness`]; every service it makes shares one table.
#[derive(Clone, Debug)]
pub struct FairnessLayer {
    table: Arc<Table>,
}

#[derive(Debug)]
struct Table {
    cap: u32,
    /// Callers with at least one call in flight; an entry is removed at zero, so the
    /// map's size is bounded by the gateway-wide in-flight cap.
    /// A fast hash, seeded per process: anonymous callers are keyed by address.
    in_flight: Mutex<HashMap<Caller, u32, foldhash::fast::RandomState>>,
}

impl FairnessLayer {
    /// At most `per_caller` calls in flight per caller.
    pub fn new(per_caller: u32) -> Self {
        Self {
            table: Arc::new(Table {
                cap: per_caller.max(1),
                in_flight: Mutex::default(),
            }),
        }
    }
}

impl<S> Layer<S> for FairnessLayer {
    type Service = Fairness<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Fairness {
            inner,
            table: self.table.clone(),
        }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct Fairness<S> {
    inner: S,
    table: Arc<Table>,
}

struct Slot {
    table: Arc<Table>,
    caller: Caller,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self
            .table
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.caller);
            }
        }
    }
}

impl Table {
    fn acquire(self: &Arc<Self>, caller: Caller) -> Option<Slot> {
        let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(caller).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(Slot {
            table: self.clone(),
            caller,
        })
    }
}

impl<S> Service<GrpcRequest> for Fairness<S>
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
        let Some(slot) = self.table.acquire(Caller::of(&req)) else {
            metrics::counter!("gateway_shed_total", "scope" => "caller").increment(1);
            let status = status::error_with_metadata(
                Code::ResourceExhausted,
                ErrorReason::RateLimited,
                "too many calls in flight for this caller",
                [
                    ("limit".to_owned(), self.table.cap.to_string()),
                    ("method_class".to_owned(), "concurrency".to_owned()),
                ],
            );
            return Box::pin(std::future::ready(Ok(refuse(status))));
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await.map_err(Into::into);
            drop(slot);
            result
        })
    }
}
