//! Postgres access shared by every service: deadpool pools tagged with their
//! `application_name`, a client wrapper that honours the statement-cache setting,
//! SQLSTATE classification mapped once to gRPC statuses, the reporting pool with its
//! replica fallback, and advisory-locked migrations.

mod client;
mod error;
mod migrate;
mod pool;
mod reporting;

pub use client::Db;
pub use deadpool_postgres::{Object, Pool};
pub use error::{StoreError, retry_conflicts};
pub use migrate::{HISTORY_TABLE, MigrationReport, migrate, run_migrations};
pub use pool::{build_pool, connect_direct};
pub use reporting::{DataSource, ReportingPool};
pub use tokio_postgres::types::Type;
pub use tokio_postgres::{Row, types::ToSql};
