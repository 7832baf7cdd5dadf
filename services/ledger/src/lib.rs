//! The ledger service (`ferrobank.ledger.v1.LedgerService`) and, on the same process
//! because it owns the data, reporting (`ferrobank.reporting.v1.ReportingService`).
//! Ledger RPCs use the primary pool; reporting reads use the reporting pool, which
//! points at a streaming replica and degrades as configured when it is down.

mod api;
mod app;
mod events;
mod maintenance;
mod store;

use std::time::Duration;

use ferrobank_auth::SharedAuthenticator;
use ferrobank_config::{DatabaseSettings, LedgerBatchArgs, PgUrl};
use ferrobank_db::{Db, ReportingPool};
use ferrobank_proto::ledger::ledger_service_server::LedgerServiceServer;
use ferrobank_proto::reporting::reporting_service_server::ReportingServiceServer;
use tokio::net::TcpListener;

mod embedded {
    refinery::embed_migrations!("../../migrations/ledger");
}

/// The ledger's migrations, embedded in the binary.
pub fn migrations() -> refinery::Runner {
    embedded::migrations::runner()
}

/// The ledger's fully qualified gRPC service name.
pub const LEDGER_SERVICE: &str = "ferrobank.ledger.v1.LedgerService";
/// The reporting fully qualified gRPC service name.
pub const REPORTING_SERVICE: &str = "ferrobank.reporting.v1.ReportingService";

/// The running ledger's state, shared by both gRPC services.
#[derive(Clone)]
pub struct Ledger {
    db: Db,
    reporting: ReportingPool,
    auth: SharedAuthenticator,
    /// Bypasses any pooler: LISTEN for the event stream, advisory locks.
    direct_url: PgUrl,
    /// The primary pool's size (bounds the batches in flight).
    pool_size: usize,
    /// Micro-batching of single CreateTransfer calls; None: off.
    batching: Option<store::batch::BatchSettings>,
}

impl Ledger {
    /// Builds the pools; they connect lazily, so the process starts while a database
    /// (in particular the replica) is down.
    pub fn new(settings: &DatabaseSettings, auth: SharedAuthenticator) -> anyhow::Result<Self> {
        let primary = ferrobank_db::build_pool(&settings.primary)?;
        let reporting = ReportingPool::new(settings, primary.clone())?;
        Ok(Self {
            db: Db::new(primary, settings.primary.statement_cache),
            reporting,
            auth,
            direct_url: settings.direct_url.clone(),
            pool_size: settings.primary.max_size,
            batching: None,
        })
    }

    /// Turns on automatic micro-batching of single CreateTransfer calls (off after
    /// [`Ledger::new`]; a window of 0 keeps it off). Concurrent calls gathered within
    /// the window, up to the batch size, share one round trip and one commit; each
    /// keeps its own result. At most `ledger_batch_in_flight` batches, and never more
    /// than half the primary pool, run at once, so reads and other writes keep
    /// connections.
    pub fn with_batching(mut self, batch: &LedgerBatchArgs) -> Self {
        self.batching = batch.window().map(|window| store::batch::BatchSettings {
            window,
            max: usize::from(batch.ledger_batch_max).clamp(1, store::batch::MAX_MEMBERS),
            in_flight: usize::from(batch.ledger_batch_in_flight)
                .clamp(1, (self.pool_size / 2).max(1)),
            always_wait: batch.ledger_batch_always_wait,
        });
        self
    }

    /// Serves both services with reflection and health until `shutdown`.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.start().await?.serve(listener, shutdown).await
    }

    /// Both services' routes with their health watchers and maintenance tasks, ready
    /// to serve on a listener and to be called in process by the gateway.
    pub async fn start(self) -> anyhow::Result<ferrobank_server::Started> {
        let mut host = ferrobank_server::Host::new()?;
        let db = self.db.clone();
        let ledger_health = ferrobank_server::watch_health(
            host.health(),
            LEDGER_SERVICE,
            Duration::from_secs(2),
            move || {
                let db = db.clone();
                async move { db.query("SELECT 1", &[]).await.is_ok() }
            },
        )
        .await;
        // Reporting is serving while it can answer: from the replica, or from the
        // primary when the configured fallback allows it.
        let reporting = self.reporting.clone();
        let reporting_health = ferrobank_server::watch_health(
            host.health(),
            REPORTING_SERVICE,
            Duration::from_secs(2),
            move || {
                let reporting = reporting.clone();
                async move {
                    match reporting.get().await {
                        Ok((conn, _)) => conn.simple_query("SELECT 1").await.is_ok(),
                        Err(_) => false,
                    }
                }
            },
        )
        .await;
        let background = maintenance::spawn(self.clone());
        // One set of use cases (and one transfer batcher) behind both services.
        let app = std::sync::Arc::new(app::LedgerApp::new(
            store::Store::new(self.db.clone()),
            self.batching,
        ));
        let ledger_api = api::LedgerApi::new(self.clone(), app.clone());
        let reporting_api = api::ReportingApi::new(self, app);
        host.add(LedgerServiceServer::new(ledger_api))
            .add(ReportingServiceServer::new(reporting_api));
        let mut tasks = background;
        tasks.extend([ledger_health, reporting_health]);
        Ok(host.start(tasks))
    }
}
