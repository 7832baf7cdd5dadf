//! GetStatement: an account's statement for a period, read on the reporting pool
//! (the replica, or the primary per the configured fallback). Opening balance, totals
//! and one page of lines come from one SQL statement, so from one snapshot; balances
//! and totals cover the whole period on every page.
//!
//! Paging (AIP-158): the token binds the account, `start_time` and `end_time` as
//! asked, and carries the position and the period's end. When `end_time` is unset the
//! first page resolves it to now (to the microsecond, the database's precision) and
//! every later page reuses that instant from the token, so all pages describe the
//! same period and a client sees the same `end_time` on each. `page_size` and
//! `consistency_token` may change between pages. Pages are read live: a write
//! committed between two pages with a time inside the period (only possible near a
//! resolved "now", or while the replica lags) shows up in the later pages' lines and
//! totals; a client that needs one consistent view passes an explicit `end_time` in
//! the past.

use chrono::{DateTime, TimeDelta, Utc};
use ferrobank_auth::Principal;
use ferrobank_db::{DataSource, ReportingPool};
use uuid::Uuid;

use crate::store::{ReadClock, StatementQuery, Store};

use super::LedgerApp;
use super::error::{LedgerError, LedgerResult};
use super::model::entry_id;
use super::page_token::{self, Position};
use super::validate::{self, invalid};

/// Largest statement page (reporting.proto: larger values are treated as this).
pub const MAX_STATEMENT_PAGE_SIZE: i64 = 500;

/// GetStatement as asked; timestamps decoded, the consistency token checked for shape.
#[derive(Clone, Debug, Default)]
pub struct StatementInput {
    pub page_size: i32,
    pub page_token: String,
    pub account_id: String,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    /// A WAL position `X/Y` from a ledger mutation, if given.
    pub consistency_token: Option<String>,
}

/// One page of a statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    pub account_id: Uuid,
    pub currency: String,
    pub start: DateTime<Utc>,
    /// The period's end: as asked, or the "now" the first page resolved.
    pub end: DateTime<Utc>,
    pub opening_balance: i64,
    /// opening_balance - total_debits + total_credits.
    pub closing_balance: i64,
    /// Sum of the period's debits, positive.
    pub total_debits: i64,
    pub total_credits: i64,
    /// Oldest first.
    pub lines: Vec<StatementLine>,
    /// Empty on the last page.
    pub next_page_token: String,
    pub freshness: Freshness,
}

/// One entry on a statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementLine {
    /// The same id ListEntries gives the entry.
    pub entry_id: Uuid,
    pub transfer_id: Uuid,
    pub counterparty: Option<Uuid>,
    /// Signed: negative for a debit.
    pub amount: i64,
    /// The account's posted balance right after this entry.
    pub running_balance: i64,
    /// The transfer's description (empty if it has none).
    pub description: String,
    pub created_at: DateTime<Utc>,
}

/// Where a report was read and how fresh it is (reporting.proto `DataFreshness`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freshness {
    pub source: DataSource,
    /// The report holds every commit up to at least this instant; None when a standby
    /// has not replayed any transaction since it started.
    pub as_of: Option<DateTime<Utc>>,
    /// How long before the read `as_of` was; zero for a live read.
    pub staleness: Option<TimeDelta>,
}

impl Freshness {
    /// From a replica still in recovery: the commit time of the last replayed
    /// transaction, read before the report's snapshot was taken. Anything else (the
    /// primary, or a "replica" that is no longer a standby) is a live read.
    pub fn of(source: DataSource, clock: &ReadClock) -> Self {
        if source == DataSource::Replica && clock.in_recovery {
            Self {
                source,
                as_of: clock.replayed_at,
                staleness: clock
                    .replayed_at
                    .map(|at| (clock.read_at - at).max(TimeDelta::zero())),
            }
        } else {
            Self {
                source,
                as_of: Some(clock.read_at),
                staleness: Some(TimeDelta::zero()),
            }
        }
    }
}

fn from_micros(us: i64) -> LedgerResult<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us).ok_or(LedgerError::InvalidPageToken)
}

impl LedgerApp {
    /// A page of `account_id`'s statement. Customers may read their own accounts only
    /// (refused exactly as ListEntries refuses them); reads go to `reporting`.
    pub async fn statement(
        &self,
        p: &Principal,
        reporting: &ReportingPool,
        input: StatementInput,
    ) -> LedgerResult<Statement> {
        let account = validate::uuid("account_id", &input.account_id)?;
        let start = input
            .start
            .ok_or_else(|| invalid("start_time", "is required"))?;
        if input.end.is_some_and(|end| end <= start) {
            return Err(invalid("end_time", "must be after start_time"));
        }
        let limit = validate::page_size("page_size", input.page_size)?.min(MAX_STATEMENT_PAGE_SIZE);
        // The period as asked: an unset end stays unset here (the token carries the
        // instant the first page resolved it to).
        let query = format!("statement|{account}|{start:?}|{:?}", input.end);
        let (end, after) = match page_token::decode(&input.page_token, &query)? {
            None => {
                let end = match input.end {
                    Some(end) => end,
                    None => {
                        let now = from_micros(Utc::now().timestamp_micros())?;
                        if now <= start {
                            return Err(invalid(
                                "start_time",
                                "must be in the past when end_time is unset (it means now)",
                            ));
                        }
                        now
                    }
                };
                (end, (start, i64::MIN))
            }
            Some(Position::Statement { at_us, seq, end_us }) => {
                let end = match input.end {
                    Some(end) => end,
                    None => from_micros(end_us)?,
                };
                let at = from_micros(at_us)?;
                // Tokens are not signed: one edited to point outside the period is refused.
                if at < start || end <= start {
                    return Err(LedgerError::InvalidPageToken);
                }
                (end, (at, seq))
            }
            Some(_) => return Err(LedgerError::InvalidPageToken),
        };
        // Ownership is checked on the primary, as for ListEntries: the same answer for
        // someone else's account and a missing one, and an account opened a moment ago
        // is the caller's even if the replica has not replayed it yet.
        let currency = self.readable_account(p, account).await?.currency;

        let q = StatementQuery {
            account,
            start,
            end,
            after,
            limit: limit + 1,
        };
        let (rows, source) =
            reporting
                .read_after(
                    input.consistency_token.as_deref(),
                    |lsn| LedgerError::ReplicaLagging {
                        lsn: lsn.to_owned(),
                    },
                    |conn, source| {
                        let q = &q;
                        async move {
                            Store::statement(&conn, reporting.statement_cache(source), q).await
                        }
                    },
                )
                .await?;

        let overflow = || {
            LedgerError::Internal(format!(
                "statement totals of account {account} overflow int64"
            ))
        };
        let total_debits = rows.total_debits.ok_or_else(overflow)?;
        let total_credits = rows.total_credits.ok_or_else(overflow)?;
        // In i128 three int64 values cannot overflow; the result must fit int64.
        let closing =
            i128::from(rows.opening_balance) - i128::from(total_debits) + i128::from(total_credits);
        let closing_balance = i64::try_from(closing).map_err(|_| overflow())?;

        let mut lines = rows.lines;
        let keep = usize::try_from(limit).unwrap_or(usize::MAX);
        let next_page_token = if lines.len() > keep {
            lines.truncate(keep);
            match lines.last() {
                Some(last) => page_token::encode(
                    &query,
                    Position::Statement {
                        at_us: last.created_at.timestamp_micros(),
                        seq: last.seq,
                        end_us: end.timestamp_micros(),
                    },
                ),
                None => String::new(),
            }
        } else {
            String::new()
        };
        Ok(Statement {
            account_id: account,
            currency,
            start,
            end,
            opening_balance: rows.opening_balance,
            closing_balance,
            total_debits,
            total_credits,
            lines: lines
                .into_iter()
                .map(|l| StatementLine {
                    entry_id: entry_id(l.account_id, l.seq, l.created_at),
                    transfer_id: l.transfer_id,
                    counterparty: l.counterparty,
                    amount: l.amount,
                    running_balance: l.balance_after,
                    description: l.description.unwrap_or_default(),
                    created_at: l.created_at,
                })
                .collect(),
            next_page_token,
            freshness: Freshness::of(source, &rows.clock),
        })
    }
}
