//! Bad input at the door. [`RequireGrpcLayer`]: a request that is not gRPC or gRPC-Web
//! (not a POST with an `application/grpc*` content type, as a browser's or a probe's
//! plain HTTP request) gets a gRPC INVALID_ARGUMENT instead of an HTTP error or a
//! route. [`GrpcGuardLayer`]: a message larger than the configured maximum is refused
//! RESOURCE_EXHAUSTED. Messages are not decoded: the body is watched frame header by
//! frame header as it streams through, so the check costs a few bytes of state.
//!
//! When an oversized frame header passes, the body ends there (the upstream gets a
//! truncated message, never the oversized one) and the call's answer, whatever came
//! back, is replaced by RESOURCE_EXHAUSTED. A streaming call whose response headers
//! already left keeps them; its request stream just ends.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use ferrobank_proto::common::ErrorReason;
use ferrobank_proto::status;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::body::Body;
use tonic::{Code, Status};
use tower::{Layer, Service};

use super::{BoxError, GrpcRequest, GrpcResponse, ResponseFuture, refuse};

/// Adds [`GrpcGuard`].
#[derive(Clone, Copy, Debug)]
pub struct GrpcGuardLayer {
    max_message_bytes: usize,
}

impl GrpcGuardLayer {
    /// Refuses messages larger than `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> Self {
        Self { max_message_bytes }
    }
}

impl<S> Layer<S> for GrpcGuardLayer {
    type Service = GrpcGuard<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcGuard {
            inner,
            max: self.max_message_bytes,
        }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct GrpcGuard<S> {
    inner: S,
    max: usize,
}

fn too_large(max: usize) -> Status {
    status::error_with_metadata(
        Code::ResourceExhausted,
        ErrorReason::InvalidField,
        format!("message larger than the gateway's limit of {max} bytes"),
        [("limit_bytes".to_owned(), max.to_string())],
    )
}

fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.method() == http::Method::POST
        && req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

impl<S> Service<GrpcRequest> for GrpcGuard<S>
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
        let tripped = Arc::new(AtomicBool::new(false));
        let max = self.max;
        let req = req.map(|inner| {
            Body::new(FrameLimit {
                inner,
                max,
                header: [0; 5],
                header_len: 0,
                remaining: 0,
                tripped: tripped.clone(),
            })
        });
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await.map_err(Into::into);
            if tripped.load(Ordering::Acquire) {
                return Ok(refuse(too_large(max)));
            }
            result
        })
    }
}

/// Adds [`RequireGrpc`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RequireGrpcLayer;

impl<S> Layer<S> for RequireGrpcLayer {
    type Service = RequireGrpc<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequireGrpc { inner }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct RequireGrpc<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for RequireGrpc<S>
where
    S: Service<http::Request<B>, Response = GrpcResponse>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = GrpcResponse;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if !is_grpc(&req) {
            let status = status::invalid_field(
                "content-type",
                "not a gRPC request: expected POST with content-type application/grpc",
            );
            return Box::pin(std::future::ready(Ok(refuse(status))));
        }
        let fut = self.inner.call(req);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

/// Watches gRPC length-prefixed frames (1 flag byte, 4 length bytes, payload) go by.
struct FrameLimit {
    inner: Body,
    max: usize,
    /// The frame header being read, `header_len` bytes of it so far.
    header: [u8; 5],
    header_len: usize,
    /// Payload bytes of the current frame still to pass.
    remaining: usize,
    tripped: Arc<AtomicBool>,
}

impl FrameLimit {
    /// Advances over `chunk`; false when a frame announces more than `max` bytes.
    fn scan(&mut self, mut chunk: &[u8]) -> bool {
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(chunk.len());
                self.remaining -= skip;
                chunk.advance(skip);
                continue;
            }
            let take = (5 - self.header_len).min(chunk.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&chunk[..take]);
            self.header_len += take;
            chunk.advance(take);
            if self.header_len == 5 {
                self.header_len = 0;
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]) as usize;
                if len > self.max {
                    return false;
                }
                self.remaining = len;
            }
        }
        true
    }
}

impl HttpBody for FrameLimit {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        // A tripped body ends cleanly rather than with an error: an error would reset
        // the upstream stream, and tonic's channel fails the next call after a reset.
        // The upstream sees a truncated message; the guard replaces its answer.
        let this = &mut *self;
        if this.tripped.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
            && !this.scan(data)
        {
            this.tripped.store(true, Ordering::Release);
            return Poll::Ready(None);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(max: usize) -> FrameLimit {
        FrameLimit {
            inner: Body::empty(),
            max,
            header: [0; 5],
            header_len: 0,
            remaining: 0,
            tripped: Arc::default(),
        }
    }

    /// Frame headers split across chunks are still read, and only a frame announcing
    /// more than the limit trips the guard.
    #[test]
    fn scans_frames_across_chunks() {
        let mut ok = limit(10);
        let frame = [0u8, 0, 0, 0, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        for byte in frame.iter().chain(frame.iter()) {
            assert!(ok.scan(std::slice::from_ref(byte)));
        }
        let mut big = limit(10);
        assert!(big.scan(&[0, 0, 0]));
        assert!(!big.scan(&[0, 11]));
    }
}
