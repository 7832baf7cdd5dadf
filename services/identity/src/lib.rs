//! The identity service: `ferrobank.identity.v1.IdentityService` on database "identity".
//!
//! Its RPCs are not built yet and answer UNIMPLEMENTED; the process, its database pool,
//! migrations, health and reflection are real.

use std::time::Duration;

use ferrobank_config::DatabaseSettings;
use ferrobank_db::Db;
use ferrobank_proto::identity::identity_service_server::{IdentityService, IdentityServiceServer};
use tokio::net::TcpListener;

mod embedded {
    refinery::embed_migrations!("../../migrations/identity");
}

/// The identity service's migrations, embedded in the binary.
pub fn migrations() -> refinery::Runner {
    embedded::migrations::runner()
}

/// The fully qualified gRPC service name.
pub const SERVICE_NAME: &str = "ferrobank.identity.v1.IdentityService";

/// The running service's state.
#[derive(Clone)]
pub struct Identity {
    db: Db,
}

impl Identity {
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
        host.add(IdentityServiceServer::new(self));
        let result = host.serve(listener, shutdown).await;
        watcher.abort();
        result
    }
}

#[tonic::async_trait]
impl IdentityService for Identity {}
