//! The gateway's Redis: one multiplexed `ConnectionManager` shared by every call, a
//! key prefix, a per-command time bound, and a breaker. After a failure Redis is
//! skipped for [`BREAKER_OPEN_FOR`], so while it is down calls take the documented
//! fallback at once instead of each paying the timeout; then the next call tries again.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferrobank_config::RedisUrl;
use redis::aio::ConnectionManager;

/// How long Redis is skipped after a failed command.
pub const BREAKER_OPEN_FOR: Duration = Duration::from_millis(500);

/// Redis could not be used for this call.
#[derive(Debug)]
pub struct RedisDown;

/// See the module docs.
pub struct RedisStore {
    conn: ConnectionManager,
    /// To recognise another user of the same Redis; never logged.
    url: RedisUrl,
    prefix: String,
    timeout: Duration,
    epoch: Instant,
    /// Milliseconds since `epoch` until which Redis is skipped; 0 when closed.
    open_until_ms: AtomicU64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects lazily: the gateway starts while Redis is down.
    pub fn new(url: &RedisUrl, prefix: &str, timeout: Duration) -> anyhow::Result<Self> {
        let conn = ferrobank_auth::revocation::lazy_redis(url, timeout)?;
        Ok(Self {
            conn,
            url: url.clone(),
            prefix: prefix.to_owned(),
            timeout,
            epoch: Instant::now(),
            open_until_ms: AtomicU64::new(0),
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis this store talks to.
    pub fn url(&self) -> &RedisUrl {
        &self.url
    }

    /// Whether Redis is being skipped after a failure (the breaker is open).
    pub fn skipping(&self) -> bool {
        self.now_ms() < self.open_until_ms.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs one command (or script) within the time bound, unless the breaker is open.
    pub async fn run<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, RedisDown>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self.skipping() {
            return Err(RedisDown);
        }
        match tokio::time::timeout(self.timeout, f(self.conn.clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                self.trip(op, &err.to_string());
                Err(RedisDown)
            }
            Err(_) => {
                self.trip(op, "timed out");
                Err(RedisDown)
            }
        }
    }

    /// Counts a failed command and skips Redis for [`BREAKER_OPEN_FOR`].
    pub fn trip(&self, op: &'static str, error: &str) {
        metrics::counter!("gateway_redis_errors_total", "op" => op).increment(1);
        let until = self.now_ms() + BREAKER_OPEN_FOR.as_millis() as u64;
        let previous = self.open_until_ms.swap(until, Ordering::Relaxed);
        if previous == 0 || previous < self.now_ms() {
            tracing::warn!(op, error, "redis unavailable; using the fallback");
        }
    }
}
