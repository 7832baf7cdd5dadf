//! Deadlines for unary calls: the client's `grpc-timeout` is honoured up to a cap, a
//! call without one gets the default, and the effective deadline is what goes upstream
//! (rewritten in `grpc-timeout`) so the service gives up when the gateway does. An
//! elapsed deadline is `tower::timeout::error::Elapsed`, which `rescue` answers
//! DEADLINE_EXCEEDED.
//!
//! Streaming calls (WatchEvents, reflection) are long-lived by design: their
//! `grpc-timeout`, if any, passes upstream untouched and the service enforces it.

use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::HeaderValue;
use tonic::Code;
use tower::{Layer, Service};

use super::trace::grpc_status;
use super::{BoxError, GrpcRequest, GrpcResponse, ResponseFuture};
use crate::methods;

// A name built at compile time: a `&str` name is parsed and checked on every use.
const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// How close to the deadline an upstream failure counts as the deadline passing.
const DEADLINE_SLACK: Duration = Duration::from_millis(20);

/// Adds [`Deadline`].
#[derive(Clone, Debug)]
pub struct DeadlineLayer {
    default: Duration,
    max: Duration,
    default_header: HeaderValue,
    max_header: HeaderValue,
}

impl DeadlineLayer {
    /// `default` for calls without `grpc-timeout`; `max` caps the ones with it.
    pub fn new(default: Duration, max: Duration) -> Self {
        let default = default.min(max);
        Self {
            default,
            max,
            default_header: encode(default),
            max_header: encode(max),
        }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            layer: self.clone(),
        }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
    layer: DeadlineLayer,
}

/// `grpc-timeout` in milliseconds (8 digits at most, as the spec allows).
fn encode(d: Duration) -> HeaderValue {
    let ms = d.as_millis().clamp(1, 99_999_999);
    HeaderValue::from_str(&format!("{ms}m")).expect("digits and a unit are a valid header")
}

/// Parses `grpc-timeout` (`1-8 digits` + `H|M|S|m|u|n`); `None` when malformed.
pub fn parse(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

impl<S> Service<GrpcRequest> for Deadline<S>
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
        if !methods::lookup(req.uri().path()).unary {
            let fut = self.inner.call(req);
            return Box::pin(async move { fut.await.map_err(Into::into) });
        }
        let layer = &self.layer;
        let requested = req
            .headers()
            .get(GRPC_TIMEOUT)
            .and_then(|v| parse(v.as_bytes()));
        let timeout = match requested {
            Some(d) if d <= layer.max => d,
            Some(_) => {
                req.headers_mut()
                    .insert(GRPC_TIMEOUT, layer.max_header.clone());
                layer.max
            }
            None => {
                req.headers_mut()
                    .insert(GRPC_TIMEOUT, layer.default_header.clone());
                layer.default
            }
        };
        let started = Instant::now();
        let fut = tokio::time::timeout(timeout, self.inner.call(req));
        Box::pin(async move {
            match fut.await {
                // The upstream enforces the same deadline and may give up a moment
                // before the gateway does (its stream reset reads as UNAVAILABLE or
                // CANCELLED): at the deadline, that is the deadline.
                Ok(Ok(response))
                    if started.elapsed() + DEADLINE_SLACK >= timeout
                        && matches!(
                            grpc_status(response.headers()),
                            Some(Code::Unavailable | Code::Cancelled)
                        ) =>
                {
                    Err(tower::timeout::error::Elapsed::new().into())
                }
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(tower::timeout::error::Elapsed::new().into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every unit parses; malformed values (no unit, 9 digits, junk) do not.
    #[test]
    fn parses_grpc_timeout() {
        assert_eq!(parse(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse(b"7u"), Some(Duration::from_micros(7)));
        for bad in [&b""[..], b"S", b"123456789S", b"1x", b"-1S"] {
            assert_eq!(parse(bad), None);
        }
        assert_eq!(encode(Duration::from_secs(3)), "3000m");
    }
}
