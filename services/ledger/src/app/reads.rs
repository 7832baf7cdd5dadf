//! Read use cases: transfers (one, or a page), an account's journal, balances now or
//! as of a past instant.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use ferrobank_auth::{Principal, Role};
use uuid::Uuid;

use crate::store::{EntryQuery, TransferQuery, uuid_v7_floor, uuid_v7_horizon};

use super::accounts::next_token;
use super::error::{LedgerError, LedgerResult};
use super::model::{Balance, Entry, Page, Transfer, TransferStatus};
use super::page_token::{self, Position};
use super::validate::{self, invalid};
use super::{LedgerApp, reads_any};

/// How far a transfer's id time may be from its created_at (the SQL refuses ids more
/// than 10 minutes off its clock): id bounds derived from a time range are widened by
/// this much, and created_at is then filtered exactly.
const ID_SKEW: Duration = Duration::from_secs(11 * 60);

/// ListTransfers as asked; timestamps already decoded.
#[derive(Clone, Debug, Default)]
pub struct TransferListInput {
    pub page_size: i32,
    pub page_token: String,
    pub account_id: String,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub status: Option<TransferStatus>,
}

/// ListEntries as asked.
#[derive(Clone, Debug, Default)]
pub struct EntryListInput {
    pub page_size: i32,
    pub page_token: String,
    pub account_id: String,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

fn check_range(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> LedgerResult<()> {
    match (start, end) {
        (Some(s), Some(e)) if e < s => Err(invalid("end_time", "must not be before start_time")),
        _ => Ok(()),
    }
}

impl LedgerApp {
    /// One transfer; customers see only transfers touching an account they own.
    pub async fn get_transfer(&self, p: &Principal, id: &str) -> LedgerResult<Transfer> {
        let id = validate::uuid("transfer_id", id)?;
        let found = self.store.get_transfer(id).await?;
        match found {
            Some(t)
                if reads_any(p)
                    || t.debit_owner == Some(p.user_id)
                    || t.credit_owner == Some(p.user_id) =>
            {
                Transfer::from_row(t.transfer)
            }
            None if reads_any(p) => Err(LedgerError::TransferNotFound { transfer: id }),
            _ => Err(LedgerError::TransferAccessDenied { transfer: id }),
        }
    }

    /// A page of transfers, newest first.
    pub async fn list_transfers(
        &self,
        p: &Principal,
        input: TransferListInput,
    ) -> LedgerResult<Page<Transfer>> {
        let limit = validate::page_size("page_size", input.page_size)?;
        let account = validate::optional_uuid("account_id", &input.account_id)?;
        check_range(input.start, input.end)?;
        match account {
            Some(id) => {
                self.readable_account(p, id).await?;
            }
            None if p.role == Role::Customer => {
                return Err(invalid("account_id", "is required (one of your accounts)"));
            }
            None => {}
        }
        let query = format!(
            "transfers|{account:?}|{:?}|{:?}|{:?}",
            input.start, input.end, input.status
        );
        let id_before = match page_token::decode(&input.page_token, &query)? {
            None => match input.end {
                Some(end) => uuid_v7_floor(SystemTime::from(end) + ID_SKEW),
                None => uuid_v7_horizon(),
            },
            Some(Position::Transfer { before }) => before,
            Some(_) => return Err(LedgerError::InvalidPageToken),
        };
        let id_from = match input.start {
            Some(start) => uuid_v7_floor(
                SystemTime::from(start)
                    .checked_sub(ID_SKEW)
                    .unwrap_or(SystemTime::UNIX_EPOCH),
            ),
            None => Uuid::nil(),
        };
        let rows = self
            .store
            .list_transfers(&TransferQuery {
                account,
                id_from,
                id_before,
                from: input.start,
                to: input.end,
                status: input.status.map(|s| s.as_sql().to_owned()),
                limit: limit + 1,
            })
            .await?;
        let mut items = rows
            .into_iter()
            .map(Transfer::from_row)
            .collect::<LedgerResult<Vec<_>>>()?;
        let next_page_token = next_token(&mut items, limit, |t| {
            page_token::encode(&query, Position::Transfer { before: t.id })
        });
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// A page of an account's journal, newest first, with the balance after each entry.
    pub async fn list_entries(
        &self,
        p: &Principal,
        input: EntryListInput,
    ) -> LedgerResult<Page<Entry>> {
        let limit = validate::page_size("page_size", input.page_size)?;
        let account = validate::uuid("account_id", &input.account_id)?;
        check_range(input.start, input.end)?;
        self.readable_account(p, account).await?;
        let query = format!("entries|{account}|{:?}|{:?}", input.start, input.end);
        let from = input.start.unwrap_or(DateTime::UNIX_EPOCH);
        // Entries are stamped by the database clock; a day ahead covers any skew.
        let to = input
            .end
            .unwrap_or_else(|| Utc::now() + chrono::Duration::days(1));
        let before = match page_token::decode(&input.page_token, &query)? {
            None => (to, i64::MAX),
            Some(Position::Entry { at_us, seq }) => {
                let at =
                    DateTime::from_timestamp_micros(at_us).ok_or(LedgerError::InvalidPageToken)?;
                (at, seq)
            }
            Some(_) => return Err(LedgerError::InvalidPageToken),
        };
        let rows = self
            .store
            .list_entries(&EntryQuery {
                account,
                from,
                to,
                before,
                limit: limit + 1,
            })
            .await?;
        let mut cursor = Vec::with_capacity(rows.len());
        let mut items = Vec::with_capacity(rows.len());
        for r in rows {
            cursor.push((r.created_at.timestamp_micros(), r.seq));
            items.push(Entry::from_row(r));
        }
        let next_page_token = if items.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
            let keep = items.len() - 1;
            items.truncate(keep);
            let (at_us, seq) = cursor[keep - 1];
            page_token::encode(&query, Position::Entry { at_us, seq })
        } else {
            String::new()
        };
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// An account's balances now, or as of a past instant.
    pub async fn get_balance(
        &self,
        p: &Principal,
        account: &str,
        as_of: Option<DateTime<Utc>>,
    ) -> LedgerResult<Balance> {
        let id = validate::uuid("account_id", account)?;
        if as_of.is_some_and(|t| t > Utc::now()) {
            return Err(invalid("as_of_time", "must not be in the future"));
        }
        let account = self.readable_account(p, id).await?;
        let Some(at) = as_of else {
            return Ok(Balance {
                account_id: id,
                currency: account.currency,
                posted: account.balance,
                pending_debits: account.pending_debits,
                pending_credits: account.pending_credits,
                available: account.available,
                as_of: account.updated_at.max(Utc::now()),
            });
        };
        let b = self.store.balance_as_of(id, at).await?;
        let available = b
            .posted
            .checked_sub(b.pending_debits)
            .ok_or_else(|| LedgerError::Internal("available balance overflows".into()))?;
        Ok(Balance {
            account_id: id,
            currency: account.currency,
            posted: b.posted,
            pending_debits: b.pending_debits,
            pending_credits: b.pending_credits,
            available,
            as_of: at,
        })
    }
}
