//! The reporting pool: reads go to the streaming replica; when it cannot be reached
//! they fall back to the primary or answer UNAVAILABLE, as configured. The process never
//! fails to start or crash-loops because the replica is down.
//!
//! Read-your-writes: [`ReportingPool::read_after`] takes a consistency token (the WAL
//! position a ledger mutation returned) and waits, bounded by [`REPLAY_WAIT`], until the
//! replica has replayed that far before reading; a replica still behind by then is
//! treated like one that is down (primary, or the caller's "lagging" error).

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use ferrobank_config::{DatabaseSettings, ReportingFallback};
use tokio_postgres::types::Type;

use crate::client::query;
use crate::{StoreError, build_pool};

/// How long a read carrying a consistency token waits for the replica to replay it
/// before it gives up on the replica. Short, because the caller is waiting; long enough
/// for a healthy replica: WAL reaches it once flushed, at the commit or, with
/// `synchronous_commit = off`, within one WAL writer cycle (`wal_writer_delay`, 200 ms
/// by default; the throwaway test stacks use 10 ms).
pub const REPLAY_WAIT: Duration = Duration::from_secs(1);

/// How often the replay position is polled while waiting (one cheap query each).
const REPLAY_POLL: Duration = Duration::from_millis(5);

/// Whether the server has everything up to the LSN `$1` (text, `X/Y`): replayed, on a
/// standby; written, on a primary (a promoted replica, or the pool pointed at one).
const REPLAYED: &str = "
select coalesce(case when pg_is_in_recovery() then pg_last_wal_replay_lsn() >= $1::text::pg_lsn
                     else pg_current_wal_lsn() >= $1::text::pg_lsn end, false)";

/// Where a reporting read was served from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataSource {
    /// The streaming replica.
    Replica,
    /// The primary, because no replica is configured or it is down.
    Primary,
}

/// Connections for reporting reads.
#[derive(Clone)]
pub struct ReportingPool {
    replica: Option<Pool>,
    primary: Pool,
    fallback: ReportingFallback,
    /// Each pool's statement-cache setting (off behind a transaction-mode pooler).
    replica_statement_cache: bool,
    primary_statement_cache: bool,
}

impl ReportingPool {
    /// Builds the replica pool (if configured) beside the given primary pool.
    pub fn new(settings: &DatabaseSettings, primary: Pool) -> Result<Self, StoreError> {
        let replica = settings.reporting.as_ref().map(build_pool).transpose()?;
        Ok(Self {
            replica,
            primary,
            fallback: settings.reporting_fallback,
            replica_statement_cache: settings
                .reporting
                .as_ref()
                .is_some_and(|r| r.statement_cache),
            primary_statement_cache: settings.primary.statement_cache,
        })
    }

    /// Whether named statements may be cached on a connection from `source` (see
    /// `Db`): false when that pool goes through a transaction-mode pooler.
    pub fn statement_cache(&self, source: DataSource) -> bool {
        match source {
            DataSource::Replica => self.replica_statement_cache,
            DataSource::Primary => self.primary_statement_cache,
        }
    }

    /// What reads do when the replica is down.
    pub fn fallback(&self) -> ReportingFallback {
        self.fallback
    }

    /// The replica pool, if one is configured.
    pub fn replica(&self) -> Option<&Pool> {
        self.replica.as_ref()
    }

    /// Runs the read `op` on a reporting connection and says where it ran. A replica
    /// that fails mid-read (its connection cut) is treated like one that refused the
    /// connection: the read is repeated on the primary or answers UNAVAILABLE, per the
    /// configured fallback.
    pub async fn read<T, F, Fut>(&self, op: F) -> Result<(T, DataSource), StoreError>
    where
        F: Fn(Object, DataSource) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let (conn, source) = self.get().await?;
        self.run(conn, source, op).await
    }

    /// [`ReportingPool::read`] for a caller that must see its own write: with a
    /// consistency token `lsn` (`X/Y`, already checked for shape), a replica connection
    /// is used only once the replica has replayed that far, waiting at most
    /// [`REPLAY_WAIT`]. Still behind by then: the read goes to the primary when the
    /// fallback is Primary, else it fails with `lagging(lsn)` (the caller's error for
    /// ERROR_REASON_REPLICA_LAGGING). A read from the primary never waits: it has
    /// every committed write.
    pub async fn read_after<T, E, F, Fut>(
        &self,
        lsn: Option<&str>,
        lagging: impl FnOnce(&str) -> E,
        op: F,
    ) -> Result<(T, DataSource), E>
    where
        E: From<StoreError>,
        F: Fn(Object, DataSource) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let (conn, source) = self.get().await?;
        let Some(lsn) = lsn.filter(|_| source == DataSource::Replica) else {
            return Ok(self.run(conn, source, op).await?);
        };
        let caught_up = match self.wait_for_replay(&conn, lsn).await {
            Ok(caught_up) => caught_up,
            // The replica went away while we waited: as if it failed mid-read.
            Err(StoreError::Unavailable(err)) => return Ok(self.replica_failed(err, op).await?),
            Err(other) => return Err(other.into()),
        };
        if caught_up {
            return Ok(self.run(conn, source, op).await?);
        }
        drop(conn);
        metrics::counter!("ferrobank_reporting_replica_lagging_total").increment(1);
        match self.fallback {
            ReportingFallback::Primary => {
                tracing::warn!(%lsn, "reporting replica behind the consistency token, reading from primary");
                let conn = self.primary.get().await.map_err(StoreError::from)?;
                Ok((op(conn, DataSource::Primary).await?, DataSource::Primary))
            }
            ReportingFallback::Unavailable => Err(lagging(lsn)),
        }
    }

    /// Polls `conn`'s server until it has `lsn` or [`REPLAY_WAIT`] has passed; says
    /// which.
    async fn wait_for_replay(&self, conn: &Object, lsn: &str) -> Result<bool, StoreError> {
        let cache = self.statement_cache(DataSource::Replica);
        let deadline = tokio::time::Instant::now() + REPLAY_WAIT;
        loop {
            let rows = query(conn, cache, REPLAYED, &[(&lsn, Type::TEXT)]).await?;
            let replayed = match rows.first() {
                Some(row) => row.try_get::<_, bool>(0)?,
                None => false,
            };
            if replayed {
                return Ok(true);
            }
            if tokio::time::Instant::now() + REPLAY_POLL > deadline {
                return Ok(false);
            }
            tokio::time::sleep(REPLAY_POLL).await;
        }
    }

    /// Runs `op` on `conn`; a replica failing mid-read is handled per the fallback.
    async fn run<T, F, Fut>(
        &self,
        conn: Object,
        source: DataSource,
        op: F,
    ) -> Result<(T, DataSource), StoreError>
    where
        F: Fn(Object, DataSource) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        match op(conn, source).await {
            Err(StoreError::Unavailable(err)) if source == DataSource::Replica => {
                self.replica_failed(err, op).await
            }
            other => other.map(|value| (value, source)),
        }
    }

    /// The replica failed during a read: repeat `op` on the primary, or answer
    /// REPLICA_UNAVAILABLE, per the configured fallback.
    async fn replica_failed<T, F, Fut>(
        &self,
        err: Box<dyn std::error::Error + Send + Sync>,
        op: F,
    ) -> Result<(T, DataSource), StoreError>
    where
        F: Fn(Object, DataSource) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        metrics::counter!("ferrobank_reporting_replica_unavailable_total").increment(1);
        match self.fallback {
            ReportingFallback::Primary => {
                tracing::warn!(error = %err, "reporting replica failed mid-read, reading from primary");
                let conn = self.primary.get().await?;
                Ok((op(conn, DataSource::Primary).await?, DataSource::Primary))
            }
            ReportingFallback::Unavailable => Err(StoreError::ReplicaUnavailable(err)),
        }
    }

    /// A connection for a reporting read and where it comes from.
    pub async fn get(&self) -> Result<(Object, DataSource), StoreError> {
        let Some(replica) = &self.replica else {
            return Ok((self.primary.get().await?, DataSource::Primary));
        };
        match replica.get().await {
            Ok(conn) => Ok((conn, DataSource::Replica)),
            // Whatever kept the pool from a connection — the replica down, refusing
            // connections, or without this database (created on the primary a moment
            // ago and not replayed yet, or a replica set up wrong) — this read cannot
            // use the replica: the fallback decides, never an internal error.
            Err(err) => {
                metrics::counter!("ferrobank_reporting_replica_unavailable_total").increment(1);
                match self.fallback {
                    ReportingFallback::Primary => {
                        tracing::warn!(error = %err, "reporting replica unavailable, reading from primary");
                        Ok((self.primary.get().await?, DataSource::Primary))
                    }
                    ReportingFallback::Unavailable => {
                        Err(StoreError::ReplicaUnavailable(Box::new(err)))
                    }
                }
            }
        }
    }
}
