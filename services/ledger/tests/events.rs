//! WatchEvents against a real database and a served ledger: resuming after a disconnect
//! sees every event exactly once, concurrent commits arrive once each in commit order,
//! bad or stale cursors and foreign accounts are refused with precise reasons, and a
//! closed stream releases its background task and the shared LISTEN connection.
//!
//! Events are produced by calling the SQL functions directly on a superuser connection,
//! so these tests depend on nothing but the outbox and the stream.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ferrobank_auth::{DEV_PRINCIPAL_HEADER, DevHeaderAuthenticator};
use ferrobank_proto::ledger::ledger_service_client::LedgerServiceClient;
use ferrobank_proto::ledger::{Event, EventType, WatchEventsRequest, event};
use ferrobank_proto::status::reason;
use ferrobank_testkit::TestDb;
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};
use tonic_types::StatusExt;
use uuid::Uuid;

/// How long any single wait for an event may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

struct Running {
    db: TestDb,
    sql: tokio_postgres::Client,
    client: LedgerServiceClient<Channel>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A fresh database and a ledger serving it on port 0, trusting the dev header.
async fn start() -> Running {
    let db = TestDb::new("ledger", ferrobank_ledger::migrations)
        .await
        .expect("test database");
    let ledger = ferrobank_ledger::Ledger::new(&db.settings, Arc::new(DevHeaderAuthenticator))
        .expect("ledger");
    let common::Served { channel, stop, .. } = common::serve(ledger).await;
    let sql = db.admin().await.expect("admin connection");
    Running {
        db,
        sql,
        client: LedgerServiceClient::new(channel),
        _stop: stop,
    }
}

fn as_role<T>(message: T, role: &str, user: Uuid) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        DEV_PRINCIPAL_HEADER,
        format!("{role}:{user}").parse().unwrap(),
    );
    request
}

impl Running {
    async fn watch(
        &self,
        role: &str,
        user: Uuid,
        request: WatchEventsRequest,
    ) -> Result<Streaming<ferrobank_proto::ledger::WatchEventsResponse>, Status> {
        self.client
            .clone()
            .watch_events(as_role(request, role, user))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn admin_watch(
        &self,
        cursor: &str,
    ) -> Streaming<ferrobank_proto::ledger::WatchEventsResponse> {
        self.watch(
            "admin",
            Uuid::now_v7(),
            WatchEventsRequest {
                cursor: cursor.to_owned(),
                ..Default::default()
            },
        )
        .await
        .expect("watch")
    }
}

/// Opens a USD customer account for `owner` through SQL; returns its id.
async fn open_account(sql: &tokio_postgres::Client, owner: Uuid) -> Uuid {
    let row = sql
        .query_one(
            "select status, account_id from ledger.open_account($1, null, $2, 'USD', 0, null)",
            &[&Uuid::new_v4(), &owner],
        )
        .await
        .expect("open_account");
    assert_eq!(row.get::<_, String>(0), "ok");
    row.get(1)
}

/// The USD cash vault: a system account that may go negative, to fund customers.
async fn vault(sql: &tokio_postgres::Client) -> Uuid {
    sql.query_one(
        "select id from ledger.accounts where currency = 'USD' and system_role = 'cash_vault'",
        &[],
    )
    .await
    .expect("vault")
    .get(0)
}

/// A posted transfer through SQL; returns its id.
async fn transfer(sql: &tokio_postgres::Client, from: Uuid, to: Uuid, amount: i64) -> Uuid {
    let row = sql
        .query_one(
            "select status, transfer_id from ledger.create_transfer($1, null, $2, $3, $4, 'USD', \
             false, null, null, null, null)",
            &[&Uuid::new_v4(), &from, &to, &amount],
        )
        .await
        .expect("create_transfer");
    assert_eq!(row.get::<_, String>(0), "ok", "transfer {from} -> {to}");
    row.get(1)
}

/// Every event id in the outbox, in delivery order.
async fn outbox_ids(sql: &tokio_postgres::Client) -> Vec<String> {
    sql.query(
        "select id::text from ledger.events order by order_key, seq",
        &[],
    )
    .await
    .expect("outbox")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// The next event of `stream`, failing the test after [`PATIENCE`].
async fn next(stream: &mut Streaming<ferrobank_proto::ledger::WatchEventsResponse>) -> Event {
    tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("no event in time")
        .expect("stream error")
        .expect("stream ended")
        .event
        .expect("response without event")
}

fn transfer_id(event: &Event) -> Option<&str> {
    match &event.payload {
        Some(event::Payload::Transfer(t)) => Some(&t.id),
        _ => None,
    }
}

/// A client that disconnects mid-stream and resumes from the last cursor it received
/// sees every event exactly once, in outbox order — including those committed while it
/// was away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_disconnect_sees_every_event_once() {
    let ledger = start().await;
    let before: HashSet<String> = outbox_ids(&ledger.sql).await.into_iter().collect();
    let vault = vault(&ledger.sql).await;

    let mut stream = ledger.admin_watch("").await;
    let a = open_account(&ledger.sql, Uuid::now_v7()).await;
    let b = open_account(&ledger.sql, Uuid::now_v7()).await;
    for i in 1..=10 {
        transfer(&ledger.sql, vault, a, 100 * i).await;
    }
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(next(&mut stream).await);
    }
    drop(stream);

    // Committed while disconnected.
    for _ in 0..10 {
        transfer(&ledger.sql, a, b, 1).await;
    }
    let expected: Vec<String> = outbox_ids(&ledger.sql)
        .await
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert_eq!(expected.len(), 2 + 10 + 10);

    let last = seen.last().unwrap().cursor.clone();
    let mut stream = ledger.admin_watch(&last).await;
    while seen.len() < expected.len() {
        seen.push(next(&mut stream).await);
    }
    // One more event, committed now, must come next: nothing was delivered twice.
    let sentinel = transfer(&ledger.sql, b, a, 1).await;
    let after = next(&mut stream).await;
    assert_eq!(transfer_id(&after), Some(sentinel.to_string().as_str()));

    let got: Vec<String> = seen.iter().map(|e| e.id.clone()).collect();
    assert_eq!(got, expected, "every event once, in outbox order");
    assert_eq!(seen[0].r#type, EventType::AccountOpened as i32);
    assert_eq!(seen[2].r#type, EventType::TransferPosted as i32);
    let cursors: HashSet<&str> = seen.iter().map(|e| e.cursor.as_str()).collect();
    assert_eq!(cursors.len(), seen.len(), "cursors are distinct");
}

/// Transfers committed concurrently from several connections, over overlapping
/// accounts, each arrive exactly once; and for every account its transfers arrive in
/// the order they changed its balance (the order of its journal entries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_arrive_once_in_commit_order() {
    const WRITERS: usize = 6;
    const EACH: usize = 25;
    let ledger = start().await;
    let vault = vault(&ledger.sql).await;
    let mut accounts = Vec::new();
    for _ in 0..4 {
        let account = open_account(&ledger.sql, Uuid::now_v7()).await;
        transfer(&ledger.sql, vault, account, 1_000_000).await;
        accounts.push(account);
    }

    let mut stream = ledger.admin_watch("").await;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let sql = ledger.db.admin().await.unwrap();
        let accounts = accounts.clone();
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..EACH {
                let from = accounts[(w + i) % accounts.len()];
                let to = accounts[(w + i + 1 + i % 2) % accounts.len()];
                ids.push(transfer(&sql, from, to, 1).await);
            }
            ids
        }));
    }
    let mut created = HashSet::new();
    for writer in writers {
        created.extend(writer.await.unwrap().into_iter().map(|id| id.to_string()));
    }
    assert_eq!(created.len(), WRITERS * EACH);

    // "From now" starts after the newest *deliverable* event: setup events committed
    // while some other transaction in the cluster was still open may follow first (the
    // stream never misses an event, at the price of sometimes starting a little early).
    // They come before the writers' events, which lock the same accounts later.
    let mut received = Vec::new();
    while received.len() < WRITERS * EACH {
        let event = next(&mut stream).await;
        match transfer_id(&event) {
            Some(id) if created.contains(id) => received.push(id.to_owned()),
            _ => {}
        }
    }
    let sentinel = transfer(&ledger.sql, accounts[0], accounts[1], 1).await;
    let after = next(&mut stream).await;
    assert_eq!(transfer_id(&after), Some(sentinel.to_string().as_str()));

    let unique: HashSet<&String> = received.iter().collect();
    assert_eq!(unique.len(), received.len(), "no duplicates");
    assert_eq!(
        unique.into_iter().cloned().collect::<HashSet<_>>(),
        created,
        "every committed transfer arrived"
    );

    // Per account, stream order = journal order.
    let position: HashMap<&str, usize> = received
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    for account in &accounts {
        let journal: Vec<String> = ledger
            .sql
            .query(
                "select transfer_id::text from ledger.entries where account_id = $1 \
                 order by created_at, seq",
                &[account],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .filter(|id: &String| position.contains_key(id.as_str()))
            .collect();
        let streamed: Vec<&String> = {
            let mut ids: Vec<&String> = journal.iter().collect();
            ids.sort_by_key(|id| position[id.as_str()]);
            ids
        };
        assert_eq!(
            streamed,
            journal.iter().collect::<Vec<_>>(),
            "account {account}: stream order matches balance order"
        );
    }
}

/// A garbled cursor is INVALID_ARGUMENT with reason INVALID_CURSOR and a field
/// violation naming `cursor`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbled_cursor_is_invalid_argument() {
    let ledger = start().await;
    for bad in ["nonsense", "v1.12", "v1.-1.-1", "v9.1.2", "v1.1.2.3"] {
        let status = ledger
            .watch(
                "admin",
                Uuid::now_v7(),
                WatchEventsRequest {
                    cursor: bad.to_owned(),
                    ..Default::default()
                },
            )
            .await
            .expect_err(bad);
        assert_eq!(status.code(), Code::InvalidArgument, "{bad}");
        assert_eq!(
            reason(&status).as_deref(),
            Some("ERROR_REASON_INVALID_CURSOR")
        );
        let fields: Vec<String> = status
            .get_details_bad_request()
            .expect("BadRequest details")
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["cursor"]);
    }
}

/// A well-formed cursor whose event retention has deleted is OUT_OF_RANGE with reason
/// CURSOR_EXPIRED: resuming from it could skip events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_cursor_is_expired() {
    let ledger = start().await;
    let mut stream = ledger.admin_watch("").await;
    open_account(&ledger.sql, Uuid::now_v7()).await;
    let cursor = next(&mut stream).await.cursor;
    drop(stream);
    ledger
        .sql
        .execute(
            "select ledger.prune_events(now() + interval '1 day', 100000)",
            &[],
        )
        .await
        .unwrap();

    let status = ledger
        .watch(
            "admin",
            Uuid::now_v7(),
            WatchEventsRequest {
                cursor,
                ..Default::default()
            },
        )
        .await
        .expect_err("pruned cursor");
    assert_eq!(status.code(), Code::OutOfRange);
    assert_eq!(
        reason(&status).as_deref(),
        Some("ERROR_REASON_CURSOR_EXPIRED")
    );
}

/// Customers may watch only an account of their own: another customer's account, an
/// unknown one and no account at all are PERMISSION_DENIED alike; their own account's
/// stream carries only that account's events, filtered by type as asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_watch_only_their_own_accounts() {
    let ledger = start().await;
    let alice = Uuid::now_v7();
    let bob = Uuid::now_v7();
    let alices = open_account(&ledger.sql, alice).await;
    let bobs = open_account(&ledger.sql, bob).await;

    for account_id in [bobs.to_string(), Uuid::now_v7().to_string(), String::new()] {
        let status = ledger
            .watch(
                "customer",
                alice,
                WatchEventsRequest {
                    account_id: account_id.clone(),
                    ..Default::default()
                },
            )
            .await
            .expect_err("foreign account");
        assert_eq!(status.code(), Code::PermissionDenied, "{account_id:?}");
        assert_eq!(
            reason(&status).as_deref(),
            Some("ERROR_REASON_PERMISSION_DENIED")
        );
    }

    let mut mine = ledger
        .watch(
            "customer",
            alice,
            WatchEventsRequest {
                account_id: alices.to_string(),
                types: vec![EventType::TransferPosted as i32],
                ..Default::default()
            },
        )
        .await
        .expect("own account");
    let vault = vault(&ledger.sql).await;
    transfer(&ledger.sql, vault, bobs, 500).await; // not about alice: filtered out
    let to_alice = transfer(&ledger.sql, bobs, alices, 200).await;
    open_account(&ledger.sql, alice).await; // alice's, but another account
    let from_alice = transfer(&ledger.sql, alices, bobs, 50).await;

    let first = next(&mut mine).await;
    let second = next(&mut mine).await;
    assert_eq!(transfer_id(&first), Some(to_alice.to_string().as_str()));
    assert_eq!(transfer_id(&second), Some(from_alice.to_string().as_str()));
    let Some(event::Payload::Transfer(t)) = &second.payload else {
        panic!("transfer payload");
    };
    assert_eq!(t.amount, 50);
    assert_eq!(t.currency_code, "USD");
    assert_eq!(t.debit_account_id, alices.to_string());
}

/// Streams share one LISTEN connection, and closing them (client disconnect) ends their
/// background tasks: the shared connection goes away with the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_streams_release_the_listener() {
    let ledger = start().await;
    let listeners = || async {
        ledger
            .sql
            .query_one(
                "select count(*) from pg_stat_activity \
                 where datname = current_database() and application_name = 'ferrobank-ledger-events'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let until = |want: i64| async move {
        tokio::time::timeout(PATIENCE, async {
            while listeners().await != want {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("listener count never became {want}"));
    };

    let mut one = ledger.admin_watch("").await;
    let mut two = ledger.admin_watch("").await;
    until(1).await;
    open_account(&ledger.sql, Uuid::now_v7()).await;
    let a = next(&mut one).await;
    let b = next(&mut two).await;
    assert_eq!(a.id, b.id);

    drop(one);
    drop(two);
    until(0).await;
}
