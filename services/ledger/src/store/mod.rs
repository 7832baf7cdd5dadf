//! The ledger's store: runs the SQL in [`sql`] (the ledger's SQL functions for every
//! write, plain keyset queries for reads), one round trip each, and decodes the rows
//! into plain types. It knows nothing of gRPC, principals or validation, and fails
//! only with [`StoreError`].

pub mod batch;
pub mod sql;

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use ferrobank_db::{Db, Object, Row, StoreError, ToSql, Type, retry_conflicts};
use uuid::Uuid;

/// A typed statement parameter (the shape `Db::query` takes).
type Param<'a> = (&'a (dyn ToSql + Sync), Type);

/// How often a call refused with 40001/40P01 is retried before ABORTED. The SQL
/// functions raise 40001 only when a request_id is recorded concurrently; the retry
/// then replays the recorded outcome, so one retry nearly always suffices.
const CONFLICT_ATTEMPTS: u32 = 5;

/// The ledger's database access.
#[derive(Clone)]
pub struct Store {
    db: Db,
}

/// A mutation's result with the consistency token: the WAL insert position read
/// right after the mutation's transaction committed.
#[derive(Clone, Debug)]
pub struct Committed<T> {
    /// What the SQL function returned.
    pub value: T,
    /// `pg_current_wal_insert_lsn()` after the commit, as text (`X/Y`).
    pub lsn: String,
}

/// One `ledger.transfer_result` row: `status` is `ok` or a failure reason.
#[derive(Clone, Debug, PartialEq)]
pub struct TransferOutcome {
    pub request_id: Option<Uuid>,
    pub status: String,
    pub failed_account_id: Option<Uuid>,
    pub transfer_id: Option<Uuid>,
    pub transfer_status: Option<String>,
    pub debit_account_id: Option<Uuid>,
    pub credit_account_id: Option<Uuid>,
    pub currency: Option<String>,
    pub amount: Option<i64>,
    pub posted_amount: Option<i64>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub debit_balance: Option<i64>,
    pub debit_available: Option<i64>,
    pub credit_balance: Option<i64>,
    pub credit_available: Option<i64>,
    pub replayed: bool,
    /// The transfer's stored metadata, where the statement joins it in (post/void).
    pub metadata: Option<serde_json::Value>,
}

/// One `ledger.account_result` row: `status` is `ok` or a failure reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountOutcome {
    pub request_id: Option<Uuid>,
    pub status: String,
    pub account_id: Option<Uuid>,
    pub owner_id: Option<Uuid>,
    pub currency: Option<String>,
    pub kind: Option<String>,
    pub system_role: Option<String>,
    pub account_status: Option<String>,
    pub overdraft_limit: Option<i64>,
    pub balance: Option<i64>,
    pub pending_debits: Option<i64>,
    pub pending_credits: Option<i64>,
    pub available: Option<i64>,
    pub version: Option<i64>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub replayed: bool,
}

/// An account as stored, with the database clock at the read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRow {
    pub id: Uuid,
    pub owner_id: Option<Uuid>,
    pub currency: String,
    pub kind: String,
    pub system_role: Option<String>,
    pub status: String,
    pub overdraft_limit: i64,
    pub balance: i64,
    pub pending_debits: i64,
    pub pending_credits: i64,
    pub available: i64,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub read_at: DateTime<Utc>,
}

/// A transfer as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct TransferRow {
    pub id: Uuid,
    pub debit_account_id: Uuid,
    pub credit_account_id: Uuid,
    pub currency: String,
    pub amount: i64,
    pub posted_amount: i64,
    pub status: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub metadata: Option<serde_json::Value>,
}

/// A transfer with the owners of its two accounts (None: system account or missing).
#[derive(Clone, Debug, PartialEq)]
pub struct TransferWithOwners {
    pub transfer: TransferRow,
    pub debit_owner: Option<Uuid>,
    pub credit_owner: Option<Uuid>,
}

/// One journal entry with its counterparty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryRow {
    pub account_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub seq: i64,
    pub amount: i64,
    pub balance_after: i64,
    pub transfer_id: Uuid,
    pub counterparty: Option<Uuid>,
    pub currency: Option<String>,
}

/// A supported currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrencyRow {
    pub code: String,
    pub minor_units: i16,
    pub name: String,
}

/// A system account (the bank's own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemAccountRow {
    pub id: Uuid,
    pub currency: String,
    pub role: String,
}

/// Balances of an account at an instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BalanceAsOf {
    pub posted: i64,
    pub pending_debits: i64,
    pub pending_credits: i64,
}

/// One member of `create_transfer(s)`.
#[derive(Clone, Debug, PartialEq)]
pub struct NewTransfer {
    pub request_id: Uuid,
    pub id: Uuid,
    pub debit_account_id: Uuid,
    pub credit_account_id: Uuid,
    pub amount: i64,
    pub currency: String,
    pub pending: bool,
    pub timeout_ms: Option<i64>,
    pub metadata: serde_json::Value,
    pub owner_scope: Option<Uuid>,
    pub actor: Uuid,
}

/// Filters of an account listing; `None` = any. Strings are the SQL values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountFilter {
    pub owner: Option<Uuid>,
    pub status: Option<String>,
    pub currency: Option<String>,
    pub kind: Option<String>,
    pub system_role: Option<String>,
}

/// Bounds of a transfer listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferQuery {
    pub account: Option<Uuid>,
    /// Only ids >= this (prunes partitions; derived from `from`).
    pub id_from: Uuid,
    /// Only ids < this: the last id seen, or a bound just past now.
    pub id_before: Uuid,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub status: Option<String>,
    pub limit: i64,
}

/// Bounds of an entry listing (newest first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryQuery {
    pub account: Uuid,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Only entries before this (created_at, seq).
    pub before: (DateTime<Utc>, i64),
    pub limit: i64,
}

/// One page of a statement (lines oldest first) over the period [start, end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementQuery {
    pub account: Uuid,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Only lines after this (created_at, seq): (start, i64::MIN) on the first page.
    pub after: (DateTime<Utc>, i64),
    pub limit: i64,
}

/// The reading server's clock and replay position just before a report was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadClock {
    /// Whether the server is a standby.
    pub in_recovery: bool,
    /// Commit time of the last transaction replayed (standby only).
    pub replayed_at: Option<DateTime<Utc>>,
    /// The server's clock.
    pub read_at: DateTime<Utc>,
}

/// One statement line: an entry with its transfer's counterparty and description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementLineRow {
    pub account_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub seq: i64,
    pub amount: i64,
    pub balance_after: i64,
    pub transfer_id: Uuid,
    pub counterparty: Option<Uuid>,
    pub description: Option<String>,
}

/// A statement page as read from one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementRows {
    pub clock: ReadClock,
    pub opening_balance: i64,
    /// Sum of the period's debits as a positive number; None if it overflows int64.
    pub total_debits: Option<i64>,
    /// Sum of the period's credits; None if it overflows int64.
    pub total_credits: Option<i64>,
    /// At most `limit` lines.
    pub lines: Vec<StatementLineRow>,
}

/// The smallest UUID whose UUIDv7 timestamp is at or after `at` (Rust twin of
/// `ledger.uuid_v7_floor`): id bounds for time ranges on the transfers table.
pub fn uuid_v7_floor(at: SystemTime) -> Uuid {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let mut millis = since.as_millis();
    if !since.subsec_nanos().is_multiple_of(1_000_000) {
        millis = millis.saturating_add(1);
    }
    let millis = millis.min((1u128 << 48) - 1);
    Uuid::from_u128(millis << 80)
}

/// An id bound just past anything that exists now (ids are refused more than 10
/// minutes from the database clock), so listings skip the empty future partitions.
pub fn uuid_v7_horizon() -> Uuid {
    uuid_v7_floor(SystemTime::now() + Duration::from_secs(11 * 60))
}

impl Store {
    /// Wraps the primary pool.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Runs a mutation and, pipelined behind it on the same connection (no extra wait
    /// for a round trip), reads the WAL insert position. Both are sent before either
    /// answer is awaited; each is its own implicit transaction, executed in order, so
    /// the position is read after the mutation committed. Retries 40001/40P01.
    async fn mutate(
        &self,
        statement: &str,
        params: &[Param<'_>],
    ) -> Result<(Vec<Row>, String), StoreError> {
        retry_conflicts(CONFLICT_ATTEMPTS, || async move {
            let conn = self.db.conn().await?;
            let (rows, lsn) = if self.db.statement_cache() {
                let types: Vec<Type> = params.iter().map(|(_, t)| t.clone()).collect();
                let stmt = conn.prepare_typed_cached(statement, &types).await?;
                let lsn_stmt = conn.prepare_typed_cached(sql::WAL_INSERT_LSN, &[]).await?;
                let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(v, _)| *v).collect();
                // try_join polls in order: the mutation is sent first.
                futures::try_join!(conn.query(&stmt, &values), conn.query(&lsn_stmt, &[]))?
            } else {
                futures::try_join!(
                    conn.query_typed(statement, params),
                    conn.query_typed(sql::WAL_INSERT_LSN, &[])
                )?
            };
            let lsn = match lsn.first() {
                Some(row) => row.try_get::<_, String>(0)?,
                None => return Err(StoreError::NotFound),
            };
            Ok((rows, lsn))
        })
        .await
    }

    async fn mutate_one<T>(
        &self,
        statement: &str,
        params: &[Param<'_>],
        decode: fn(&Row) -> Result<T, StoreError>,
    ) -> Result<Committed<T>, StoreError> {
        let (rows, lsn) = self.mutate(statement, params).await?;
        let row = rows.first().ok_or(StoreError::NotFound)?;
        Ok(Committed {
            value: decode(row)?,
            lsn,
        })
    }

    /// `ledger.create_transfer`: one transfer, one round trip.
    pub async fn create_transfer(
        &self,
        t: &NewTransfer,
    ) -> Result<Committed<TransferOutcome>, StoreError> {
        let currency = Some(t.currency.as_str());
        let params: [Param<'_>; 11] = [
            (&t.request_id, Type::UUID),
            (&t.id, Type::UUID),
            (&t.debit_account_id, Type::UUID),
            (&t.credit_account_id, Type::UUID),
            (&t.amount, Type::INT8),
            (&currency, Type::TEXT),
            (&t.pending, Type::BOOL),
            (&t.timeout_ms, Type::INT8),
            (&t.metadata, Type::JSONB),
            (&t.owner_scope, Type::UUID),
            (&t.actor, Type::UUID),
        ];
        self.mutate_one(sql::CREATE_TRANSFER, &params, transfer_outcome)
            .await
    }

    /// `ledger.create_transfers`: a batch (1..1000 members) in one call; one outcome per
    /// member, in input order.
    pub async fn create_transfers(
        &self,
        linked: bool,
        members: &[NewTransfer],
    ) -> Result<Committed<Vec<TransferOutcome>>, StoreError> {
        let request_ids: Vec<Uuid> = members.iter().map(|m| m.request_id).collect();
        let ids: Vec<Uuid> = members.iter().map(|m| m.id).collect();
        let debits: Vec<Uuid> = members.iter().map(|m| m.debit_account_id).collect();
        let credits: Vec<Uuid> = members.iter().map(|m| m.credit_account_id).collect();
        let amounts: Vec<i64> = members.iter().map(|m| m.amount).collect();
        let currencies: Vec<&str> = members.iter().map(|m| m.currency.as_str()).collect();
        let pending: Vec<bool> = members.iter().map(|m| m.pending).collect();
        let timeouts: Vec<Option<i64>> = members.iter().map(|m| m.timeout_ms).collect();
        let metadata: Vec<&serde_json::Value> = members.iter().map(|m| &m.metadata).collect();
        let scopes: Vec<Option<Uuid>> = members.iter().map(|m| m.owner_scope).collect();
        let actors: Vec<Uuid> = members.iter().map(|m| m.actor).collect();
        let params: [Param<'_>; 12] = [
            (&linked, Type::BOOL),
            (&request_ids, Type::UUID_ARRAY),
            (&ids, Type::UUID_ARRAY),
            (&debits, Type::UUID_ARRAY),
            (&credits, Type::UUID_ARRAY),
            (&amounts, Type::INT8_ARRAY),
            (&currencies, Type::TEXT_ARRAY),
            (&pending, Type::BOOL_ARRAY),
            (&timeouts, Type::INT8_ARRAY),
            (&metadata, Type::JSONB_ARRAY),
            (&scopes, Type::UUID_ARRAY),
            (&actors, Type::UUID_ARRAY),
        ];
        let (rows, lsn) = self.mutate(sql::CREATE_TRANSFERS, &params).await?;
        let value = rows
            .iter()
            .map(transfer_outcome)
            .collect::<Result<_, _>>()?;
        Ok(Committed { value, lsn })
    }

    /// `ledger.post_pending`: `amount` None posts the whole hold.
    pub async fn post_pending(
        &self,
        request_id: Uuid,
        transfer_id: Uuid,
        amount: Option<i64>,
        owner_scope: Option<Uuid>,
        actor: Uuid,
    ) -> Result<Committed<TransferOutcome>, StoreError> {
        let params: [Param<'_>; 5] = [
            (&request_id, Type::UUID),
            (&transfer_id, Type::UUID),
            (&amount, Type::INT8),
            (&owner_scope, Type::UUID),
            (&actor, Type::UUID),
        ];
        self.mutate_one(sql::POST_PENDING, &params, resolved_outcome)
            .await
    }

    /// `ledger.void_pending`.
    pub async fn void_pending(
        &self,
        request_id: Uuid,
        transfer_id: Uuid,
        owner_scope: Option<Uuid>,
        actor: Uuid,
    ) -> Result<Committed<TransferOutcome>, StoreError> {
        let params: [Param<'_>; 4] = [
            (&request_id, Type::UUID),
            (&transfer_id, Type::UUID),
            (&owner_scope, Type::UUID),
            (&actor, Type::UUID),
        ];
        self.mutate_one(sql::VOID_PENDING, &params, resolved_outcome)
            .await
    }

    /// `ledger.open_account` (customer accounts).
    pub async fn open_account(
        &self,
        request_id: Uuid,
        id: Uuid,
        owner: Uuid,
        currency: &str,
        overdraft_limit: i64,
        actor: Uuid,
    ) -> Result<Committed<AccountOutcome>, StoreError> {
        let params: [Param<'_>; 6] = [
            (&request_id, Type::UUID),
            (&id, Type::UUID),
            (&owner, Type::UUID),
            (&currency, Type::TEXT),
            (&overdraft_limit, Type::INT8),
            (&actor, Type::UUID),
        ];
        self.mutate_one(sql::OPEN_ACCOUNT, &params, account_outcome)
            .await
    }

    /// `ledger.freeze_account` / `unfreeze_account` / `close_account`.
    pub async fn set_account_status(
        &self,
        change: StatusChange,
        request_id: Uuid,
        account: Uuid,
        owner_scope: Option<Uuid>,
        actor: Uuid,
    ) -> Result<Committed<AccountOutcome>, StoreError> {
        let statement = match change {
            StatusChange::Freeze => sql::FREEZE_ACCOUNT,
            StatusChange::Unfreeze => sql::UNFREEZE_ACCOUNT,
            StatusChange::Close => sql::CLOSE_ACCOUNT,
        };
        let params: [Param<'_>; 4] = [
            (&request_id, Type::UUID),
            (&account, Type::UUID),
            (&owner_scope, Type::UUID),
            (&actor, Type::UUID),
        ];
        self.mutate_one(statement, &params, account_outcome).await
    }

    /// One account, if it exists.
    pub async fn get_account(&self, id: Uuid) -> Result<Option<AccountRow>, StoreError> {
        let row = self
            .db
            .query_opt(sql::GET_ACCOUNT, &[(&id, Type::UUID)])
            .await?;
        row.as_ref().map(account_row).transpose()
    }

    /// A page of accounts, keyset on id after `after`.
    pub async fn list_accounts(
        &self,
        filter: &AccountFilter,
        after: Uuid,
        limit: i64,
    ) -> Result<Vec<AccountRow>, StoreError> {
        let rows = match (&filter.owner, &filter.status) {
            (Some(owner), status) => {
                self.db
                    .query(
                        sql::LIST_ACCOUNTS_BY_OWNER,
                        &[
                            (owner, Type::UUID),
                            (status, Type::TEXT),
                            (&filter.currency, Type::TEXT),
                            (&filter.kind, Type::TEXT),
                            (&filter.system_role, Type::TEXT),
                            (&after, Type::UUID),
                            (&limit, Type::INT8),
                        ],
                    )
                    .await?
            }
            (None, Some(status)) => {
                self.db
                    .query(
                        sql::LIST_ACCOUNTS_BY_STATUS,
                        &[
                            (status, Type::TEXT),
                            (&filter.currency, Type::TEXT),
                            (&filter.kind, Type::TEXT),
                            (&filter.system_role, Type::TEXT),
                            (&after, Type::UUID),
                            (&limit, Type::INT8),
                        ],
                    )
                    .await?
            }
            (None, None) => {
                self.db
                    .query(
                        sql::LIST_ACCOUNTS_ALL,
                        &[
                            (&filter.currency, Type::TEXT),
                            (&filter.kind, Type::TEXT),
                            (&filter.system_role, Type::TEXT),
                            (&after, Type::UUID),
                            (&limit, Type::INT8),
                        ],
                    )
                    .await?
            }
        };
        rows.iter().map(account_row).collect()
    }

    /// Every currency (reference data).
    pub async fn all_currencies(&self) -> Result<Vec<CurrencyRow>, StoreError> {
        let rows = self.db.query(sql::LIST_ALL_CURRENCIES, &[]).await?;
        rows.iter().map(currency_row).collect()
    }

    /// A page of currencies after `after` (by code).
    pub async fn list_currencies(
        &self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<CurrencyRow>, StoreError> {
        let rows = self
            .db
            .query(
                sql::LIST_CURRENCIES,
                &[(&after, Type::TEXT), (&limit, Type::INT8)],
            )
            .await?;
        rows.iter().map(currency_row).collect()
    }

    /// Every system account.
    pub async fn system_accounts(&self) -> Result<Vec<SystemAccountRow>, StoreError> {
        let rows = self.db.query(sql::LIST_SYSTEM_ACCOUNTS, &[]).await?;
        rows.iter()
            .map(|r| {
                Ok(SystemAccountRow {
                    id: r.try_get("id")?,
                    currency: r.try_get("currency")?,
                    role: r.try_get("system_role")?,
                })
            })
            .collect()
    }

    /// One transfer with its accounts' owners, if it exists.
    pub async fn get_transfer(&self, id: Uuid) -> Result<Option<TransferWithOwners>, StoreError> {
        let row = self
            .db
            .query_opt(sql::GET_TRANSFER, &[(&id, Type::UUID)])
            .await?;
        row.map(|r| {
            Ok(TransferWithOwners {
                transfer: transfer_row(&r)?,
                debit_owner: r.try_get("debit_owner")?,
                credit_owner: r.try_get("credit_owner")?,
            })
        })
        .transpose()
    }

    /// A page of transfers, newest first.
    pub async fn list_transfers(&self, q: &TransferQuery) -> Result<Vec<TransferRow>, StoreError> {
        let rows = match &q.account {
            Some(account) => {
                self.db
                    .query(
                        sql::LIST_TRANSFERS_OF_ACCOUNT,
                        &[
                            (account, Type::UUID),
                            (&q.id_from, Type::UUID),
                            (&q.id_before, Type::UUID),
                            (&q.from, Type::TIMESTAMPTZ),
                            (&q.to, Type::TIMESTAMPTZ),
                            (&q.status, Type::TEXT),
                            (&q.limit, Type::INT8),
                        ],
                    )
                    .await?
            }
            None => {
                self.db
                    .query(
                        sql::LIST_TRANSFERS_ALL,
                        &[
                            (&q.id_from, Type::UUID),
                            (&q.id_before, Type::UUID),
                            (&q.from, Type::TIMESTAMPTZ),
                            (&q.to, Type::TIMESTAMPTZ),
                            (&q.status, Type::TEXT),
                            (&q.limit, Type::INT8),
                        ],
                    )
                    .await?
            }
        };
        rows.iter().map(transfer_row).collect()
    }

    /// A page of an account's entries, newest first.
    pub async fn list_entries(&self, q: &EntryQuery) -> Result<Vec<EntryRow>, StoreError> {
        let rows = self
            .db
            .query(
                sql::LIST_ENTRIES,
                &[
                    (&q.account, Type::UUID),
                    (&q.from, Type::TIMESTAMPTZ),
                    (&q.to, Type::TIMESTAMPTZ),
                    (&q.before.0, Type::TIMESTAMPTZ),
                    (&q.before.1, Type::INT8),
                    (&q.limit, Type::INT8),
                ],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(EntryRow {
                    account_id: r.try_get("account_id")?,
                    created_at: r.try_get("created_at")?,
                    seq: r.try_get("seq")?,
                    amount: r.try_get("amount")?,
                    balance_after: r.try_get("balance_after")?,
                    transfer_id: r.try_get("transfer_id")?,
                    counterparty: r.try_get("counterparty")?,
                    currency: r.try_get("currency")?,
                })
            })
            .collect()
    }

    /// One statement page on a reporting connection `conn` (replica or primary; not
    /// the store's own pool): the server's clock and replay position, then
    /// [`sql::STATEMENT`], both sent before either answer is awaited (one round trip
    /// once the statements are cached). The clock is read first, so the statement's
    /// snapshot holds at least everything replayed by then.
    pub async fn statement(
        conn: &Object,
        statement_cache: bool,
        q: &StatementQuery,
    ) -> Result<StatementRows, StoreError> {
        let params: [Param<'_>; 6] = [
            (&q.account, Type::UUID),
            (&q.start, Type::TIMESTAMPTZ),
            (&q.end, Type::TIMESTAMPTZ),
            (&q.after.0, Type::TIMESTAMPTZ),
            (&q.after.1, Type::INT8),
            (&q.limit, Type::INT8),
        ];
        let (clock, rows) = if statement_cache {
            let clock_stmt = conn.prepare_typed_cached(sql::READ_CLOCK, &[]).await?;
            let types: Vec<Type> = params.iter().map(|(_, t)| t.clone()).collect();
            let stmt = conn.prepare_typed_cached(sql::STATEMENT, &types).await?;
            let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(v, _)| *v).collect();
            // try_join polls in order: the clock is read first.
            futures::try_join!(conn.query(&clock_stmt, &[]), conn.query(&stmt, &values))?
        } else {
            futures::try_join!(
                conn.query_typed(sql::READ_CLOCK, &[]),
                conn.query_typed(sql::STATEMENT, &params)
            )?
        };
        let clock = clock.first().ok_or(StoreError::NotFound)?;
        let clock = ReadClock {
            in_recovery: clock.try_get("in_recovery")?,
            replayed_at: clock.try_get("replayed_at")?,
            read_at: clock.try_get("read_at")?,
        };
        let first = rows.first().ok_or(StoreError::NotFound)?;
        let mut lines = Vec::with_capacity(rows.len());
        for r in &rows {
            // The one row of an empty page has no line.
            let Some(created_at) = r.try_get::<_, Option<DateTime<Utc>>>("created_at")? else {
                continue;
            };
            lines.push(StatementLineRow {
                account_id: q.account,
                created_at,
                seq: r.try_get("seq")?,
                amount: r.try_get("amount")?,
                balance_after: r.try_get("balance_after")?,
                transfer_id: r.try_get("transfer_id")?,
                counterparty: r.try_get("counterparty")?,
                description: r.try_get("description")?,
            });
        }
        Ok(StatementRows {
            clock,
            opening_balance: first.try_get("opening_balance")?,
            total_debits: first.try_get("total_debits")?,
            total_credits: first.try_get("total_credits")?,
            lines,
        })
    }

    /// Balances of `account` as of `at`.
    pub async fn balance_as_of(
        &self,
        account: Uuid,
        at: DateTime<Utc>,
    ) -> Result<BalanceAsOf, StoreError> {
        let horizon = uuid_v7_floor(SystemTime::from(at) + Duration::from_secs(11 * 60));
        let row = self
            .db
            .query_one(
                sql::BALANCE_AS_OF,
                &[
                    (&account, Type::UUID),
                    (&at, Type::TIMESTAMPTZ),
                    (&horizon, Type::UUID),
                ],
            )
            .await?;
        Ok(BalanceAsOf {
            posted: row.try_get("posted")?,
            pending_debits: row.try_get("pending_debits")?,
            pending_credits: row.try_get("pending_credits")?,
        })
    }
}

/// Which status change `set_account_status` makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusChange {
    Freeze,
    Unfreeze,
    Close,
}

fn transfer_outcome(r: &Row) -> Result<TransferOutcome, StoreError> {
    Ok(TransferOutcome {
        request_id: r.try_get("request_id")?,
        status: r
            .try_get::<_, Option<String>>("status")?
            .unwrap_or_default(),
        failed_account_id: r.try_get("failed_account_id")?,
        transfer_id: r.try_get("transfer_id")?,
        transfer_status: r.try_get("transfer_status")?,
        debit_account_id: r.try_get("debit_account_id")?,
        credit_account_id: r.try_get("credit_account_id")?,
        currency: r.try_get("currency")?,
        amount: r.try_get("amount")?,
        posted_amount: r.try_get("posted_amount")?,
        expires_at: r.try_get("expires_at")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        debit_balance: r.try_get("debit_balance")?,
        debit_available: r.try_get("debit_available")?,
        credit_balance: r.try_get("credit_balance")?,
        credit_available: r.try_get("credit_available")?,
        replayed: r.try_get::<_, Option<bool>>("replayed")?.unwrap_or(false),
        metadata: None,
    })
}

fn resolved_outcome(r: &Row) -> Result<TransferOutcome, StoreError> {
    let mut outcome = transfer_outcome(r)?;
    outcome.metadata = r.try_get("metadata")?;
    Ok(outcome)
}

fn account_outcome(r: &Row) -> Result<AccountOutcome, StoreError> {
    Ok(AccountOutcome {
        request_id: r.try_get("request_id")?,
        status: r
            .try_get::<_, Option<String>>("status")?
            .unwrap_or_default(),
        account_id: r.try_get("account_id")?,
        owner_id: r.try_get("owner_id")?,
        currency: r.try_get("currency")?,
        kind: r.try_get("kind")?,
        system_role: r.try_get("system_role")?,
        account_status: r.try_get("account_status")?,
        overdraft_limit: r.try_get("overdraft_limit")?,
        balance: r.try_get("balance")?,
        pending_debits: r.try_get("pending_debits")?,
        pending_credits: r.try_get("pending_credits")?,
        available: r.try_get("available")?,
        version: r.try_get("version")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        replayed: r.try_get::<_, Option<bool>>("replayed")?.unwrap_or(false),
    })
}

fn account_row(r: &Row) -> Result<AccountRow, StoreError> {
    Ok(AccountRow {
        id: r.try_get("id")?,
        owner_id: r.try_get("owner_id")?,
        currency: r.try_get("currency")?,
        kind: r.try_get("kind")?,
        system_role: r.try_get("system_role")?,
        status: r.try_get("status")?,
        overdraft_limit: r.try_get("overdraft_limit")?,
        balance: r.try_get("balance")?,
        pending_debits: r.try_get("pending_debits")?,
        pending_credits: r.try_get("pending_credits")?,
        available: r.try_get("available")?,
        version: r.try_get("version")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        read_at: r.try_get("read_at")?,
    })
}

fn transfer_row(r: &Row) -> Result<TransferRow, StoreError> {
    Ok(TransferRow {
        id: r.try_get("id")?,
        debit_account_id: r.try_get("debit_account_id")?,
        credit_account_id: r.try_get("credit_account_id")?,
        currency: r.try_get("currency")?,
        amount: r.try_get("amount")?,
        posted_amount: r.try_get("posted_amount")?,
        status: r.try_get("status")?,
        expires_at: r.try_get("expires_at")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        metadata: r.try_get("metadata")?,
    })
}

fn currency_row(r: &Row) -> Result<CurrencyRow, StoreError> {
    Ok(CurrencyRow {
        code: r.try_get("code")?,
        minor_units: r.try_get("minor_units")?,
        name: r.try_get("name")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Rust id floor matches the SQL one: millisecond timestamp in the top 48
    /// bits, rounded up, everything else zero.
    #[test]
    fn uuid_floor_rounds_up_to_the_millisecond() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(uuid_v7_floor(at).as_u128() >> 80, 1_700_000_000_123);
        let later = at + Duration::from_micros(1);
        assert_eq!(uuid_v7_floor(later).as_u128() >> 80, 1_700_000_000_124);
        assert_eq!(uuid_v7_floor(at).as_u128() & ((1u128 << 80) - 1), 0);
    }
}
