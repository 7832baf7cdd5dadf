//! Revoked access tokens in Redis, written by identity (logout, refresh-token reuse,
//! revoke-all, password change) and read by every verifier.
//!
//! Keys: `<prefix>revoked:jti:<uuid>` for one token and `<prefix>revoked:sid:<uuid>`
//! for a whole session, each expiring when the last token it could refuse has expired
//! (so Redis holds only what still matters). A check is one `EXISTS` of both keys.

use std::time::Duration;

use anyhow::Context;
use ferrobank_config::{RedisUrl, RevocationFallback};
use ferrobank_proto::common::ErrorReason;
use ferrobank_proto::status;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tonic::{Code, Status};
use uuid::Uuid;

/// Redis could not be asked (down, timed out, not configured).
#[derive(Debug, thiserror::Error)]
#[error("revocation store unavailable: {0}")]
pub struct RevocationUnavailable(pub String);

/// A Redis connection that is made on first use (so a process starts while Redis is
/// down) and whose connects and commands give up after `timeout`, retrying once: every
/// Redis user on a request path (revocation, throttling, rate limits, idempotency)
/// needs a bound it can fall back from.
pub fn lazy_redis(url: &RedisUrl, timeout: Duration) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url.expose()).context("parsing the Redis URL")?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(timeout);
    ConnectionManager::new_lazy_with_config(client, config)
        .context("creating the Redis connection manager")
}

/// The revocation store. Cloned for every authenticated call's lookup, so its parts
/// are shared rather than copied.
#[derive(Clone)]
pub struct Revocations(std::sync::Arc<Store>);

struct Store {
    conn: ConnectionManager,
    /// Kept to recognise another user of the same Redis (see
    /// [`RevocationLookup::command_for`]); never logged.
    url: RedisUrl,
    prefix: String,
    timeout: Duration,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("prefix", &self.0.prefix)
            .field("timeout", &self.0.timeout)
            .finish_non_exhaustive()
    }
}

impl Revocations {
    /// Connects lazily, so a process starts while Redis is down.
    pub fn new(url: &RedisUrl, prefix: &str, timeout: Duration) -> anyhow::Result<Self> {
        let conn = lazy_redis(url, timeout)?;
        Ok(Self(std::sync::Arc::new(Store {
            conn,
            url: url.clone(),
            prefix: prefix.to_owned(),
            timeout,
        })))
    }

    fn jti_key(&self, jti: Uuid) -> String {
        format!("{}revoked:jti:{jti}", self.0.prefix)
    }

    fn sid_key(&self, sid: Uuid) -> String {
        format!("{}revoked:sid:{sid}", self.0.prefix)
    }

    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RevocationUnavailable> {
        match tokio::time::timeout(self.0.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(RevocationUnavailable(e.to_string())),
            Err(_) => Err(RevocationUnavailable("timed out".to_owned())),
        }
    }

    /// Revokes one token until `ttl` from now (its remaining lifetime).
    pub async fn revoke_token(
        &self,
        jti: Uuid,
        ttl: Duration,
    ) -> Result<(), RevocationUnavailable> {
        let ms = ttl.as_millis().max(1) as u64;
        let mut conn = self.0.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.jti_key(jti)).arg(1).arg("PX").arg(ms);
        self.bounded(cmd.query_async::<()>(&mut conn)).await
    }

    /// Revokes every token of `sessions` for `ttl` (the access-token lifetime plus
    /// leeway: no token issued before now outlives it, and no new one is issued).
    pub async fn revoke_sessions(
        &self,
        sessions: &[Uuid],
        ttl: Duration,
    ) -> Result<(), RevocationUnavailable> {
        if sessions.is_empty() {
            return Ok(());
        }
        let ms = ttl.as_millis().max(1) as u64;
        let mut pipe = redis::pipe();
        for sid in sessions {
            pipe.cmd("SET")
                .arg(self.sid_key(*sid))
                .arg(1)
                .arg("PX")
                .arg(ms)
                .ignore();
        }
        let mut conn = self.0.conn.clone();
        self.bounded(pipe.query_async::<()>(&mut conn)).await
    }

    /// `EXISTS` of the keys whose existence means the token `jti` or its session `sid`
    /// was revoked: more than 0 means revoked.
    fn exists(&self, jti: Uuid, sid: Option<Uuid>) -> redis::Cmd {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(self.jti_key(jti));
        if let Some(sid) = sid {
            cmd.arg(self.sid_key(sid));
        }
        cmd
    }

    /// Whether the token `jti` or its session `sid` was revoked.
    pub async fn is_revoked(
        &self,
        jti: Uuid,
        sid: Option<Uuid>,
    ) -> Result<bool, RevocationUnavailable> {
        let cmd = self.exists(jti, sid);
        let mut conn = self.0.conn.clone();
        let n: i64 = self.bounded(cmd.query_async(&mut conn)).await?;
        Ok(n > 0)
    }
}

/// One verified token's revocation lookup, not made yet: a gateway makes it together
/// with its rate-limit decision, a service when it authenticates.
pub struct RevocationLookup {
    store: Option<Revocations>,
    jti: Uuid,
    sid: Option<Uuid>,
    fallback: RevocationFallback,
}

impl RevocationLookup {
    /// The lookup of token `jti` of session `sid` in `store` (`None`: no store, so
    /// `fallback` decides).
    pub fn new(
        store: Option<Revocations>,
        jti: Uuid,
        sid: Option<Uuid>,
        fallback: RevocationFallback,
    ) -> Self {
        Self {
            store,
            jti,
            sid,
            fallback,
        }
    }

    /// The lookup as one Redis command, for a caller with its own connection to the
    /// same Redis (`url`, compared in memory only) that sends it in one pipeline with
    /// its own commands, saving a round trip; settle the answer with
    /// [`RevocationLookup::settle_reply`]. `None` when the lookup's store is another
    /// Redis, or there is none: then [`RevocationLookup::run`] it.
    pub fn command_for(&self, url: &RedisUrl) -> Option<redis::Cmd> {
        let store = self.store.as_ref()?;
        (store.0.url.expose() == url.expose()).then(|| store.exists(self.jti, self.sid))
    }

    /// Decides from the answer to the command of [`RevocationLookup::command_for`]:
    /// how many of its keys exist, or why Redis could not be asked (then the fallback
    /// decides, as when [`RevocationLookup::run`] cannot reach Redis).
    pub fn settle_reply(self, reply: Result<i64, String>) -> Result<(), Status> {
        self.settle(reply.map(|n| n > 0))
    }

    /// Makes the lookup.
    pub async fn run(self) -> Result<(), Status> {
        let revoked = match &self.store {
            Some(store) => store.is_revoked(self.jti, self.sid).await.map_err(|e| e.0),
            None => Err("no revocation store configured".to_owned()),
        };
        self.settle(revoked)
    }

    /// Decides from the lookup's answer: whether any key existed, or why Redis could
    /// not be asked (then the fallback decides).
    fn settle(self, revoked: Result<bool, String>) -> Result<(), Status> {
        let (jti, sid) = (self.jti, self.sid);
        match revoked {
            Ok(false) => Ok(()),
            Ok(true) => {
                tracing::info!(%jti, ?sid, "request refused: token revoked");
                Err(status::error(
                    Code::Unauthenticated,
                    ErrorReason::TokenRevoked,
                    crate::verifier::REFUSED,
                ))
            }
            Err(error) => match self.fallback {
                RevocationFallback::Closed => {
                    tracing::warn!(%error, "revocation check failed; refusing (fail closed)");
                    Err(status::error(
                        Code::Unavailable,
                        ErrorReason::Unavailable,
                        "cannot verify credentials right now; retry later",
                    ))
                }
                RevocationFallback::Open => {
                    tracing::warn!(%error, "revocation check failed; accepting (fail open)");
                    Ok(())
                }
            },
        }
    }
}
