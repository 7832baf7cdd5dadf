//! The gateway's tower layers, one module each; `crate::stack` composes them. Every
//! layer speaks `http::Request<tonic::body::Body>` → `http::Response<tonic::body::Body>`
//! so they stack in any order; refusals are trailers-only gRPC responses carrying
//! `ErrorInfo`, and only the errors `rescue` knows travel as `Err`.

pub mod auth;
pub mod deadline;
pub mod fairness;
pub mod grpc_guard;
pub mod idempotency;
pub mod rate_limit;
pub mod request_id;
pub mod rescue;
pub mod shed;
pub mod trace;

use std::future::Future;
use std::pin::Pin;

use tonic::body::Body;

/// What every layer answers.
pub type GrpcResponse = http::Response<Body>;
/// What every layer takes.
pub type GrpcRequest = http::Request<Body>;
/// The error every fallible layer returns; `rescue` turns it into a status.
pub type BoxError = tower::BoxError;
/// A layer's response future.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<GrpcResponse, BoxError>> + Send>>;

/// A trailers-only response for a status the gateway produced itself.
pub fn refuse(status: tonic::Status) -> GrpcResponse {
    status.into_http()
}

/// `value` marked for HPACK as never indexed: a header whose value changes from call
/// to call (a request id, a remaining count) would otherwise be added to both ends'
/// header tables on every response, evicting the entries that do repeat, and make the
/// encoder compare it with every earlier value of that header still in its table.
pub fn per_call(mut value: http::HeaderValue) -> http::HeaderValue {
    value.set_sensitive(true);
    value
}

/// Takes the ready service out of `slot`, leaving a fresh clone behind (tower's rule:
/// the service polled ready is the one that must be called).
pub fn take_ready<S: Clone>(slot: &mut S) -> S {
    let clone = slot.clone();
    std::mem::replace(slot, clone)
}
