//! The ledger's background upkeep as a running process does it: two ledger processes on
//! one database expire overdue holds exactly once between them, partition maintenance
//! runs at startup, and a transfer lookup by id touches one partition.
//!
//! (Racing the sweep helper itself, partition idempotency and pruning are unit tests in
//! `src/maintenance.rs`, where the helpers are reachable.)

use std::sync::Arc;
use std::time::Duration;

mod common;

use ferrobank_testkit::TestDb;
use uuid::Uuid;

/// Upper bound for any wait on a background task.
const PATIENCE: Duration = Duration::from_secs(30);

/// Serves a ledger on `db` on port 0 until the returned sender is dropped.
async fn serve(db: &TestDb) -> tokio::sync::oneshot::Sender<()> {
    let ledger = ferrobank_ledger::Ledger::new(
        &db.settings,
        Arc::new(ferrobank_auth::DevHeaderAuthenticator),
    )
    .expect("ledger");
    common::serve(ledger).await.stop
}

/// Polls `check` until it returns true; fails the test after [`PATIENCE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let reached = tokio::time::timeout(PATIENCE, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(reached.is_ok(), "never: {what}");
}

async fn customer_account(sql: &tokio_postgres::Client, funds: i64) -> Uuid {
    let id: Uuid = sql
        .query_one(
            "select account_id from ledger.open_account($1, null, $2, 'USD', 0, null)",
            &[&Uuid::new_v4(), &Uuid::now_v7()],
        )
        .await
        .unwrap()
        .get(0);
    let status: String = sql
        .query_one(
            "select status from ledger.create_transfer($1, null, \
               (select id from ledger.accounts where currency = 'USD' and system_role = 'cash_vault'), \
               $2, $3, 'USD', false, null, null, null, null)",
            &[&Uuid::new_v4(), &id, &funds],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "ok");
    id
}

/// With two ledger processes sweeping the same database, holds whose timeout passes are
/// released by the background task, each exactly once: one `transfer.expired` event per
/// hold, pending columns back to zero, balances untouched, invariants intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_sweepers_expire_each_hold_once() {
    const HOLDS: i64 = 40;
    let db = TestDb::new("ledger", ferrobank_ledger::migrations)
        .await
        .expect("test database");
    let sql = db.admin().await.unwrap();
    let a = customer_account(&sql, 5_000).await;
    let b = customer_account(&sql, 5_000).await;
    let _one = serve(&db).await;
    let _two = serve(&db).await;

    for i in 0..HOLDS {
        let (from, to) = if i % 2 == 0 { (a, b) } else { (b, a) };
        // Staggered timeouts, so the two sweepers' ticks see holds falling due.
        let timeout_ms = 1 + 25 * i;
        let status: String = sql
            .query_one(
                "select status from ledger.create_transfer($1, null, $2, $3, 11, 'USD', \
                 true, $4, null, null, null)",
                &[&Uuid::new_v4(), &from, &to, &timeout_ms],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(status, "ok");
    }

    eventually("every hold expired", || async {
        let pending: i64 = sql
            .query_one(
                "select count(*) from ledger.transfers where status = 'pending'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        pending == 0
    })
    .await;

    let expired: i64 = sql
        .query_one(
            "select count(*) from ledger.transfers where status = 'expired' and amount = 11",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(expired, HOLDS);
    let per_hold = sql
        .query(
            "select count(*) from ledger.events where type = 'transfer.expired' \
              group by aggregate_id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(per_hold.len(), usize::try_from(HOLDS).unwrap());
    assert!(per_hold.iter().all(|r| r.get::<_, i64>(0) == 1));
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
            (5_000, 0, 0)
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
    assert_eq!(broken, 0);
}

/// Partition maintenance runs when the process starts: partitions missing from the
/// window ahead (here: the furthest month, dropped) are created again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_ensured_at_startup() {
    let db = TestDb::new("ledger", ferrobank_ledger::migrations)
        .await
        .expect("test database");
    let sql = db.admin().await.unwrap();
    let month: String = sql
        .query_one(
            "select to_char(date_trunc('month', now() at time zone 'UTC') + interval '18 months', 'YYYYMM')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    sql.batch_execute(&format!(
        "drop table ledger.transfers_p{month}; drop table ledger.entries_p{month};"
    ))
    .await
    .unwrap();
    let present = || async {
        sql.query_one(
            "select to_regclass($1) is not null and to_regclass($2) is not null",
            &[
                &format!("ledger.transfers_p{month}"),
                &format!("ledger.entries_p{month}"),
            ],
        )
        .await
        .unwrap()
        .get::<_, bool>(0)
    };
    assert!(!present().await);

    let _ledger = serve(&db).await;
    eventually("the dropped partitions are back", present).await;
}

/// A transfer lookup by id is pruned to the one partition of its month (transfers are
/// partitioned on their UUIDv7 id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_by_id_scans_one_partition() {
    let db = TestDb::new("ledger", ferrobank_ledger::migrations)
        .await
        .expect("test database");
    let sql = db.admin().await.unwrap();
    customer_account(&sql, 1).await;
    let id: Uuid = sql
        .query_one("select id from ledger.transfers limit 1", &[])
        .await
        .unwrap()
        .get(0);
    let plan: Vec<String> = sql
        .query(
            &format!("explain (costs off) select * from ledger.transfers where id = '{id}'"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let scanned: Vec<&String> = plan
        .iter()
        .filter(|line| line.contains(" on transfers_"))
        .collect();
    assert_eq!(scanned.len(), 1, "plan:\n{}", plan.join("\n"));
    assert!(!scanned[0].contains("transfers_default"), "{}", scanned[0]);
}
