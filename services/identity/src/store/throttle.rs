//! Failed-login counters in Redis, per username and per client IP, in fixed windows
//! that start at the first failure. Each operation is one Lua script: one round trip,
//! atomic. Usernames are hashed into the key so arbitrary input never becomes a key.

use std::time::Duration;

use ferrobank_config::RedisUrl;
use redis::Script;
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};

/// Limits: failures allowed per username and per IP within `window`.
#[derive(Clone, Copy, Debug)]
pub struct ThrottleLimits {
    /// Failures per username.
    pub per_user: u32,
    /// Failures per client IP.
    pub per_ip: u32,
    /// The window.
    pub window: Duration,
}

/// Redis could not be asked.
#[derive(Debug, thiserror::Error)]
#[error("login throttle unavailable: {0}")]
pub struct ThrottleUnavailable(pub String);

/// Returns the milliseconds to wait (0: allowed). KEYS: user, ip; ARGV: limits.
const CHECK: &str = r"
local wait = 0
local u = tonumber(redis.call('GET', KEYS[1]) or '0')
if u >= tonumber(ARGV[1]) then wait = math.max(wait, redis.call('PTTL', KEYS[1])) end
local i = tonumber(redis.call('GET', KEYS[2]) or '0')
if i >= tonumber(ARGV[2]) then wait = math.max(wait, redis.call('PTTL', KEYS[2])) end
return wait
";

/// Counts one failure against both keys; the window starts at the first. ARGV: window ms.
const RECORD: &str = r"
for _, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 then redis.call('PEXPIRE', key, ARGV[1]) end
end
return 1
";

/// See the module docs.
#[derive(Clone)]
pub struct Throttle {
    conn: ConnectionManager,
    prefix: String,
    limits: ThrottleLimits,
    timeout: Duration,
}

impl Throttle {
    /// Connects lazily.
    pub fn new(
        url: &RedisUrl,
        prefix: &str,
        limits: ThrottleLimits,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let conn = ferrobank_auth::revocation::lazy_redis(url, timeout)?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
            limits,
            timeout,
        })
    }

    fn keys(&self, username: &str, ip: &str) -> (String, String) {
        let user = Sha256::digest(username.trim().to_lowercase().as_bytes());
        let user: String = user.iter().map(|b| format!("{b:02x}")).collect();
        (
            format!("{}login:fail:user:{user}", self.prefix),
            format!("{}login:fail:ip:{ip}", self.prefix),
        )
    }

    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, ThrottleUnavailable> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ThrottleUnavailable(e.to_string())),
            Err(_) => Err(ThrottleUnavailable("timed out".to_owned())),
        }
    }

    /// `Some(wait)` when either counter is at its limit.
    pub async fn check(
        &self,
        username: &str,
        ip: &str,
    ) -> Result<Option<Duration>, ThrottleUnavailable> {
        let (user, ip) = self.keys(username, ip);
        let mut conn = self.conn.clone();
        let script = Script::new(CHECK);
        let mut invocation = script.key(user);
        invocation
            .key(ip)
            .arg(self.limits.per_user)
            .arg(self.limits.per_ip);
        let wait: i64 = self.bounded(invocation.invoke_async(&mut conn)).await?;
        Ok(match wait {
            0 => None,
            // -1: no expiry (never set by us); count the whole window.
            w if w < 0 => Some(self.limits.window),
            w => Some(Duration::from_millis(w.unsigned_abs())),
        })
    }

    /// Counts a failed login.
    pub async fn record_failure(
        &self,
        username: &str,
        ip: &str,
    ) -> Result<(), ThrottleUnavailable> {
        let (user, ip) = self.keys(username, ip);
        let mut conn = self.conn.clone();
        let script = Script::new(RECORD);
        let mut invocation = script.key(user);
        invocation
            .key(ip)
            .arg(u64::try_from(self.limits.window.as_millis()).unwrap_or(u64::MAX));
        self.bounded(invocation.invoke_async::<i64>(&mut conn))
            .await?;
        Ok(())
    }

    /// Forgets a username's failures after a successful login (the IP's stay).
    pub async fn reset_user(&self, username: &str) -> Result<(), ThrottleUnavailable> {
        let (user, _) = self.keys(username, "");
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("DEL");
        cmd.arg(user);
        self.bounded(cmd.query_async::<i64>(&mut conn)).await?;
        Ok(())
    }
}
