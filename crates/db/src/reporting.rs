//! The reporting pool: reads go to the streaming replica; when it cannot be reached
//! they fall back to the primary or answer UNAVAILABLE, as configured. The process never
//! fails to start or crash-loops because the replica is down.

use deadpool_postgres::{Object, Pool};
use ferrobank_config::{DatabaseSettings, ReportingFallback};

use crate::{StoreError, build_pool};

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
}

impl ReportingPool {
    /// Builds the replica pool (if configured) beside the given primary pool.
    pub fn new(settings: &DatabaseSettings, primary: Pool) -> Result<Self, StoreError> {
        let replica = settings.reporting.as_ref().map(build_pool).transpose()?;
        Ok(Self {
            replica,
            primary,
            fallback: settings.reporting_fallback,
        })
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
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let (conn, source) = self.get().await?;
        match op(conn, source).await {
            Err(StoreError::Unavailable(source_err)) if source == DataSource::Replica => {
                metrics::counter!("ferrobank_reporting_replica_unavailable_total").increment(1);
                match self.fallback {
                    ReportingFallback::Primary => {
                        tracing::warn!(error = %source_err, "reporting replica failed mid-read, reading from primary");
                        let conn = self.primary.get().await?;
                        Ok((op(conn, DataSource::Primary).await?, DataSource::Primary))
                    }
                    ReportingFallback::Unavailable => {
                        Err(StoreError::ReplicaUnavailable(source_err))
                    }
                }
            }
            other => other.map(|value| (value, source)),
        }
    }

    /// A connection for a reporting read and where it comes from.
    pub async fn get(&self) -> Result<(Object, DataSource), StoreError> {
        let Some(replica) = &self.replica else {
            return Ok((self.primary.get().await?, DataSource::Primary));
        };
        match replica.get().await.map_err(StoreError::from) {
            Ok(conn) => Ok((conn, DataSource::Replica)),
            Err(StoreError::Unavailable(source)) => {
                metrics::counter!("ferrobank_reporting_replica_unavailable_total").increment(1);
                match self.fallback {
                    ReportingFallback::Primary => {
                        tracing::warn!(error = %source, "reporting replica unavailable, reading from primary");
                        Ok((self.primary.get().await?, DataSource::Primary))
                    }
                    ReportingFallback::Unavailable => Err(StoreError::ReplicaUnavailable(source)),
                }
            }
            Err(other) => Err(other),
        }
    }
}
