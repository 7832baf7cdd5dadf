//! `Db`: a pool plus the statement-cache setting. Every query names its parameter
//! types, so it runs either as a cached named statement (direct connections) or as one
//! unnamed `query_typed` round trip (safe behind a transaction-mode pooler).

use deadpool_postgres::{Object, Pool};
use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};

use crate::StoreError;

/// A typed query parameter.
pub type Param<'a> = (&'a (dyn ToSql + Sync), Type);

/// A primary pool and how to run statements on it.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    statement_cache: bool,
}

impl Db {
    /// Wraps `pool`; `statement_cache` must be false behind PgBouncer in transaction mode.
    pub fn new(pool: Pool, statement_cache: bool) -> Self {
        Self {
            pool,
            statement_cache,
        }
    }

    /// The underlying pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Whether named statements are cached per connection.
    pub fn statement_cache(&self) -> bool {
        self.statement_cache
    }

    /// A connection from the pool (UNAVAILABLE when none can be had in time).
    pub async fn conn(&self) -> Result<Object, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// Runs `sql` on a pooled connection and returns every row.
    pub async fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        let conn = self.conn().await?;
        query(&conn, self.statement_cache, sql, params).await
    }

    /// Runs `sql` and returns its one row, or `StoreError::NotFound`.
    pub async fn query_one(&self, sql: &str, params: &[Param<'_>]) -> Result<Row, StoreError> {
        self.query_opt(sql, params)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// Runs `sql` and returns its row if there is one.
    pub async fn query_opt(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }
}

/// Runs `sql` on `client` (a connection or a transaction) honouring `statement_cache`,
/// in a span of its own for trace export ([`ferrobank_telemetry::sql_span`]).
pub async fn query(
    client: &Object,
    statement_cache: bool,
    sql: &str,
    params: &[Param<'_>],
) -> Result<Vec<Row>, StoreError> {
    use tracing::Instrument;
    run(client, statement_cache, sql, params)
        .instrument(ferrobank_telemetry::sql_span())
        .await
}

async fn run(
    client: &Object,
    statement_cache: bool,
    sql: &str,
    params: &[Param<'_>],
) -> Result<Vec<Row>, StoreError> {
    if statement_cache {
        let types: Vec<Type> = params.iter().map(|(_, t)| t.clone()).collect();
        let stmt = client.prepare_typed_cached(sql, &types).await?;
        let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(v, _)| *v).collect();
        Ok(client.query(&stmt, &values).await?)
    } else {
        Ok(client.query_typed(sql, params).await?)
    }
}
