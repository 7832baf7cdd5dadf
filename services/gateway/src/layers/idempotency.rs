//! Idempotency for mutations: a unary write carrying `idempotency-key` metadata is
//! executed at most once per (caller, method, key) within the TTL (24 h by default).
//! Only such calls are buffered — the request to hash it, the response to store it;
//! everything else streams through untouched.
//!
//! Redis holds one hash per scope key (`<prefix>idem:<caller>:<method>:<key>`) with
//! `state` (`pending` | `done`), `hash` (SHA-256 of the request body), `owner` (the
//! token of the call holding the lock) and `resp` (the stored response). One script
//! decides atomically:
//! - absent → take the in-flight lock (`pending`, expiring after the lock TTL) and call
//!   upstream;
//! - another body hash → INVALID_ARGUMENT (IDEMPOTENCY_KEY_REUSED);
//! - `pending` → ABORTED (IDEMPOTENCY_IN_PROGRESS): retry shortly;
//! - `done` → the stored response (headers, messages, trailers) is replayed, marked
//!   `x-idempotent-replay: true`.
//!
//! Outcomes that say nothing about the mutation (UNAVAILABLE, DEADLINE_EXCEEDED,
//! ABORTED, RESOURCE_EXHAUSTED, CANCELLED, UNKNOWN, INTERNAL, UNAUTHENTICATED,
//! UNIMPLEMENTED) are not stored: the lock is released so a retry runs again (the
//! ledger's `request_id` still deduplicates the effect). A call that is dropped
//! mid-flight (deadline, client gone) releases its lock too.
//!
//! Redis down: `closed` refuses UNAVAILABLE; otherwise the call goes through without
//! gateway idempotency.

use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ferrobank_config::RedisFallback;
use ferrobank_proto::common::ErrorReason;
use ferrobank_proto::status;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tonic::body::Body;
use tonic::{Code, Status};
use tower::{Layer, Service};

use super::auth::Caller;
use super::trace::grpc_status;
use super::{BoxError, GrpcRequest, GrpcResponse, ResponseFuture, refuse, take_ready};
use crate::methods;
use crate::redis_store::RedisStore;

/// The metadata key clients send.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on a replayed response.
pub const REPLAY_HEADER: &str = "x-idempotent-replay";

static ACQUIRE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local v = redis.call('HMGET', KEYS[1], 'state', 'hash', 'resp')
if not v[1] then
  redis.call('HSET', KEYS[1], 'state', 'pending', 'hash', ARGV[1], 'owner', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'acquired'}
end
if v[2] ~= ARGV[1] then return {'mismatch'} end
if v[1] == 'pending' then return {'pending'} end
return {'done', v[3]}
",
    )
});

static COMPLETE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'resp', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
",
    )
});

static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] and redis.call('HGET', KEYS[1], 'state') == 'pending' then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

#[derive(Debug)]
struct Shared {
    redis: Arc<RedisStore>,
    fallback: RedisFallback,
    ttl: Duration,
    lock_ttl: Duration,
}

/// Adds [`Idempotency`]; without Redis it passes every call through.
#[derive(Clone, Debug)]
pub struct IdempotencyLayer {
    shared: Option<Arc<Shared>>,
}

impl IdempotencyLayer {
    /// Stores responses for `ttl`; an in-flight lock lasts at most `lock_ttl` (a crashed
    /// gateway's lock frees itself).
    pub fn new(
        redis: Option<Arc<RedisStore>>,
        fallback: RedisFallback,
        ttl: Duration,
        lock_ttl: Duration,
    ) -> Self {
        Self {
            shared: redis.map(|redis| {
                Arc::new(Shared {
                    redis,
                    fallback,
                    ttl,
                    lock_ttl,
                })
            }),
        }
    }
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = Idempotency<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Idempotency {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct Idempotency<S> {
    inner: S,
    shared: Option<Arc<Shared>>,
}

enum Verdict {
    Acquired,
    Mismatch,
    Pending,
    Done(Vec<u8>),
}

fn parse_verdict(value: redis::Value) -> redis::RedisResult<Verdict> {
    let (tag, rest): (String, Vec<Vec<u8>>) = match value {
        redis::Value::Array(items) => {
            let mut items = items.into_iter();
            let tag = items
                .next()
                .map(redis::from_redis_value::<String>)
                .transpose()?
                .unwrap_or_default();
            let rest = items
                .map(redis::from_redis_value::<Vec<u8>>)
                .collect::<Result<_, _>>()?;
            (tag, rest)
        }
        other => {
            return Err(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "idempotency script returned",
                format!("{other:?}"),
            )));
        }
    };
    Ok(match tag.as_str() {
        "acquired" => Verdict::Acquired,
        "mismatch" => Verdict::Mismatch,
        "pending" => Verdict::Pending,
        _ => Verdict::Done(rest.into_iter().next().unwrap_or_default()),
    })
}

fn valid_key(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= 255 && bytes.iter().all(u8::is_ascii_graphic)
}

/// Codes whose response is a fact about the mutation, worth replaying.
fn storable(code: Code) -> bool {
    matches!(
        code,
        Code::Ok
            | Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::OutOfRange
    )
}

/// Releases an unfinished lock when the call is dropped or not stored.
struct LockGuard {
    shared: Arc<Shared>,
    key: String,
    owner: String,
    armed: bool,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let shared = self.shared.clone();
        let key = std::mem::take(&mut self.key);
        let owner = std::mem::take(&mut self.owner);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = shared
                    .redis
                    .run("idempotency_release", |mut conn| async move {
                        RELEASE
                            .key(key)
                            .arg(owner)
                            .invoke_async::<i64>(&mut conn)
                            .await
                    })
                    .await;
            });
        }
    }
}

impl<S> Service<GrpcRequest> for Idempotency<S>
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
        let method = methods::lookup(req.uri().path());
        let (key, shared) = match (req.headers().get(IDEMPOTENCY_KEY), &self.shared) {
            (Some(key), Some(shared)) if method.idempotent_mutation() => (key, shared.clone()),
            _ => {
                let fut = self.inner.call(req);
                return Box::pin(async move { fut.await.map_err(Into::into) });
            }
        };
        if !valid_key(key) {
            let status =
                status::invalid_field(IDEMPOTENCY_KEY, "must be 1 to 255 visible ASCII characters");
            return Box::pin(std::future::ready(Ok(refuse(status))));
        }
        let scope = format!(
            "{}idem:{}:{}:{}",
            shared.redis.prefix(),
            Caller::of(&req),
            method.path,
            String::from_utf8_lossy(key.as_bytes())
        );
        let mut inner = take_ready(&mut self.inner);
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                // The request failed to arrive (client reset, or oversized: the guard
                // above answers for that); nothing was executed.
                Err(status) => return Ok(refuse(status)),
            };
            let hash = Sha256::digest(&body)
                .iter()
                .fold(String::with_capacity(64), |mut s, b| {
                    use std::fmt::Write;
                    let _ = write!(s, "{b:02x}");
                    s
                });
            let owner = uuid::Uuid::new_v4().simple().to_string();
            let lock_ms = shared.lock_ttl.as_millis() as u64;
            let verdict = shared
                .redis
                .run("idempotency_acquire", |mut conn| {
                    let scope = scope.clone();
                    let hash = hash.clone();
                    let owner = owner.clone();
                    async move {
                        let value = ACQUIRE
                            .key(scope)
                            .arg(hash)
                            .arg(owner)
                            .arg(lock_ms)
                            .invoke_async::<redis::Value>(&mut conn)
                            .await?;
                        parse_verdict(value)
                    }
                })
                .await;
            let request =
                GrpcRequest::from_parts(parts, Body::new(http_body_util::Full::new(body)));
            match verdict {
                Err(_) if shared.fallback == RedisFallback::Closed => Ok(refuse(status::error(
                    Code::Unavailable,
                    ErrorReason::Unavailable,
                    "idempotency is unavailable; retry with backoff",
                ))),
                Err(_) => inner.call(request).await.map_err(Into::into),
                Ok(Verdict::Mismatch) => Ok(refuse(status::error_with_metadata(
                    Code::InvalidArgument,
                    ErrorReason::IdempotencyKeyReused,
                    "idempotency-key was used with a different request",
                    [("field".to_owned(), IDEMPOTENCY_KEY.to_owned())],
                ))),
                Ok(Verdict::Pending) => Ok(refuse(status::error(
                    Code::Aborted,
                    ErrorReason::IdempotencyInProgress,
                    "a request with this idempotency-key is in progress",
                ))),
                Ok(Verdict::Done(blob)) => match decode(&blob) {
                    Some(mut response) => {
                        metrics::counter!("gateway_idempotent_replays_total", "method" => method.path)
                            .increment(1);
                        response
                            .headers_mut()
                            .insert(REPLAY_HEADER, HeaderValue::from_static("true"));
                        Ok(response)
                    }
                    None => {
                        tracing::warn!(key = %scope, "stored idempotent response does not decode");
                        Ok(refuse(status::error(
                            Code::Internal,
                            ErrorReason::Internal,
                            "internal error",
                        )))
                    }
                },
                Ok(Verdict::Acquired) => {
                    let mut guard = LockGuard {
                        shared: shared.clone(),
                        key: scope.clone(),
                        owner: owner.clone(),
                        armed: true,
                    };
                    let response = inner.call(request).await.map_err(Into::into)?;
                    let (parts, body) = response.into_parts();
                    let collected = match body.collect().await {
                        Ok(collected) => collected,
                        Err(err) => {
                            tracing::warn!(error = %err, "upstream response broke off");
                            return Ok(refuse(status::error(
                                Code::Unavailable,
                                ErrorReason::Unavailable,
                                "upstream service unavailable",
                            )));
                        }
                    };
                    let trailers = collected.trailers().cloned();
                    let data = collected.to_bytes();
                    let code = trailers
                        .as_ref()
                        .and_then(grpc_status)
                        .or_else(|| grpc_status(&parts.headers))
                        .unwrap_or(Code::Unknown);
                    if storable(code) {
                        let blob = encode(parts.status, &parts.headers, &data, trailers.as_ref());
                        let ttl_ms = shared.ttl.as_millis() as u64;
                        let stored = shared
                            .redis
                            .run("idempotency_complete", |mut conn| async move {
                                COMPLETE
                                    .key(scope)
                                    .arg(owner)
                                    .arg(blob)
                                    .arg(ttl_ms)
                                    .invoke_async::<i64>(&mut conn)
                                    .await
                            })
                            .await;
                        guard.armed = stored.is_err();
                    }
                    drop(guard);
                    Ok(GrpcResponse::from_parts(
                        parts,
                        Body::new(Stored {
                            data: Some(data),
                            trailers,
                        }),
                    ))
                }
            }
        })
    }
}

/// A buffered response body: its messages, then its trailers.
struct Stored {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl HttpBody for Stored {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(data) = self.data.take().filter(|d| !d.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.as_ref().is_none_or(Bytes::is_empty) && self.trailers.is_none()
    }
}

const FORMAT_VERSION: u8 = 1;

fn put_map(buf: &mut BytesMut, map: Option<&HeaderMap>) {
    let Some(map) = map else {
        buf.put_u32(u32::MAX);
        return;
    };
    buf.put_u32(map.len() as u32);
    for (name, value) in map {
        buf.put_u16(name.as_str().len() as u16);
        buf.put_slice(name.as_str().as_bytes());
        buf.put_u32(value.len() as u32);
        buf.put_slice(value.as_bytes());
    }
}

/// `version, status, headers, data, trailers`, length-prefixed, big-endian.
fn encode(
    status: StatusCode,
    headers: &HeaderMap,
    data: &Bytes,
    trailers: Option<&HeaderMap>,
) -> Vec<u8> {
    let mut buf = BytesMut::with_capacity(data.len() + 256);
    buf.put_u8(FORMAT_VERSION);
    buf.put_u16(status.as_u16());
    put_map(&mut buf, Some(headers));
    buf.put_u32(data.len() as u32);
    buf.put_slice(data);
    put_map(&mut buf, trailers);
    buf.to_vec()
}

fn take(buf: &mut &[u8], n: usize) -> Option<Vec<u8>> {
    (buf.remaining() >= n).then(|| {
        let out = buf[..n].to_vec();
        buf.advance(n);
        out
    })
}

fn get_map(buf: &mut &[u8]) -> Option<Option<HeaderMap>> {
    let count = buf.try_get_u32().ok()?;
    if count == u32::MAX {
        return Some(None);
    }
    let mut map = HeaderMap::new();
    for _ in 0..count {
        let n = buf.try_get_u16().ok()? as usize;
        let name = HeaderName::from_bytes(&take(buf, n)?).ok()?;
        let n = buf.try_get_u32().ok()? as usize;
        let value = HeaderValue::from_bytes(&take(buf, n)?).ok()?;
        map.append(name, value);
    }
    Some(Some(map))
}

/// The response a blob holds; `None` if it is not one `encode` wrote.
fn decode(blob: &[u8]) -> Option<GrpcResponse> {
    let mut buf = blob;
    if buf.try_get_u8().ok()? != FORMAT_VERSION {
        return None;
    }
    let status = StatusCode::from_u16(buf.try_get_u16().ok()?).ok()?;
    let headers = get_map(&mut buf)??;
    let n = buf.try_get_u32().ok()? as usize;
    let data = Bytes::from(take(&mut buf, n)?);
    let trailers = get_map(&mut buf)?;
    let mut response = GrpcResponse::new(Body::new(Stored {
        data: Some(data),
        trailers,
    }));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored response decodes to the same status, headers, messages and trailers;
    /// truncated or foreign blobs decode to nothing rather than panicking.
    #[tokio::test]
    async fn stored_response_round_trips() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let data = Bytes::from_static(b"\0\0\0\0\x02hi");
        let blob = encode(StatusCode::OK, &headers, &data, Some(&trailers));

        let response = decode(&blob).expect("decodes");
        assert_eq!(response.headers(), &headers);
        let collected = response.into_body().collect().await.expect("body");
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(collected.to_bytes(), data);

        for cut in 0..blob.len() {
            assert!(decode(&blob[..cut]).is_none(), "prefix of {cut} bytes");
        }
        assert!(decode(b"\x07junk").is_none());
    }
}
