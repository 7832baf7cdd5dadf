//! Automatic micro-batching of single CreateTransfer calls, against a real Postgres:
//! every invariant holds under concurrency, one member's refusal leaves its
//! neighbours alone, replays work inside a batch and across the batched and direct
//! paths, and a window of 0 turns batching off. Each test runs two ledgers on one
//! database: a direct one (batching off, for setup and cross-path replays) and a
//! batched one. Tests that must land in one batch use a long window and a batch
//! size equal to the number of calls, so the batch leaves when it is full.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{create, reason, serve, spec};
use ferrobank_auth::{DEV_PRINCIPAL_HEADER, DevHeaderAuthenticator};
use ferrobank_config::LedgerBatchArgs;
use ferrobank_proto::ledger::ledger_service_client::LedgerServiceClient;
use ferrobank_proto::ledger::{self as pb};
use ferrobank_testkit::TestDb;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use uuid::Uuid;

/// A window no test waits out: batches leave when full.
const LONG_WINDOW_US: u64 = 20_000_000;

/// One database, a direct ledger and a batched one.
struct Pair {
    db: TestDb,
    direct: Channel,
    batched: Channel,
    _stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Pair {
    /// A fresh database, a direct ledger and one batching with `batch`.
    async fn spawn(batch: LedgerBatchArgs) -> Self {
        let db = TestDb::new("ledger", ferrobank_ledger::migrations)
            .await
            .expect("test database");
        let auth = Arc::new(DevHeaderAuthenticator);
        let direct = ferrobank_ledger::Ledger::new(&db.settings, auth.clone()).unwrap();
        let batched = ferrobank_ledger::Ledger::new(&db.settings, auth)
            .unwrap()
            .with_batching(&batch);
        let direct = serve(direct).await;
        let batched = serve(batched).await;
        Self {
            db,
            direct: direct.channel,
            batched: batched.channel,
            _stops: vec![direct.stop, batched.stop],
        }
    }

    /// An admin client of the direct ledger.
    fn direct(&self) -> Client {
        LedgerServiceClient::with_interceptor(self.direct.clone(), admin())
    }

    /// An admin client of the batched ledger.
    fn batched(&self) -> Client {
        LedgerServiceClient::with_interceptor(self.batched.clone(), admin())
    }

    /// Opens a USD account (directly).
    async fn open(&self) -> String {
        self.direct()
            .open_account(pb::OpenAccountRequest {
                request_id: Uuid::new_v4().to_string(),
                owner_id: Uuid::now_v7().to_string(),
                currency_code: "USD".to_owned(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .account
            .unwrap()
            .id
    }

    /// The USD cash vault.
    async fn vault(&self) -> String {
        let page = self
            .direct()
            .list_accounts(pb::ListAccountsRequest {
                currency_code: "USD".to_owned(),
                kind: pb::AccountKind::System as i32,
                system_role: pb::SystemRole::CashVault as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        page.accounts[0].id.clone()
    }

    /// Two new accounts, the first funded with `amount` from the cash vault.
    async fn funded_pair(&self, amount: i64) -> (String, String) {
        let vault = self.vault().await;
        let from = self.open().await;
        let to = self.open().await;
        self.fund(&vault, &from, amount).await;
        (from, to)
    }

    /// Cash in to `account` (directly).
    async fn fund(&self, vault: &str, account: &str, amount: i64) {
        self.direct()
            .create_transfer(create(spec(vault, account, amount)))
            .await
            .unwrap();
    }

    /// Posted balance.
    async fn balance(&self, account: &str) -> i64 {
        self.direct()
            .get_account(pb::GetAccountRequest {
                account_id: account.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .account
            .unwrap()
            .posted_balance
    }

    /// Rows in a ledger table.
    async fn count(&self, table: &str) -> i64 {
        let client = self.db.admin().await.unwrap();
        client
            .query_one(&format!("select count(*) from ledger.{table}"), &[])
            .await
            .unwrap()
            .get(0)
    }

    /// How many distinct commit timestamps the transfers with these ids carry (one
    /// batch: one).
    async fn distinct_created_at(&self, ids: &[String]) -> i64 {
        let ids: Vec<Uuid> = ids.iter().map(|i| i.parse().unwrap()).collect();
        let client = self.db.admin().await.unwrap();
        client
            .query_one(
                "select count(distinct created_at) from ledger.transfers where id = any($1)",
                &[&ids],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// Every check of `ledger.verify_invariants()` reports zero violations.
    async fn assert_invariants(&self) {
        common::assert_invariants(&self.db).await;
    }
}

/// Acts as an admin through the dev principal header.
#[derive(Clone, Copy)]
struct Admin;

impl Interceptor for Admin {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let value = format!("admin:{}", Uuid::nil())
            .parse()
            .map_err(|_| tonic::Status::internal("principal header"))?;
        req.metadata_mut().insert(DEV_PRINCIPAL_HEADER, value);
        Ok(req)
    }
}

/// A ledger client acting as an admin.
type Client = LedgerServiceClient<InterceptedService<Channel, Admin>>;

/// An admin interceptor.
fn admin() -> Admin {
    Admin
}

/// Batching that waits for `max` calls.
fn full_batches(max: u16) -> LedgerBatchArgs {
    LedgerBatchArgs {
        ledger_batch_window_us: LONG_WINDOW_US,
        ledger_batch_max: max,
        ledger_batch_always_wait: true,
        ..LedgerBatchArgs::default()
    }
}

/// Sends every request at once through `client`s of the batched ledger.
async fn concurrently(
    pair: &Pair,
    requests: Vec<pb::CreateTransferRequest>,
) -> Vec<Result<pb::CreateTransferResponse, tonic::Status>> {
    let calls = requests.into_iter().map(|request| {
        let mut client = pair.batched();
        tokio::spawn(async move {
            client
                .create_transfer(request)
                .await
                .map(|r| r.into_inner())
        })
    });
    futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

/// 32 tasks × 100 transfers through the batched ledger (default window and size)
/// among 10 accounts and a hot one, both directions: only INSUFFICIENT_FUNDS
/// refusals, balances equal funding plus the successful moves, money is conserved,
/// and `ledger.verify_invariants()` finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_transfers_keep_every_invariant() {
    const TASKS: u64 = 32;
    const PER_TASK: u64 = 100;
    const FUNDING: i64 = 3_000;
    let pair = Pair::spawn(LedgerBatchArgs::default()).await;
    let vault = pair.vault().await;
    let mut accounts = Vec::new();
    for _ in 0..11 {
        let a = pair.open().await;
        pair.fund(&vault, &a, FUNDING).await;
        accounts.push(a);
    }
    let vault_before = pair.balance(&vault).await;

    let tasks = (0..TASKS).map(|t| {
        let mut client = pair.batched();
        let accounts = accounts.clone();
        tokio::spawn(async move {
            let mut deltas: HashMap<String, i64> = HashMap::new();
            for i in 0..PER_TASK {
                // Deterministic spread: the hot account (index 0) on every transfer,
                // half of them debiting it.
                let other = 1 + usize::try_from((t * 7 + i * 3) % 10).unwrap();
                let (d, c) = if (t + i) % 2 == 0 {
                    (0, other)
                } else {
                    (other, 0)
                };
                let amount = i64::try_from(1 + (t + i) % 50).unwrap();
                let result = client
                    .create_transfer(create(spec(&accounts[d], &accounts[c], amount)))
                    .await;
                match result {
                    Ok(_) => {
                        *deltas.entry(accounts[d].clone()).or_default() -= amount;
                        *deltas.entry(accounts[c].clone()).or_default() += amount;
                    }
                    Err(status) => assert_eq!(
                        reason(&status),
                        "ERROR_REASON_INSUFFICIENT_FUNDS",
                        "unexpected error: {status:?}"
                    ),
                }
            }
            deltas
        })
    });
    let mut total: HashMap<String, i64> = HashMap::new();
    for deltas in futures::future::join_all(tasks).await {
        for (account, delta) in deltas.unwrap() {
            *total.entry(account).or_default() += delta;
        }
    }
    let mut sum = 0;
    for a in &accounts {
        let balance = pair.balance(a).await;
        assert_eq!(balance, FUNDING + total.get(a).copied().unwrap_or(0));
        assert!(balance >= 0);
        sum += balance;
    }
    assert_eq!(sum, FUNDING * 11);
    assert_eq!(pair.balance(&vault).await, vault_before);
    pair.assert_invariants().await;
}

/// Ten transfers in one batch, one of them from an empty account: exactly that one
/// is refused with INSUFFICIENT_FUNDS, the nine others (one of them a hold) are
/// applied, in one commit.
#[tokio::test]
async fn one_refusal_does_not_fail_its_neighbours() {
    let pair = Pair::spawn(full_batches(10)).await;
    let vault = pair.vault().await;
    let rich = pair.open().await;
    let poor = pair.open().await;
    let to = pair.open().await;
    pair.fund(&vault, &rich, 1_000).await;

    let mut requests: Vec<_> = (0..8).map(|_| create(spec(&rich, &to, 10))).collect();
    let mut hold = spec(&rich, &to, 10);
    hold.pending = true;
    hold.timeout = Some(prost_types::Duration {
        seconds: 3600,
        nanos: 0,
    });
    requests.push(create(hold));
    let refused_id = Uuid::new_v4().to_string();
    requests.push(pb::CreateTransferRequest {
        request_id: refused_id.clone(),
        transfer: Some(spec(&poor, &to, 10)),
    });
    let ids: Vec<String> = requests.iter().map(|r| r.request_id.clone()).collect();

    let results = concurrently(&pair, requests).await;

    let mut applied = Vec::new();
    for (id, result) in ids.iter().zip(results) {
        match result {
            Ok(r) => applied.push(r.transfer.unwrap().id),
            Err(status) => {
                assert_eq!(id, &refused_id, "a neighbour failed: {status:?}");
                assert_eq!(reason(&status), "ERROR_REASON_INSUFFICIENT_FUNDS");
            }
        }
    }
    assert_eq!(applied.len(), 9);
    assert_eq!(pair.distinct_created_at(&applied).await, 1, "one batch");
    assert_eq!(pair.balance(&rich).await, 1_000 - 80);
    assert_eq!(pair.balance(&poor).await, 0);
    assert_eq!(pair.balance(&to).await, 80);
    pair.assert_invariants().await;
}

/// The same CreateTransfer sent 20 times into one batch yields one transfer and 20
/// identical responses.
#[tokio::test]
async fn replays_within_one_batch_make_one_transfer() {
    let pair = Pair::spawn(full_batches(20)).await;
    let (from, to) = pair.funded_pair(1_000).await;
    let before = pair.count("transfers").await;

    let request = create(spec(&from, &to, 300));
    let responses: Vec<pb::CreateTransferResponse> = concurrently(&pair, vec![request; 20])
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    let first = responses[0].transfer.clone().unwrap();
    for r in &responses {
        assert_eq!(r.transfer.as_ref(), Some(&first));
        assert_eq!(r.ledger_time, responses[0].ledger_time);
        assert!(!r.consistency_token.is_empty());
    }
    assert_eq!(pair.count("transfers").await, before + 1);
    assert_eq!(pair.balance(&from).await, 700);
    assert_eq!(pair.balance(&to).await, 300);
    pair.assert_invariants().await;
}

/// A request applied in a batch replays through the direct path with the same
/// response, one applied directly replays through a batch, and a request id reused
/// with another payload is refused in a batch as it is directly.
#[tokio::test]
async fn replays_cross_the_batched_and_direct_paths() {
    let pair = Pair::spawn(full_batches(2)).await;
    let (from, to) = pair.funded_pair(1_000).await;
    let before = pair.count("transfers").await;

    // Batched first (with a neighbour, so it really is a two-member batch), then direct.
    let batched = create(spec(&from, &to, 100));
    let first = concurrently(&pair, vec![batched.clone(), create(spec(&from, &to, 1))]).await;
    let first = first.into_iter().next().unwrap().unwrap();
    let again = pair
        .direct()
        .create_transfer(batched.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.transfer, first.transfer);
    assert_eq!(again.ledger_time, first.ledger_time);

    // Direct first, then batched.
    let direct = create(spec(&from, &to, 200));
    let first = pair
        .direct()
        .create_transfer(direct.clone())
        .await
        .unwrap()
        .into_inner();
    let again = concurrently(&pair, vec![direct.clone(), create(spec(&from, &to, 2))]).await;
    let again = again.into_iter().next().unwrap().unwrap();
    assert_eq!(again.transfer, first.transfer);
    assert_eq!(again.ledger_time, first.ledger_time);

    // Another payload under a recorded request id: refused, nothing moves.
    let mut reused = batched;
    if let Some(t) = reused.transfer.as_mut() {
        t.amount = 999;
    }
    let results = concurrently(&pair, vec![reused, create(spec(&from, &to, 3))]).await;
    let mut results = results.into_iter();
    let status = results.next().unwrap().unwrap_err();
    assert_eq!(reason(&status), "ERROR_REASON_REQUEST_ID_REUSED");
    assert!(results.next().unwrap().is_ok());

    assert_eq!(pair.balance(&from).await, 1_000 - 100 - 1 - 200 - 2 - 3);
    assert_eq!(pair.balance(&to).await, 100 + 1 + 200 + 2 + 3);
    assert_eq!(pair.count("transfers").await, before + 5);
    pair.assert_invariants().await;
}

/// A window of 0 turns batching off: transfers, refusals and replays behave as on
/// the direct path.
#[tokio::test]
async fn zero_window_is_off() {
    let pair = Pair::spawn(LedgerBatchArgs {
        ledger_batch_window_us: 0,
        ledger_batch_max: 100,
        ..LedgerBatchArgs::default()
    })
    .await;
    let (from, to) = pair.funded_pair(100).await;
    let mut client = pair.batched();

    let request = create(spec(&from, &to, 60));
    let first = client.create_transfer(request.clone()).await.unwrap();
    let again = client.create_transfer(request).await.unwrap();
    assert_eq!(first.into_inner().transfer, again.into_inner().transfer);
    let status = client
        .create_transfer(create(spec(&from, &to, 60)))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "ERROR_REASON_INSUFFICIENT_FUNDS");
    assert_eq!(pair.balance(&from).await, 40);
    assert_eq!(pair.balance(&to).await, 60);
    pair.assert_invariants().await;
}

/// Under light load a transfer is not held for the window: with a 20 s window, lone
/// transfers one after another (no batch running, the last one alone) each complete
/// at once, and are applied exactly as on the direct path.
#[tokio::test]
async fn a_lone_transfer_on_an_idle_ledger_does_not_wait_for_the_window() {
    let pair = Pair::spawn(LedgerBatchArgs {
        ledger_batch_window_us: LONG_WINDOW_US,
        ledger_batch_max: 100,
        ..LedgerBatchArgs::default()
    })
    .await;
    let (from, to) = pair.funded_pair(100).await;
    let mut client = pair.batched();

    for _ in 0..3 {
        // Far below the window: a call that waited for company would miss this bound.
        let call = client.create_transfer(create(spec(&from, &to, 10)));
        tokio::time::timeout(std::time::Duration::from_secs(10), call)
            .await
            .expect("a lone transfer waited for the 20 s window")
            .unwrap();
    }
    assert_eq!(pair.balance(&from).await, 70);
    assert_eq!(pair.balance(&to).await, 30);
    pair.assert_invariants().await;
}
