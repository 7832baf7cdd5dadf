//! Shared harness for the ledger's gRPC tests: a fresh migrated database per test, the
//! service on 127.0.0.1:0 in process, and tonic clients acting as a given principal
//! through the dev principal header.
#![allow(dead_code)]

use std::sync::Arc;

use ferrobank_auth::{DEV_PRINCIPAL_HEADER, DevHeaderAuthenticator};
use ferrobank_proto::ledger::ledger_service_client::LedgerServiceClient;
use ferrobank_proto::ledger::{self as pb, TransferSpec};
use ferrobank_testkit::TestDb;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use uuid::Uuid;

/// Adds the dev principal header to every call.
#[derive(Clone)]
pub struct As(MetadataValue<Ascii>);

impl Interceptor for As {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut()
            .insert(DEV_PRINCIPAL_HEADER, self.0.clone());
        Ok(req)
    }
}

/// A ledger client acting as one principal.
pub type Client = LedgerServiceClient<InterceptedService<Channel, As>>;

/// A running ledger on its own database.
pub struct TestLedger {
    pub db: TestDb,
    pub channel: Channel,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The ErrorInfo reason of a status ("" if none).
pub fn reason(status: &tonic::Status) -> String {
    ferrobank_proto::status::reason(status).unwrap_or_default()
}

/// The ErrorInfo metadata value under `key` ("" if none).
pub fn info(status: &tonic::Status, key: &str) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .and_then(|i| i.metadata.get(key).cloned())
        .unwrap_or_default()
}

/// A posted transfer spec in USD.
pub fn spec(debit: &str, credit: &str, amount: i64) -> TransferSpec {
    TransferSpec {
        debit_account_id: debit.to_owned(),
        credit_account_id: credit.to_owned(),
        amount,
        currency_code: "USD".to_owned(),
        ..TransferSpec::default()
    }
}

/// A CreateTransfer request with a fresh request id.
pub fn create(spec: TransferSpec) -> pb::CreateTransferRequest {
    pb::CreateTransferRequest {
        request_id: Uuid::new_v4().to_string(),
        transfer: Some(spec),
    }
}

impl TestLedger {
    /// A fresh database and the service serving it.
    pub async fn spawn() -> Self {
        let db = TestDb::new("ledger", ferrobank_ledger::migrations)
            .await
            .expect("test database");
        Self::serve_on(db).await
    }

    /// A client acting as `role` with user id `user`.
    pub fn client(&self, role: &str, user: Uuid) -> Client {
        let value = format!("{role}:{user}").parse().unwrap();
        LedgerServiceClient::with_interceptor(self.channel.clone(), As(value))
    }

    /// A client acting as an admin.
    pub fn admin(&self) -> Client {
        self.client("admin", Uuid::nil())
    }

    /// The system account of `role` in `currency`.
    pub async fn system_account(&self, currency: &str, role: pb::SystemRole) -> String {
        let page = self
            .admin()
            .list_accounts(pb::ListAccountsRequest {
                currency_code: currency.to_owned(),
                kind: pb::AccountKind::System as i32,
                system_role: role as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.accounts.len(), 1, "one {currency} {role:?} account");
        page.accounts[0].id.clone()
    }

    /// The USD cash vault.
    pub async fn vault(&self) -> String {
        self.system_account("USD", pb::SystemRole::CashVault).await
    }

    /// Opens a USD account for `owner` (as an admin, with an overdraft limit).
    pub async fn open_with_limit(&self, owner: Uuid, currency: &str, overdraft: i64) -> String {
        self.admin()
            .open_account(pb::OpenAccountRequest {
                request_id: Uuid::new_v4().to_string(),
                owner_id: owner.to_string(),
                currency_code: currency.to_owned(),
                overdraft_limit: overdraft,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .account
            .unwrap()
            .id
    }

    /// Opens a USD account for `owner`.
    pub async fn open(&self, owner: Uuid) -> String {
        self.open_with_limit(owner, "USD", 0).await
    }

    /// Moves `amount` from the USD vault into `account` (cash in).
    pub async fn fund(&self, account: &str, amount: i64) {
        let vault = self.vault().await;
        self.admin()
            .create_transfer(create(spec(&vault, account, amount)))
            .await
            .unwrap();
    }

    /// The account as an admin sees it.
    pub async fn account(&self, account: &str) -> pb::Account {
        self.admin()
            .get_account(pb::GetAccountRequest {
                account_id: account.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .account
            .unwrap()
    }

    /// Posted balance.
    pub async fn balance(&self, account: &str) -> i64 {
        self.account(account).await.posted_balance
    }

    /// Every check of `ledger.verify_invariants()` reports zero violations.
    pub async fn assert_invariants(&self) {
        assert_invariants(&self.db).await;
    }

    /// Counts rows of a ledger table (for "nothing changed" assertions).
    pub async fn count(&self, table: &str) -> i64 {
        let client = self.db.admin().await.unwrap();
        client
            .query_one(&format!("select count(*) from ledger.{table}"), &[])
            .await
            .unwrap()
            .get(0)
    }
}

/// Every check of `ledger.verify_invariants()` on `db` reports zero violations.
pub async fn assert_invariants(db: &TestDb) {
    let client = db.admin().await.unwrap();
    let rows = client
        .query(
            "select check_name, violations, sample from ledger.verify_invariants()",
            &[],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty());
    for row in rows {
        let name: String = row.get(0);
        let violations: i64 = row.get(1);
        let sample: Option<String> = row.get(2);
        assert_eq!(violations, 0, "invariant {name} violated: {sample:?}");
    }
}

/// A reporting client acting as one principal.
pub type Reporting = ferrobank_proto::reporting::reporting_service_client::ReportingServiceClient<
    InterceptedService<Channel, As>,
>;

impl TestLedger {
    /// A fresh database, once the stack's streaming replica has it (reporting reads go
    /// there), and the service serving it with the given reporting fallback.
    pub async fn spawn_with_replica(fallback: ferrobank_config::ReportingFallback) -> Self {
        let env = ferrobank_testkit::env().await;
        assert!(env.has_replica(), "the test stack has no replica");
        let mut db = TestDb::new("ledger", ferrobank_ledger::migrations)
            .await
            .expect("test database");
        env.wait_for_replica().await.expect("replica caught up");
        db.settings.reporting_fallback = fallback;
        Self::serve_on(db).await
    }

    /// A ledger on `db` on 127.0.0.1:0, with a channel to it.
    async fn serve_on(db: TestDb) -> Self {
        let ledger = ferrobank_ledger::Ledger::new(&db.settings, Arc::new(DevHeaderAuthenticator))
            .expect("ledger state");
        let Served { channel, stop, .. } = serve(ledger).await;
        Self {
            db,
            channel,
            _stop: stop,
        }
    }

    /// A reporting client acting as `role` with user id `user`.
    pub fn reporting(&self, role: &str, user: Uuid) -> Reporting {
        let value = format!("{role}:{user}").parse().unwrap();
        ferrobank_proto::reporting::reporting_service_client::ReportingServiceClient::with_interceptor(
            self.channel.clone(),
            As(value),
        )
    }
}

/// A ledger served on 127.0.0.1:0 by [`serve`].
pub struct Served {
    /// A connected channel to it.
    pub channel: Channel,
    /// Stops it when sent to or dropped.
    pub stop: tokio::sync::oneshot::Sender<()>,
    /// The server, which ends once stopped.
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Serves `ledger` on 127.0.0.1:0 until [`Served::stop`] is sent to or dropped.
pub async fn serve(ledger: ferrobank_ledger::Ledger) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(ledger.serve(listener, async move {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Served {
        channel,
        stop,
        task,
    }
}
