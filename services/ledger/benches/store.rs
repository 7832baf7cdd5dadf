//! Store-layer benchmarks against a real Postgres (the stack `scripts/test.sh` starts,
//! via DATABASE_URL and REDIS_URL): one transfer, a batch of 100, one history page, one
//! statement page.
//! Each run copies the migrated template into a fresh database. Without DATABASE_URL
//! the benchmarks are skipped with a message.
//!
//! The store module is compiled into this bench from its source (`#[path]`): the
//! library keeps it private, and the bench measures exactly the code the service runs.

#[path = "../src/store/mod.rs"]
#[allow(dead_code, unused_imports)]
mod store;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ferrobank_db::Db;
use store::{EntryQuery, NewTransfer, StatementQuery, Store};
use uuid::Uuid;

/// Entries on the statement bench's account.
const STATEMENT_ENTRIES: usize = 3_000;

struct Fixture {
    store: Store,
    pool: ferrobank_db::Pool,
    accounts: Vec<Uuid>,
    /// An account with [`STATEMENT_ENTRIES`] entries, all after `statement_from`.
    statement_account: Uuid,
    statement_from: chrono::DateTime<chrono::Utc>,
    _db: ferrobank_testkit::TestDb,
}

fn member(debit: Uuid, credit: Uuid, amount: i64) -> NewTransfer {
    NewTransfer {
        request_id: Uuid::new_v4(),
        id: Uuid::now_v7(),
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        currency: "USD".into(),
        pending: false,
        timeout_ms: None,
        metadata: serde_json::json!({}),
        owner_scope: None,
        actor: Uuid::nil(),
    }
}

/// Opens USD account `id` and funds it with 10,000,000.00 from `vault`.
async fn open_funded(store: &Store, vault: Uuid, id: Uuid) {
    store
        .open_account(Uuid::new_v4(), id, Uuid::now_v7(), "USD", 0, Uuid::nil())
        .await
        .expect("open");
    store
        .create_transfer(&member(vault, id, 1_000_000_000))
        .await
        .expect("fund");
}

async fn fixture() -> Fixture {
    let db = ferrobank_testkit::TestDb::new("ledger", ferrobank_ledger::migrations)
        .await
        .expect("bench database");
    let pool = ferrobank_db::build_pool(&db.settings.primary).expect("pool");
    let store = Store::new(Db::new(pool.clone(), true));
    let vault = store
        .system_accounts()
        .await
        .expect("system accounts")
        .into_iter()
        .find(|s| s.currency == "USD" && s.role == "cash_vault")
        .expect("USD vault")
        .id;
    let mut accounts = Vec::new();
    for _ in 0..200 {
        let id = Uuid::now_v7();
        open_funded(&store, vault, id).await;
        accounts.push(id);
    }
    // The statement account: funded, then STATEMENT_ENTRIES - 1 transfers to and from a
    // partner in batches of 100 (a few thousand entries in the period).
    let statement_from = chrono::Utc::now() - chrono::Duration::minutes(1);
    let (statement_account, partner) = (Uuid::now_v7(), Uuid::now_v7());
    for id in [statement_account, partner] {
        open_funded(&store, vault, id).await;
    }
    let mut made = 1;
    while made < STATEMENT_ENTRIES {
        let batch: Vec<NewTransfer> = (0..100.min(STATEMENT_ENTRIES - made))
            .map(|j| match j % 2 {
                0 => member(statement_account, partner, 7),
                _ => member(partner, statement_account, 5),
            })
            .collect();
        made += batch.len();
        store
            .create_transfers(false, &batch)
            .await
            .expect("statement history");
    }
    Fixture {
        store,
        pool,
        accounts,
        statement_account,
        statement_from,
        _db: db,
    }
}

fn benches(c: &mut Criterion) {
    if std::env::var_os("DATABASE_URL").is_none() || std::env::var_os("REDIS_URL").is_none() {
        eprintln!(
            "store benches skipped: DATABASE_URL and REDIS_URL are unset \
             (start the stack with scripts/stack.sh, or run under scripts/test.sh)"
        );
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let f = rt.block_on(fixture());
    let n = f.accounts.len();
    let mut group = c.benchmark_group("store");

    let mut i = 0usize;
    group.bench_function("create_transfer", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % n;
            let t = member(f.accounts[i], f.accounts[(i + 1) % n], 1);
            let store = &f.store;
            async move { black_box(store.create_transfer(&t).await.expect("transfer")) }
        })
    });

    let mut k = 0usize;
    group.bench_function("create_transfers_100", |b| {
        b.to_async(&rt).iter(|| {
            k = (k + 1) % n;
            let batch: Vec<NewTransfer> = (0..100)
                .map(|j| member(f.accounts[(k + j) % n], f.accounts[(k + j + 1) % n], 1))
                .collect();
            let store = &f.store;
            async move { black_box(store.create_transfers(false, &batch).await.expect("batch")) }
        })
    });

    let account = f.accounts[1];
    group.bench_function("list_entries_page_50", |b| {
        b.to_async(&rt).iter(|| {
            let store = &f.store;
            let now = chrono::Utc::now() + chrono::Duration::days(1);
            let q = EntryQuery {
                account,
                from: chrono::DateTime::UNIX_EPOCH,
                to: now,
                before: (now, i64::MAX),
                limit: 51,
            };
            async move { black_box(store.list_entries(&q).await.expect("entries")) }
        })
    });

    // GetStatement's query: opening balance, totals over all STATEMENT_ENTRIES entries
    // of the period and the first page of 50 lines, on a pooled connection (the
    // primary here; the service runs the same statement on the replica).
    let statement = StatementQuery {
        account: f.statement_account,
        start: f.statement_from,
        end: chrono::Utc::now() + chrono::Duration::minutes(1),
        after: (f.statement_from, i64::MIN),
        limit: 51,
    };
    group.bench_function("statement_page_50_of_3000", |b| {
        b.to_async(&rt).iter(|| {
            let (pool, q) = (&f.pool, &statement);
            async move {
                let conn = pool.get().await.expect("connection");
                let page = Store::statement(&conn, true, q).await.expect("statement");
                assert_eq!(page.lines.len(), 51);
                black_box(page)
            }
        })
    });
    group.finish();
}

criterion_group!(store_benches, benches);
criterion_main!(store_benches);
