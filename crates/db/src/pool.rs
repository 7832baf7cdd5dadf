//! Builds deadpool-postgres pools from typed settings. Pools connect lazily, so a
//! process starts even while a database is down and answers UNAVAILABLE until it is back.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use ferrobank_config::{PgUrl, PoolSettings};
use tokio_postgres::NoTls;

use crate::StoreError;

/// A pool for `settings`, every connection tagged with its `application_name`.
pub fn build_pool(settings: &PoolSettings) -> Result<Pool, StoreError> {
    let mut config = settings.url.config().clone();
    config.application_name(&settings.application_name);
    config.connect_timeout(settings.connect_timeout);
    // Fast recycling only checks the connection is open. `Clean` runs DISCARD ALL-like
    // statements that break behind a transaction-mode pooler.
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(settings.max_size)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(settings.connect_timeout))
        .wait_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| StoreError::Internal(Box::new(e)))
}

/// One connection that bypasses any pooler (migrations, advisory locks, LISTEN).
/// The connection task runs in the background until the client is dropped.
pub async fn connect_direct(
    url: &PgUrl,
    application_name: &str,
) -> Result<tokio_postgres::Client, StoreError> {
    let mut config = url.config().clone();
    config.application_name(application_name);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "direct postgres connection closed");
        }
    });
    Ok(client)
}
