//! Background upkeep of the ledger database, one task each:
//!
//! - **expiry sweep**, every [`SWEEP_INTERVAL`]: `ledger.expire_pending` in batches of
//!   [`SWEEP_BATCH`] until a batch comes back short, releasing holds whose timeout has
//!   passed. Any number of replicas may sweep at once (the SQL claims rows with `FOR
//!   UPDATE SKIP LOCKED`), and each hold is released exactly once.
//! - **partitions**, at start and every [`PARTITION_INTERVAL`]:
//!   `ledger.ensure_partitions(MONTHS_AHEAD)`, so a month's partitions exist long before
//!   rows for it arrive (Postgres cannot create a partition once rows for its range sit in
//!   the default partition). A no-op catalog read when nothing is missing; concurrent
//!   callers serialise on the function's own advisory lock.
//! - **event retention**, at start and every [`PRUNE_INTERVAL`]: `ledger.prune_events`
//!   deletes outbox events older than [`EVENT_RETENTION_DAYS`], in batches. A WatchEvents client
//!   must resume within that window; an older cursor gets CURSOR_EXPIRED.
//!
//! Each is a single function call, so they run on the primary pool (safe behind a
//! transaction-mode pooler). A failure is logged at warn and the task carries on at its
//! next tick; the helpers are public so tests run one round without waiting.

use std::time::Duration;

use chrono::NaiveDate;
use ferrobank_db::{Db, StoreError, Type};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::Ledger;

/// How often the expiry sweep runs: the longest a hold outlives its timeout, plus the
/// sweep itself. (Posting or voiding an overdue hold is refused meanwhile.)
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Holds expired per `expire_pending` call (one transaction).
pub const SWEEP_BATCH: i32 = 1000;
/// How often partitions are checked.
pub const PARTITION_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// Months of partitions kept ready beyond the current one.
pub const MONTHS_AHEAD: i32 = 18;
/// How often old events are pruned.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);
/// How long outbox events are kept: consumers (payments, notifications) must resume
/// their streams within this window.
pub const EVENT_RETENTION_DAYS: i32 = 30;
/// Events deleted per `prune_events` call (one transaction).
pub const PRUNE_BATCH: i32 = 10_000;

/// Starts the ledger's background tasks; the caller aborts them at shutdown.
pub fn spawn(ledger: Ledger) -> Vec<JoinHandle<()>> {
    let db = ledger.db;
    vec![
        tokio::spawn(every(SWEEP_INTERVAL, db.clone(), |db| async move {
            match sweep_expired_once(&db).await {
                Ok(0) => {}
                Ok(expired) => tracing::info!(expired, "expired pending transfers"),
                Err(err) => warn("expiry sweep failed", &err),
            }
        })),
        tokio::spawn(every(PARTITION_INTERVAL, db.clone(), |db| async move {
            match ensure_partitions(&db, MONTHS_AHEAD).await {
                Ok(created) => {
                    for (parent, month) in created {
                        tracing::info!(%parent, %month, "partition created");
                    }
                }
                Err(err) => warn("partition maintenance failed", &err),
            }
        })),
        tokio::spawn(every(PRUNE_INTERVAL, db, |db| async move {
            match prune_events_once(&db, EVENT_RETENTION_DAYS).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "pruned old events"),
                Err(err) => warn("event pruning failed", &err),
            }
        })),
    ]
}

/// Runs `round` now and then every `period` (a slow round delays the next one instead
/// of queueing more).
async fn every<F, Fut>(period: Duration, db: Db, round: F)
where
    F: Fn(Db) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        round(db.clone()).await;
    }
}

fn warn(what: &str, err: &StoreError) {
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    tracing::warn!(error = %chain, "{what}");
}

/// One `ledger.expire_pending(limit)` call: expires up to `limit` overdue holds in one
/// transaction and returns how many.
pub async fn expire_batch(db: &Db, limit: i32) -> Result<u64, StoreError> {
    let row = db
        .query_one("select ledger.expire_pending($1)", &[(&limit, Type::INT4)])
        .await?;
    let expired: i32 = row.try_get(0)?;
    Ok(u64::try_from(expired).unwrap_or(0))
}

/// One sweep: expires overdue holds in batches of [`SWEEP_BATCH`] until a batch comes
/// back short; returns how many this call expired (a sweeper running at the same time
/// expires the rest).
pub async fn sweep_expired_once(db: &Db) -> Result<u64, StoreError> {
    sweep_expired(db, SWEEP_BATCH).await
}

/// [`sweep_expired_once`] with another batch size.
pub async fn sweep_expired(db: &Db, batch: i32) -> Result<u64, StoreError> {
    let mut total = 0u64;
    loop {
        let expired = expire_batch(db, batch).await?;
        total = total.saturating_add(expired);
        if expired < u64::try_from(batch).unwrap_or(u64::MAX) {
            return Ok(total);
        }
    }
}

/// Creates the missing partitions from the current month to `months_ahead` ahead;
/// returns the ones it created as (parent table, month).
pub async fn ensure_partitions(
    db: &Db,
    months_ahead: i32,
) -> Result<Vec<(String, NaiveDate)>, StoreError> {
    let rows = db
        .query(
            "select parent, partition_month from ledger.ensure_partitions($1)",
            &[(&months_ahead, Type::INT4)],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Deletes outbox events older than `retention_days`, in batches until one comes back
/// short; returns how many.
pub async fn prune_events_once(db: &Db, retention_days: i32) -> Result<u64, StoreError> {
    let mut total = 0u64;
    loop {
        let row = db
            .query_one(
                "select ledger.prune_events(now() - make_interval(days => $1), $2)",
                &[(&retention_days, Type::INT4), (&PRUNE_BATCH, Type::INT4)],
            )
            .await?;
        let pruned: i32 = row.try_get(0)?;
        total = total.saturating_add(u64::try_from(pruned).unwrap_or(0));
        if pruned < PRUNE_BATCH {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The helpers against a real database, called directly (no waiting for a tick).

    use std::sync::Arc;

    use ferrobank_testkit::TestDb;
    use uuid::Uuid;

    use super::*;

    async fn database() -> (TestDb, Db, tokio_postgres::Client) {
        let test = TestDb::new("ledger", crate::migrations)
            .await
            .expect("test database");
        let pool = ferrobank_db::build_pool(&test.settings.primary).expect("pool");
        let sql = test.admin().await.expect("admin connection");
        (test, Db::new(pool, true), sql)
    }

    /// Opens a USD customer account and funds it from the cash vault.
    async fn funded_account(sql: &tokio_postgres::Client, amount: i64) -> Uuid {
        let id: Uuid = sql
            .query_one(
                "select account_id from ledger.open_account($1, null, $2, 'USD', 0, null)",
                &[&Uuid::new_v4(), &Uuid::now_v7()],
            )
            .await
            .unwrap()
            .get(0);
        let row = sql
            .query_one(
                "select status from ledger.create_transfer($1, null, \
                   (select id from ledger.accounts where currency = 'USD' and system_role = 'cash_vault'), \
                   $2, $3, 'USD', false, null, null, null, null)",
                &[&Uuid::new_v4(), &id, &amount],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "ok");
        id
    }

    /// Two sweepers racing over the same overdue holds release each exactly once: their
    /// counts add up, every hold is expired with one `transfer.expired` event, the
    /// pending columns return to zero and no balance moves.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_sweeps_release_each_hold_once() {
        const HOLDS: i64 = 60;
        let (_test, db, sql) = database().await;
        let a = funded_account(&sql, 10_000).await;
        let b = funded_account(&sql, 10_000).await;
        for i in 0..HOLDS {
            let (from, to) = if i % 2 == 0 { (a, b) } else { (b, a) };
            let row = sql
                .query_one(
                    "select status from ledger.create_transfer($1, null, $2, $3, 7, 'USD', \
                     true, 1, null, null, null)",
                    &[&Uuid::new_v4(), &from, &to],
                )
                .await
                .unwrap();
            assert_eq!(row.get::<_, String>(0), "ok");
        }
        // A bounded wait on the condition itself: every hold's 1 ms timeout has passed.
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let due: bool = sql
                    .query_one(
                        "select clock_timestamp() > max(expires_at) from ledger.transfers \
                         where status = 'pending'",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                if due {
                    break;
                }
            }
        })
        .await
        .expect("holds never became due");

        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let sweeper = |db: Db, barrier: Arc<tokio::sync::Barrier>| async move {
            barrier.wait().await;
            sweep_expired(&db, 4).await
        };
        let one = tokio::spawn(sweeper(db.clone(), barrier.clone()));
        let two = tokio::spawn(sweeper(db.clone(), barrier));
        let (one, two) = (one.await.unwrap().unwrap(), two.await.unwrap().unwrap());
        assert_eq!(one + two, u64::try_from(HOLDS).unwrap(), "{one} + {two}");
        assert_eq!(sweep_expired_once(&db).await.unwrap(), 0, "nothing left");

        let row = sql
            .query_one(
                "select count(*) filter (where status = 'expired'), count(*) \
                   from ledger.transfers where amount = 7",
                &[],
            )
            .await
            .unwrap();
        assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (HOLDS, HOLDS));
        let events = sql
            .query(
                "select aggregate_id, count(*) from ledger.events \
                  where type = 'transfer.expired' group by aggregate_id",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(events.len(), usize::try_from(HOLDS).unwrap());
        assert!(
            events.iter().all(|r| r.get::<_, i64>(1) == 1),
            "one event per hold"
        );
        for account in [a, b] {
            let row = sql
                .query_one(
                    "select balance, pending_debits, pending_credits from ledger.accounts where id = $1",
                    &[&account],
                )
                .await
                .unwrap();
            assert_eq!(
                (
                    row.get::<_, i64>(0),
                    row.get::<_, i64>(1),
                    row.get::<_, i64>(2)
                ),
                (10_000, 0, 0),
                "account {account}"
            );
        }
        let broken: i64 = sql
            .query_one(
                "select coalesce(sum(violations), 0)::bigint from ledger.verify_invariants()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(broken, 0, "ledger invariants hold");
    }

    /// `ensure_partitions` creates exactly the missing months ahead, for both partitioned
    /// tables, and a second call creates nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ensure_partitions_creates_ahead_once() {
        let (_test, db, sql) = database().await;
        // The migration already created the current month and 18 ahead.
        assert_eq!(ensure_partitions(&db, MONTHS_AHEAD).await.unwrap(), vec![]);

        let created = ensure_partitions(&db, 24).await.unwrap();
        assert_eq!(created.len(), 12, "months 19..=24, two tables: {created:?}");
        assert_eq!(ensure_partitions(&db, 24).await.unwrap(), vec![]);

        let months: i64 = sql
            .query_one(
                "select count(*) from generate_series(0, 24) as m, \
                   unnest(array['transfers', 'entries']) as parent \
                  where to_regclass(format('ledger.%s_p%s', parent, \
                        to_char(date_trunc('month', now() at time zone 'UTC') + make_interval(months => m), \
                                'YYYYMM'))) is not null",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(months, 50, "current month and 24 ahead, both tables");
    }

    /// Pruning keeps events inside the retention window and deletes older ones.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prune_respects_retention() {
        let (_test, db, sql) = database().await;
        funded_account(&sql, 1).await;
        let count = || async {
            sql.query_one("select count(*) from ledger.events", &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        };
        let before = count().await;
        assert!(before > 0);
        assert_eq!(
            prune_events_once(&db, EVENT_RETENTION_DAYS).await.unwrap(),
            0
        );
        assert_eq!(count().await, before);

        sql.execute(
            "update ledger.events set created_at = created_at - interval '31 days' \
              where type = 'transfer.created'",
            &[],
        )
        .await
        .unwrap();
        assert_eq!(
            prune_events_once(&db, EVENT_RETENTION_DAYS).await.unwrap(),
            1
        );
        assert_eq!(count().await, before - 1);
    }
}
