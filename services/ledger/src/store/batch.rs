//! Automatic micro-batching of single transfers. Concurrent `create_transfer` calls are
//! queued to one dispatcher task, which gathers them for at most a window after the
//! first of a batch arrived (or until the batch is full; at once under light load, so
//! an idle ledger adds no wait) and runs the batch as one
//! unlinked `ledger.create_transfers` call: one round trip, one commit, one hold of
//! each account's row lock for the whole batch. Each caller gets back exactly what
//! `ledger.create_transfer` would have returned for its member (the SQL keeps the
//! same checks, the same fingerprint and a per-member idempotency record), with the
//! batch's consistency token.
//!
//! Several batches run at once (bounded), so the dispatcher keeps gathering while
//! earlier batches wait for their commit. A batch that fails as a whole with anything
//! but an unreachable database is re-run member by member on the single path
//! (nothing of it committed), so one member can never fail its neighbours.

use std::sync::Arc;
use std::time::Duration;

use ferrobank_db::StoreError;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::{Committed, NewTransfer, Store, TransferOutcome};

/// The most members `ledger.create_transfers` takes in one call.
pub const MAX_MEMBERS: usize = 1000;

/// How the batcher gathers and runs batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSettings {
    /// How long a batch waits for more members after its first arrived.
    pub window: Duration,
    /// Most members per batch (1..=[`MAX_MEMBERS`]).
    pub max: usize,
    /// Most batches running at once (each holds a pool connection).
    pub in_flight: usize,
    /// Wait out the window even under light load.
    pub always_wait: bool,
}

/// What a caller gets back: the single path's result.
type Reply = Result<Committed<TransferOutcome>, StoreError>;

/// One queued transfer.
struct Job {
    transfer: NewTransfer,
    enqueued: Instant,
    reply: oneshot::Sender<Reply>,
}

/// The handle callers submit transfers through; the dispatcher ends when every
/// handle is dropped.
#[derive(Clone)]
pub struct Batcher {
    store: Store,
    tx: mpsc::Sender<Job>,
}

impl Batcher {
    /// Starts the dispatcher on the current tokio runtime.
    pub fn spawn(store: Store, settings: BatchSettings) -> Self {
        let settings = BatchSettings {
            window: settings.window,
            max: settings.max.clamp(1, MAX_MEMBERS),
            in_flight: settings.in_flight.max(1),
            always_wait: settings.always_wait,
        };
        let capacity = settings
            .max
            .saturating_mul(settings.in_flight)
            .saturating_mul(2);
        let (tx, rx) = mpsc::channel(capacity);
        tokio::spawn(dispatch(store.clone(), settings, rx));
        Self { store, tx }
    }

    /// `ledger.create_transfer`, batched with whatever else arrives in the window.
    pub async fn create_transfer(&self, transfer: NewTransfer) -> Reply {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            transfer,
            enqueued: Instant::now(),
            reply,
        };
        if let Err(mpsc::error::SendError(job)) = self.tx.send(job).await {
            // The dispatcher is gone (runtime shutting down): the single path.
            return self.store.create_transfer(&job.transfer).await;
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Internal(
                "the transfer batch ended without a result".into(),
            ))
        })
    }
}

/// Gathers batches and starts each on its own task, at most `in_flight` at once.
async fn dispatch(store: Store, settings: BatchSettings, mut rx: mpsc::Receiver<Job>) {
    let permits = Arc::new(Semaphore::new(settings.in_flight));
    let mut last_members = 0;
    loop {
        // Wait for a free slot first: meanwhile the queue fills, so a busy ledger
        // makes bigger batches.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        // Light load (no other batch running and the last batch had no company):
        // waiting would only add latency, so the batch takes what is already queued
        // and goes. Otherwise it waits up to the window for more members.
        let idle = !settings.always_wait
            && last_members <= 1
            && permits.available_permits() + 1 == settings.in_flight;
        let deadline = first.enqueued + settings.window;
        let mut jobs = Vec::with_capacity(settings.max);
        jobs.push(first);
        while jobs.len() < settings.max {
            match rx.try_recv() {
                Ok(job) => {
                    jobs.push(job);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) if idle => break,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(job)) => jobs.push(job),
                Ok(None) | Err(_) => break,
            }
        }
        last_members = jobs.len();
        let store = store.clone();
        let oldest = jobs[0].enqueued;
        metrics::histogram!("ledger_transfer_batch_members").record(jobs.len() as f64);
        metrics::histogram!("ledger_transfer_batch_wait_seconds")
            .record(oldest.elapsed().as_secs_f64());
        tokio::spawn(async move {
            let started = Instant::now();
            run(&store, jobs).await;
            metrics::histogram!("ledger_transfer_batch_seconds")
                .record(started.elapsed().as_secs_f64());
            drop(permit);
        });
    }
}

/// Runs one batch and answers every member.
async fn run(store: &Store, jobs: Vec<Job>) {
    if jobs.len() == 1 {
        // Nothing to share: the single path is the shorter transaction.
        for job in jobs {
            let result = store.create_transfer(&job.transfer).await;
            let _ = job.reply.send(result);
        }
        return;
    }
    let members: Vec<NewTransfer> = jobs.iter().map(|j| j.transfer.clone()).collect();
    tracing::trace!(members = members.len(), "transfer batch");
    match store.create_transfers(false, &members).await {
        Ok(out) => {
            let aligned = out.value.len() == jobs.len()
                && out
                    .value
                    .iter()
                    .zip(&members)
                    .all(|(o, m)| o.request_id == Some(m.request_id));
            if !aligned {
                // Committed, but which result is whose is unknown: each caller's
                // retry with its request id replays its own.
                tracing::error!(
                    members = jobs.len(),
                    results = out.value.len(),
                    "create_transfers results do not line up with the batch"
                );
                for job in jobs {
                    let _ = job.reply.send(Err(StoreError::Internal(
                        "create_transfers results do not line up with the batch".into(),
                    )));
                }
                return;
            }
            for (job, value) in jobs.into_iter().zip(out.value) {
                let _ = job.reply.send(Ok(Committed {
                    value,
                    lsn: out.lsn.clone(),
                }));
            }
        }
        Err(err @ (StoreError::Unavailable(_) | StoreError::ReplicaUnavailable(_))) => {
            let err = Arc::new(err);
            for job in jobs {
                let _ = job.reply.send(Err(share(&err)));
            }
        }
        Err(err) => {
            // Nothing committed; the single path gives each member its own outcome.
            tracing::warn!(error = %err, members = jobs.len(), "transfer batch failed; running its members one by one");
            futures::future::join_all(jobs.into_iter().map(|job| async move {
                let result = store.create_transfer(&job.transfer).await;
                let _ = job.reply.send(result);
            }))
            .await;
        }
    }
}

/// A copy of a batch's error for one member: the same classification, the original
/// as its source.
fn share(err: &Arc<StoreError>) -> StoreError {
    let source = || -> Box<dyn std::error::Error + Send + Sync> { Box::new(Shared(err.clone())) };
    match err.as_ref() {
        StoreError::Conflict(_) => StoreError::Conflict(source()),
        StoreError::UniqueViolation { constraint, .. } => StoreError::UniqueViolation {
            constraint: constraint.clone(),
            source: source(),
        },
        StoreError::NotFound => StoreError::NotFound,
        StoreError::Unavailable(_) => StoreError::Unavailable(source()),
        StoreError::ReplicaUnavailable(_) => StoreError::ReplicaUnavailable(source()),
        StoreError::Internal(_) => StoreError::Internal(source()),
    }
}

/// A batch's error shared by its members.
#[derive(Debug)]
struct Shared(Arc<StoreError>);

impl std::fmt::Display for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "transfer batch: {}", self.0)
    }
}

impl std::error::Error for Shared {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(self.0.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every member of a failed batch gets the batch's classification (so the same
    /// gRPC code the single path would give), with the original error as its source.
    #[test]
    fn shared_errors_keep_their_classification() {
        let unavailable = Arc::new(StoreError::Unavailable("connection refused".into()));
        let copy = share(&unavailable);
        assert!(matches!(copy, StoreError::Unavailable(_)));
        assert!(
            std::error::Error::source(&copy)
                .is_some_and(|s| s.to_string().contains("database unavailable"))
        );

        let conflict = Arc::new(StoreError::Conflict("40001".into()));
        assert!(share(&conflict).is_conflict());

        let unique = Arc::new(StoreError::UniqueViolation {
            constraint: "requests_pkey".to_owned(),
            source: "23505".into(),
        });
        assert!(matches!(
            share(&unique),
            StoreError::UniqueViolation { constraint, .. } if constraint == "requests_pkey"
        ));
        assert!(matches!(
            share(&Arc::new(StoreError::NotFound)),
            StoreError::NotFound
        ));
    }
}
