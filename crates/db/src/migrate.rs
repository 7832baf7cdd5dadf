//! Applies a service's embedded refinery migrations over a direct connection, holding a
//! Postgres advisory lock so two processes migrating at once apply each version once.

use ferrobank_config::PgUrl;

use crate::{StoreError, connect_direct};

/// What a migration run applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Names of the migrations applied by this run (`V1__accounts`, …), in order.
    pub applied: Vec<String>,
}

/// Runs `runner` against `url` (a direct URL, never a transaction-mode pooler) under an
/// advisory lock derived from `service`.
pub async fn migrate(
    url: &PgUrl,
    service: &str,
    runner: refinery::Runner,
) -> Result<MigrationReport, StoreError> {
    let mut client = connect_direct(url, &format!("{service}-migrate")).await?;
    let key = lock_key(service);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&key])
        .await?;
    let result = run_migrations(&mut client, runner).await;
    // Unlock even when the run failed; a dropped connection releases it as well.
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&key])
        .await;
    let report = result?;
    unlock?;
    Ok(report)
}

/// The schema-qualified history table. Unqualified, `CREATE TABLE IF NOT EXISTS` would
/// create a second one as soon as a migration creates a schema named like the role
/// (`"$user"` comes first in the default search_path), and every version would be
/// applied again.
pub const HISTORY_TABLE: &str = "public.refinery_schema_history";

/// Applies `runner` on `client` as it is (no lock; callers serialize).
pub async fn run_migrations(
    client: &mut tokio_postgres::Client,
    mut runner: refinery::Runner,
) -> Result<MigrationReport, StoreError> {
    runner.set_migration_table_name(HISTORY_TABLE);
    let report = runner
        .run_async(client)
        .await
        .map_err(|e| StoreError::Internal(Box::new(e)))?;
    Ok(MigrationReport {
        applied: report
            .applied_migrations()
            .iter()
            .map(|m| format!("V{}__{}", m.version(), m.name()))
            .collect(),
    })
}

/// A stable advisory-lock key per service (FNV-1a of a fixed prefix and the name).
fn lock_key(service: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"ferrobank-migrate:".iter().chain(service.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}
