//! Request ids: accepts a client's `x-request-id` (visible ASCII, at most 128 bytes) or
//! mints a UUID, passes it upstream and echoes it on the response — outermost, so every
//! answer, even a shed or refused one, carries the id the logs are searchable by.

use std::task::{Context, Poll};

use http::HeaderValue;
use http::header::HeaderName;
use tower::{Layer, Service};

use super::{BoxError, GrpcRequest, GrpcResponse, ResponseFuture, per_call};

/// The request-id header.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Adds [`RequestId`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestId { inner }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct RequestId<S> {
    inner: S,
}

fn acceptable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| b.is_ascii_graphic())
}

fn mint() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(text).expect("a UUID is a valid header value")
}

impl<S> Service<GrpcRequest> for RequestId<S>
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

    fn call(&mut self, mut req: GrpcRequest) -> Self::Future {
        let id = match req.headers().get(&X_REQUEST_ID) {
            Some(value) if acceptable(value) => per_call(value.clone()),
            _ => {
                let id = per_call(mint());
                req.headers_mut().insert(X_REQUEST_ID.clone(), id.clone());
                id
            }
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut response = fut.await.map_err(Into::into)?;
            response.headers_mut().insert(X_REQUEST_ID.clone(), id);
            Ok(response)
        })
    }
}
