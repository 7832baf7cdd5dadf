//! The payments service: `ferrobank.payments.v1.PaymentsService` on database "payments".
//!
//! Its RPCs are not built yet and answer UNIMPLEMENTED; the process, its database pool,
//! migrations, health and reflection are real.

use std::time::Duration;

use ferrobank_config::DatabaseSettings;
use ferrobank_db::Db;
use ferrobank_proto::payments::payments_service_server::{PaymentsService, PaymentsServiceServer};
use tokio::net::TcpListener;

mod embedded {
    refinery::embed_migrations!("../../migrations/payments");
}

/// The payments service's migrations, embedded in the binary.
pub fn migrations() -> refinery::Runner {
    embedded::migrations::runner()
}

/// The fully qualified gRPC service name.
pub const SERVICE_NAME: &str = "ferrobank.payments.v1.PaymentsService";

/// The running service's state.
#[derive(Clone)]
pub struct Payments {
    db: Db,
}

impl Payments {
    /// Builds the pool (connections are made lazily; the process starts while the
    /// database is down and reports NOT_SERVING until it is back).
    pub fn new(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        let pool = ferrobank_db::build_pool(&settings.primary)?;
        Ok(Self {
            db: Db::new(pool, settings.primary.statement_cache),
        })
    }

    /// Serves the service with reflection and health on `listener` until `shutdown`.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.start().await?.serve(listener, shutdown).await
    }

    /// The service's routes and health watcher, ready to serve on a listener and to
    /// be called in process by the gateway.
    pub async fn start(self) -> anyhow::Result<ferrobank_server::Started> {
        let mut host = ferrobank_server::Host::new()?;
        let db = self.db.clone();
        let watcher = ferrobank_server::watch_health(
            host.health(),
            SERVICE_NAME,
            Duration::from_secs(2),
            move || {
                let db = db.clone();
                async move { db.query("SELECT 1", &[]).await.is_ok() }
            },
        )
        .await;
        host.add(PaymentsServiceServer::new(self));
        Ok(host.start(vec![watcher]))
    }
}

#[tonic::async_trait]
impl PaymentsService for Payments {}
