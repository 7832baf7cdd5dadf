//! `StoreError`: SQLSTATEs and pool failures classified once, and the one mapping from
//! that classification to gRPC statuses. No SQL message ever reaches a client.

use std::future::Future;
use std::time::Duration;

use ferrobank_proto::common::ErrorReason;
use ferrobank_proto::status;
use tokio_postgres::error::SqlState;
use tonic::{Code, Status};

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A database failure, classified by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Serialization failure or deadlock (40001, 40P01): safe to retry the transaction.
    #[error("transaction conflict")]
    Conflict(#[source] Source),
    /// A unique constraint refused the row (23505).
    #[error("unique violation on {constraint}")]
    UniqueViolation {
        /// The constraint's name.
        constraint: String,
        /// The driver error.
        #[source]
        source: Source,
    },
    /// The query returned no row where one was required.
    #[error("no rows")]
    NotFound,
    /// The database cannot be reached, refused the connection or is shutting down.
    #[error("database unavailable")]
    Unavailable(#[source] Source),
    /// The reporting replica cannot be reached and the fallback is UNAVAILABLE.
    #[error("reporting replica unavailable")]
    ReplicaUnavailable(#[source] Source),
    /// Anything else: a bug or a broken invariant.
    #[error("database error")]
    Internal(#[source] Source),
}

impl StoreError {
    /// Whether retrying the same transaction may succeed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict(_))
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        let Some(db) = err.as_db_error() else {
            // No SQLSTATE: the connection broke, timed out or could not be made.
            if err.is_closed() || is_io(&err) {
                return Self::Unavailable(Box::new(err));
            }
            return Self::Internal(Box::new(err));
        };
        let code = db.code().clone();
        if code == SqlState::T_R_SERIALIZATION_FAILURE || code == SqlState::T_R_DEADLOCK_DETECTED {
            Self::Conflict(Box::new(err))
        } else if code == SqlState::UNIQUE_VIOLATION {
            Self::UniqueViolation {
                constraint: db.constraint().unwrap_or("unknown").to_owned(),
                source: Box::new(err),
            }
        } else if code.code().starts_with("08")
            || code == SqlState::ADMIN_SHUTDOWN
            || code == SqlState::CRASH_SHUTDOWN
            || code == SqlState::CANNOT_CONNECT_NOW
            || code == SqlState::TOO_MANY_CONNECTIONS
            || code == SqlState::READ_ONLY_SQL_TRANSACTION
        {
            Self::Unavailable(Box::new(err))
        } else {
            Self::Internal(Box::new(err))
        }
    }
}

fn is_io(err: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        match err {
            PoolError::Backend(e) => e.into(),
            PoolError::Timeout(_) | PoolError::Closed | PoolError::NoRuntimeSpecified => {
                Self::Unavailable(Box::new(err))
            }
            PoolError::PostCreateHook(_) => Self::Unavailable(Box::new(err)),
        }
    }
}

/// Writes the whole cause chain of `err` to the log (never to the client).
pub(crate) fn log_chain(err: &(dyn std::error::Error + 'static), what: &str) {
    let mut chain = String::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if !chain.is_empty() {
            chain.push_str(": ");
        }
        chain.push_str(&e.to_string());
        current = e.source();
    }
    tracing::error!(error = %chain, "{what}");
}

impl From<StoreError> for Status {
    fn from(err: StoreError) -> Self {
        match &err {
            StoreError::Conflict(_) => {
                log_chain(&err, "transaction conflict after retries");
                status::error(
                    Code::Aborted,
                    ErrorReason::Conflict,
                    "the operation conflicted with a concurrent one; retry it",
                )
            }
            StoreError::UniqueViolation { .. } => status::error(
                Code::AlreadyExists,
                ErrorReason::AlreadyExists,
                "the resource already exists",
            ),
            StoreError::NotFound => {
                status::error(Code::NotFound, ErrorReason::NotFound, "not found")
            }
            StoreError::Unavailable(_) => {
                log_chain(&err, "database unavailable");
                status::error(
                    Code::Unavailable,
                    ErrorReason::Unavailable,
                    "the database is unavailable; retry later",
                )
            }
            StoreError::ReplicaUnavailable(_) => {
                log_chain(&err, "reporting replica unavailable");
                status::error(
                    Code::Unavailable,
                    ErrorReason::ReplicaUnavailable,
                    "the reporting replica is unavailable; retry later",
                )
            }
            StoreError::Internal(_) => {
                log_chain(&err, "internal database error");
                status::error(Code::Internal, ErrorReason::Internal, "internal error")
            }
        }
    }
}

/// Runs `op` and retries it on a serialization failure or deadlock, up to `attempts`
/// times with a short growing pause; the last conflict is returned (→ ABORTED).
pub async fn retry_conflicts<T, F, Fut>(attempts: u32, mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(err) if err.is_conflict() && attempt < attempts => {
                metrics::counter!("ferrobank_db_conflict_retries_total").increment(1);
                tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 2)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}
