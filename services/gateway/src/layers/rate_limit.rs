//! Rate limits shared by every gateway replica: GCRA per caller (principal, or client
//! IP when anonymous) and method class, decided atomically in Redis by one `EVALSHA`.
//! For an authenticated call the decision is taken ahead, by the auth layer together
//! with the token's revocation lookup, and applied here: when the lookup's store is
//! the gateway's own Redis the `EXISTS` and the `EVALSHA` go in one pipeline (one
//! write, one read, one wake-up), else the two round trips overlap. The script reads
//! Redis's own clock (`TIME`), so replicas with skewed clocks agree, and keeps one key
//! per caller and class holding the theoretical arrival time, expiring when the
//! bucket is full again.
//!
//! A caller whose calls keep coming is granted admissions in batches (up to
//! `FERROBANK_GATEWAY_RATE_BATCH_MAX`, at most an eighth of the burst), and the
//! replica hands them to the caller's next calls without running the script again;
//! `rate_limit/batch.rs` says what that trades.
//!
//! Every rate-limited response carries `x-ratelimit-limit` (burst),
//! `x-ratelimit-remaining` and `x-ratelimit-reset` (seconds until the bucket is full).
//! A refusal is RESOURCE_EXHAUSTED with `ErrorInfo` (reason RATE_LIMITED, metadata
//! `limit`, `method_class`) and `RetryInfo` saying when to retry.
//!
//! Redis down (see `RedisFallback`): `local` (the default) counts in process with the
//! same limits — per replica, so N replicas admit up to N times the limit while Redis
//! is out; `open` admits everything; `closed` refuses UNAVAILABLE.

mod batch;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ferrobank_auth::PendingCheck;
use ferrobank_auth::revocation::RevocationLookup;
use ferrobank_config::RedisFallback;
use ferrobank_proto::common::ErrorReason;
use ferrobank_proto::status::{self, ERROR_DOMAIN};
use http::{HeaderName, HeaderValue};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tower::{Layer, Service};

use self::batch::Batches;
pub use self::batch::Batching;
use super::auth::Caller;
use super::{BoxError, GrpcRequest, GrpcResponse, ResponseFuture, per_call, refuse, take_ready};
use crate::methods::{self, MethodClass};
use crate::redis_store::{RedisDown, RedisStore};
use redis::RedisResult;

/// One class's limit: a sustained rate and a burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Calls per minute, sustained.
    pub per_minute: u32,
    /// Calls admitted at once from a full bucket.
    pub burst: u32,
}

impl Rate {
    /// `None` (no limit) when `per_minute` is 0.
    pub fn new(per_minute: u32, burst: u32) -> Option<Self> {
        (per_minute > 0).then_some(Self {
            per_minute,
            burst: burst.max(1),
        })
    }

    /// Microseconds between two admitted calls at the sustained rate.
    fn interval_us(self) -> u64 {
        (60_000_000 / u64::from(self.per_minute)).max(1)
    }
}

/// Limits per class, indexed by [`MethodClass::index`]; `None` turns a class off.
pub type Rates = [Option<Rate>; 3];

/// GCRA in one round trip. `KEYS[1]`: the bucket; `ARGV`: interval (µs), burst, and
/// how many admissions are wanted (see `batch.rs`). Grants as many as the bucket holds,
/// up to that many, and answers `{granted, tat}`: `tat` is the bucket's theoretical
/// arrival time (TAT) less now, in µs — after the grant, or as it stands when nothing
/// was granted. [`Decision::from_grant`] reads it.
///
/// Redis runs this for nearly every rate-limited call, so it is kept lean: a two-number
/// reply, and the new TAT handed to `SET` as a number (Redis writes it with 17
/// significant digits, exact for µs since the epoch) rather than through
/// `string.format`.
static GCRA: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local fit = math.floor((now + interval * tonumber(ARGV[2]) - tat) / interval)
local n = math.min(tonumber(ARGV[3]), fit)
if n < 1 then
  return {0, tat - now}
end
local new_tat = tat + n * interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000))
return {n, new_tat - now}
",
    )
});

/// One decision. Public (hidden) only for `benches/rate_limit.rs`.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct Decision {
    /// Whether the call is admitted.
    pub allowed: bool,
    remaining: u64,
    retry_after_us: u64,
    reset_us: u64,
}

/// The same GCRA in process, for when Redis is down. Public (hidden) only for
/// `benches/rate_limit.rs`.
#[doc(hidden)]
#[derive(Debug)]
pub struct LocalLimiter {
    epoch: Instant,
    tats: Mutex<HashMap<(Caller, MethodClass), u64>>,
}

impl Default for LocalLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalLimiter {
    /// An empty limiter whose clock starts now.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            tats: Mutex::new(HashMap::new()),
        }
    }

    /// Decides one call of `caller` in `class` at `rate`, and records it if admitted.
    pub fn check(&self, caller: Caller, class: MethodClass, rate: Rate) -> Decision {
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let interval = rate.interval_us();
        let tau = interval * u64::from(rate.burst);
        let mut tats = self.tats.lock().unwrap_or_else(|e| e.into_inner());
        if tats.len() > 100_000 {
            tats.retain(|_, tat| *tat > now);
        }
        let tat = tats.get(&(caller, class)).copied().unwrap_or(now).max(now);
        let new_tat = tat + interval;
        if new_tat.saturating_sub(tau) > now {
            return Decision::from_grant(0, tat - now, rate);
        }
        tats.insert((caller, class), new_tat);
        Decision::from_grant(1, new_tat - now, rate)
    }
}

#[derive(Debug)]
struct Shared {
    redis: Option<Arc<RedisStore>>,
    fallback: RedisFallback,
    rates: Rates,
    local: LocalLimiter,
    batches: Batches,
    /// `x-ratelimit-limit` per class, built once.
    limit_headers: [HeaderValue; 3],
}

/// Adds [`RateLimit`].
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    shared: Arc<Shared>,
}

impl RateLimitLayer {
    /// Limits per class in `redis` (or in process, per `fallback`, without it), taking
    /// admissions from Redis in batches per `batching`.
    pub fn new(
        redis: Option<Arc<RedisStore>>,
        fallback: RedisFallback,
        rates: Rates,
        batching: Batching,
    ) -> Self {
        let limit_headers = MethodClass::ALL.map(|class| {
            let burst = rates[class.index()].map_or(0, |r| r.burst);
            HeaderValue::from(burst)
        });
        Self {
            shared: Arc::new(Shared {
                redis,
                fallback,
                rates,
                local: LocalLimiter::new(),
                batches: Batches::new(batching),
                limit_headers,
            }),
        }
    }
}

/// A decision taken ahead for `caller` (see [`RateLimitLayer::check_and_prefetch`]),
/// carried in the request's extensions to the rate-limit layer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Prefetched {
    caller: Caller,
    /// `None`: Redis is down and the fallback is `closed`.
    decision: Option<Decision>,
}

impl RateLimitLayer {
    /// For an authenticated call, before this layer runs: makes the token's `pending`
    /// check (the revocation lookup) and takes the caller's decision for `path` at the
    /// same time, so the call waits for one Redis round trip instead of two. Returns
    /// the check's outcome and the decision this layer will apply (none when the
    /// method is not limited).
    ///
    /// Folding the lookup into the rate-limit script (one command instead of two) was
    /// measured slower at 64 clients (3,787/s against 4,226/s over three alternating
    /// runs each): the lookup stays a native `EXISTS`, pipelined with the script when
    /// both go to the same Redis.
    pub(crate) async fn check_and_prefetch(
        &self,
        caller: Caller,
        path: &str,
        pending: PendingCheck,
    ) -> (Result<(), Status>, Option<Prefetched>) {
        let method = methods::lookup(path);
        let Some(rate) = self.shared.rates[method.class.index()].filter(|_| !method.exempt) else {
            return (pending.run().await, None);
        };
        let shared = &self.shared;
        let (checked, decision) = match (pending, shared.redis.as_deref()) {
            (PendingCheck::Revocation(lookup), Some(redis)) if !redis.skipping() => {
                shared
                    .decide_with_lookup(redis, lookup, caller, method.class, rate)
                    .await
            }
            (pending, _) => tokio::join!(pending.run(), shared.decide(caller, method.class, rate)),
        };
        (checked, Some(Prefetched { caller, decision }))
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl Shared {
    /// The Redis key of `caller`'s bucket for `class`.
    fn key(redis: &RedisStore, caller: Caller, class: MethodClass) -> String {
        format!("{}rl:{}:{caller}", redis.prefix(), class.as_str())
    }

    /// The script on `caller`'s bucket for `class`, asking for `wanted` admissions.
    fn gcra(
        redis: &RedisStore,
        caller: Caller,
        class: MethodClass,
        rate: Rate,
        wanted: u32,
    ) -> redis::ScriptInvocation<'static> {
        let mut gcra = GCRA.key(Self::key(redis, caller, class));
        gcra.arg(rate.interval_us()).arg(rate.burst).arg(wanted);
        gcra
    }

    /// The decision in the script's `reply`; admissions granted beyond this call's are
    /// held for the caller's next calls.
    fn settle(&self, caller: Caller, class: MethodClass, rate: Rate, reply: Reply) -> Decision {
        let (granted, tat_us) = reply;
        let decision = Decision::from_grant(granted, tat_us, rate);
        self.batches.granted(caller, class, rate, granted, decision)
    }

    /// `None`: Redis is down and the fallback is `closed`.
    async fn decide(&self, caller: Caller, class: MethodClass, rate: Rate) -> Option<Decision> {
        let Some(redis) = &self.redis else {
            return self.without_redis(caller, class, rate);
        };
        match self.batches.take(caller, class, rate) {
            Ok(held) => Some(held),
            Err(wanted) => self.ask(redis, caller, class, rate, wanted).await,
        }
    }

    /// Runs the script for `wanted` admissions; `None`: Redis is down and the fallback
    /// is `closed`.
    async fn ask(
        &self,
        redis: &RedisStore,
        caller: Caller,
        class: MethodClass,
        rate: Rate,
        wanted: u32,
    ) -> Option<Decision> {
        let gcra = Self::gcra(redis, caller, class, rate, wanted);
        let result = redis
            .run("rate_limit", |mut conn| async move {
                gcra.invoke_async::<Reply>(&mut conn).await
            })
            .await;
        match result {
            Ok(reply) => Some(self.settle(caller, class, rate, reply)),
            Err(RedisDown) => self.without_redis(caller, class, rate),
        }
    }

    /// The decision and a token's revocation lookup. With an admission held for the
    /// caller, the lookup alone; else, when the lookup's store is `redis` itself, its
    /// `EXISTS` (see [`ferrobank_auth::revocation::RevocationLookup::command_for`]) and
    /// the script in one pipeline; else the two round trips side by side. Each answer
    /// is taken on its own: a lookup that cannot be made is settled by its fallback, a
    /// decision that cannot be taken by this layer's.
    async fn decide_with_lookup(
        &self,
        redis: &RedisStore,
        lookup: RevocationLookup,
        caller: Caller,
        class: MethodClass,
        rate: Rate,
    ) -> (Result<(), Status>, Option<Decision>) {
        let wanted = match self.batches.take(caller, class, rate) {
            Ok(held) => return (Self::lookup_alone(redis, lookup).await, Some(held)),
            Err(wanted) => wanted,
        };
        let Some(exists) = lookup.command_for(redis.url()) else {
            return tokio::join!(lookup.run(), self.ask(redis, caller, class, rate, wanted));
        };
        let gcra = Self::gcra(redis, caller, class, rate, wanted);
        let result = redis
            .run("rate_limit", |mut conn| async move {
                let (found, decided): (RedisResult<i64>, RedisResult<Reply>) = redis::pipe()
                    .ignore_errors()
                    .add_command(exists)
                    .invoke_script(&gcra)
                    .query_async(&mut conn)
                    .await?;
                // A pipeline does not load a script Redis lacks (after a restart or
                // SCRIPT FLUSH); invoking it alone does, once.
                let decided = match decided {
                    Err(err)
                        if err.kind()
                            == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                    {
                        gcra.invoke_async(&mut conn).await
                    }
                    other => other,
                };
                Ok((found, decided))
            })
            .await;
        match result {
            Ok((found, decided)) => (
                lookup.settle_reply(found.map_err(|e| e.to_string())),
                match decided {
                    Ok(reply) => Some(self.settle(caller, class, rate, reply)),
                    Err(err) => {
                        // As when the script fails alone (see `ask`): the fallback decides.
                        redis.trip("rate_limit", &err.to_string());
                        self.without_redis(caller, class, rate)
                    }
                },
            ),
            Err(RedisDown) => (
                lookup.settle_reply(Err("redis unavailable".to_owned())),
                self.without_redis(caller, class, rate),
            ),
        }
    }

    /// The revocation lookup without a script to send along, on the gateway's own
    /// connection when that reaches the same Redis: all of the auth layer's commands
    /// then share one connection, and concurrent calls' commands share its writes.
    async fn lookup_alone(redis: &RedisStore, lookup: RevocationLookup) -> Result<(), Status> {
        let Some(exists) = lookup.command_for(redis.url()) else {
            return lookup.run().await;
        };
        let found = redis
            .run("revocation", |mut conn| async move {
                exists.query_async::<i64>(&mut conn).await
            })
            .await;
        lookup.settle_reply(found.map_err(|RedisDown| "redis unavailable".to_owned()))
    }

    /// The decision while Redis cannot be asked, per the fallback.
    fn without_redis(&self, caller: Caller, class: MethodClass, rate: Rate) -> Option<Decision> {
        match (&self.redis, self.fallback) {
            (Some(_), RedisFallback::Open) => Some(Decision {
                allowed: true,
                remaining: u64::from(rate.burst),
                retry_after_us: 0,
                reset_us: 0,
            }),
            (Some(_), RedisFallback::Closed) => None,
            _ => Some(self.local.check(caller, class, rate)),
        }
    }
}

/// The script's answer: admissions granted (0: refused) and the bucket's TAT less now.
type Reply = (u32, u64);

impl Decision {
    /// The decision for a call at `rate` when `granted` admissions were granted (0:
    /// refused), the first of them this call's, and the bucket's TAT is then `tat_us`
    /// ahead of now.
    fn from_grant(granted: u32, tat_us: u64, rate: Rate) -> Self {
        let interval = rate.interval_us();
        let tau = interval * u64::from(rate.burst);
        if granted == 0 {
            // Refused while TAT + interval − tau is still ahead: that is when to retry.
            Decision {
                allowed: false,
                remaining: 0,
                retry_after_us: (tat_us + interval).saturating_sub(tau),
                reset_us: tat_us,
            }
        } else {
            // What the bucket still holds, and the admissions held for the next calls.
            Decision {
                allowed: true,
                remaining: tau.saturating_sub(tat_us) / interval + u64::from(granted - 1),
                retry_after_us: 0,
                reset_us: tat_us,
            }
        }
    }
}

fn refusal(class: MethodClass, rate: Rate, retry_after: Duration) -> Status {
    let mut details = ErrorDetails::with_error_info(
        ErrorReason::RateLimited.as_str_name(),
        ERROR_DOMAIN,
        [
            ("limit".to_owned(), rate.burst.to_string()),
            ("method_class".to_owned(), class.as_str().to_owned()),
        ],
    );
    details.set_retry_info(Some(retry_after));
    Status::with_error_details(
        Code::ResourceExhausted,
        format!(
            "rate limit for {} calls exceeded; retry in {} ms",
            class.as_str(),
            retry_after.as_millis()
        ),
        details,
    )
}

// Names built at compile time: a `&str` name is parsed and checked on every insert.
const RETRY_AFTER: HeaderName = http::header::RETRY_AFTER;
const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

fn ceil_secs(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

impl<S> Service<GrpcRequest> for RateLimit<S>
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
        let prefetched = req.extensions_mut().remove::<Prefetched>();
        let method = methods::lookup(req.uri().path());
        let rate = match self.shared.rates[method.class.index()] {
            Some(rate) if !method.exempt => rate,
            _ => {
                let fut = self.inner.call(req);
                return Box::pin(async move { fut.await.map_err(Into::into) });
            }
        };
        let shared = self.shared.clone();
        let class = method.class;
        let caller = Caller::of(&req);
        match prefetched {
            // Decided ahead (by the auth layer): an admitted call goes on at once.
            Some(p) if p.caller == caller => {
                let call = admitted(p.decision).then(|| self.inner.call(req));
                Box::pin(async move { shared.answer(class, rate, p.decision, call).await })
            }
            _ => {
                let mut inner = take_ready(&mut self.inner);
                Box::pin(async move {
                    let decision = shared.decide(caller, class, rate).await;
                    let call = admitted(decision).then(|| inner.call(req));
                    shared.answer(class, rate, decision, call).await
                })
            }
        }
    }
}

fn admitted(decision: Option<Decision>) -> bool {
    decision.is_some_and(|d| d.allowed)
}

impl Shared {
    /// The response to a call given its `decision`: the upstream's (`call`, made when
    /// admitted) or a refusal, with the `x-ratelimit-*` headers either way.
    async fn answer<E: Into<BoxError>>(
        &self,
        class: MethodClass,
        rate: Rate,
        decision: Option<Decision>,
        call: Option<impl Future<Output = Result<GrpcResponse, E>>>,
    ) -> Result<GrpcResponse, BoxError> {
        let Some(decision) = decision else {
            return Ok(refuse(status::error(
                Code::Unavailable,
                ErrorReason::Unavailable,
                "rate limiting is unavailable; retry with backoff",
            )));
        };
        let mut response = match call {
            Some(call) => call.await.map_err(Into::into)?,
            None => {
                metrics::counter!("gateway_rate_limited_total", "class" => class.as_str())
                    .increment(1);
                let retry_after = Duration::from_micros(decision.retry_after_us);
                let mut response = refuse(refusal(class, rate, retry_after));
                response.headers_mut().insert(
                    RETRY_AFTER,
                    HeaderValue::from(ceil_secs(decision.retry_after_us)),
                );
                response
            }
        };
        let headers = response.headers_mut();
        headers.insert(X_RATELIMIT_LIMIT, self.limit_headers[class.index()].clone());
        // The remaining count changes from call to call; the reset (whole seconds) and
        // the limit repeat, so HPACK may index them.
        headers.insert(
            X_RATELIMIT_REMAINING,
            per_call(HeaderValue::from(decision.remaining)),
        );
        headers.insert(
            X_RATELIMIT_RESET,
            HeaderValue::from(ceil_secs(decision.reset_us)),
        );
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-process limiter admits a full burst, then refuses with a retry delay of
    /// about one interval, and keeps callers and classes apart.
    #[test]
    fn local_gcra_admits_burst_then_refuses() {
        let limiter = LocalLimiter {
            epoch: Instant::now(),
            tats: Mutex::default(),
        };
        let rate = Rate::new(60, 3).expect("a rate");
        let a = Caller::Unknown;
        let remaining: Vec<_> = (0..3)
            .map(|_| limiter.check(a, MethodClass::Read, rate))
            .inspect(|d| assert!(d.allowed))
            .map(|d| d.remaining)
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = limiter.check(a, MethodClass::Read, rate);
        assert!(!refused.allowed);
        assert!(refused.retry_after_us > 900_000 && refused.retry_after_us <= 1_000_000);
        assert!(limiter.check(a, MethodClass::Write, rate).allowed);
        let b = Caller::Ip(std::net::Ipv4Addr::LOCALHOST.into());
        assert!(limiter.check(b, MethodClass::Read, rate).allowed);
    }
}
