//! The ledger's domain types as the use cases hand them to `api`: accounts, transfers,
//! entries, balances, and the transfer metadata stored as JSON next to each transfer.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::{AccountOutcome, AccountRow, EntryRow, TransferOutcome, TransferRow};

use super::error::{LedgerError, LedgerResult};

/// Customer or system account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountKind {
    Customer,
    System,
}

/// What a system account is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SystemRole {
    CashVault,
    ExternalClearing,
    Fees,
}

/// Lifecycle of an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountStatus {
    Active,
    Frozen,
    Closed,
}

/// Where a transfer is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferStatus {
    Pending,
    Posted,
    Voided,
    Expired,
}

/// How a transfer came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferKind {
    /// Posted at once.
    Direct,
    /// Created pending.
    Hold,
    /// The posting of a hold. The SQL model records a posting on the hold's own row
    /// (its status and `posted_amount`), so a posting shares the hold's id.
    Posting,
}

impl AccountKind {
    /// The SQL value.
    pub fn as_sql(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::System => "system",
        }
    }
    fn from_sql(s: &str) -> LedgerResult<Self> {
        match s {
            "customer" => Ok(Self::Customer),
            "system" => Ok(Self::System),
            other => Err(LedgerError::Internal(format!(
                "unknown account kind {other}"
            ))),
        }
    }
}

impl SystemRole {
    /// The SQL value.
    pub fn as_sql(self) -> &'static str {
        match self {
            Self::CashVault => "cash_vault",
            Self::ExternalClearing => "external_clearing",
            Self::Fees => "fees",
        }
    }
    /// Parses the SQL value.
    pub fn from_sql(s: &str) -> LedgerResult<Self> {
        match s {
            "cash_vault" => Ok(Self::CashVault),
            "external_clearing" => Ok(Self::ExternalClearing),
            "fees" => Ok(Self::Fees),
            other => Err(LedgerError::Internal(format!(
                "unknown system role {other}"
            ))),
        }
    }
}

impl AccountStatus {
    /// The SQL value.
    pub fn as_sql(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Frozen => "frozen",
            Self::Closed => "closed",
        }
    }
    fn from_sql(s: &str) -> LedgerResult<Self> {
        match s {
            "active" => Ok(Self::Active),
            "frozen" => Ok(Self::Frozen),
            "closed" => Ok(Self::Closed),
            other => Err(LedgerError::Internal(format!(
                "unknown account status {other}"
            ))),
        }
    }
}

impl TransferStatus {
    /// The SQL value.
    pub fn as_sql(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Posted => "posted",
            Self::Voided => "voided",
            Self::Expired => "expired",
        }
    }
    /// Parses the SQL value.
    pub fn from_sql(s: &str) -> LedgerResult<Self> {
        match s {
            "pending" => Ok(Self::Pending),
            "posted" => Ok(Self::Posted),
            "voided" => Ok(Self::Voided),
            "expired" => Ok(Self::Expired),
            other => Err(LedgerError::Internal(format!(
                "unknown transfer status {other}"
            ))),
        }
    }
}

/// An account with its balances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub id: Uuid,
    pub owner_id: Option<Uuid>,
    pub currency: String,
    pub kind: AccountKind,
    pub system_role: Option<SystemRole>,
    pub status: AccountStatus,
    pub overdraft_limit: i64,
    pub balance: i64,
    pub pending_debits: i64,
    pub pending_credits: i64,
    pub available: i64,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Account {
    pub(crate) fn from_row(r: AccountRow) -> LedgerResult<Self> {
        Ok(Self {
            id: r.id,
            owner_id: r.owner_id,
            kind: AccountKind::from_sql(&r.kind)?,
            system_role: r
                .system_role
                .as_deref()
                .map(SystemRole::from_sql)
                .transpose()?,
            status: AccountStatus::from_sql(&r.status)?,
            currency: r.currency,
            overdraft_limit: r.overdraft_limit,
            balance: r.balance,
            pending_debits: r.pending_debits,
            pending_credits: r.pending_credits,
            available: r.available,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }

    /// The account in an `ok` account_result.
    pub(crate) fn from_outcome(o: &AccountOutcome) -> LedgerResult<Self> {
        let missing = || LedgerError::Internal("account_result ok without account".into());
        Ok(Self {
            id: o.account_id.ok_or_else(missing)?,
            owner_id: o.owner_id,
            currency: o.currency.clone().ok_or_else(missing)?,
            kind: AccountKind::from_sql(o.kind.as_deref().ok_or_else(missing)?)?,
            system_role: o
                .system_role
                .as_deref()
                .map(SystemRole::from_sql)
                .transpose()?,
            status: AccountStatus::from_sql(o.account_status.as_deref().ok_or_else(missing)?)?,
            overdraft_limit: o.overdraft_limit.ok_or_else(missing)?,
            balance: o.balance.ok_or_else(missing)?,
            pending_debits: o.pending_debits.ok_or_else(missing)?,
            pending_credits: o.pending_credits.ok_or_else(missing)?,
            available: o.available.ok_or_else(missing)?,
            version: o.version.ok_or_else(missing)?,
            created_at: o.created_at.ok_or_else(missing)?,
            updated_at: o.updated_at.ok_or_else(missing)?,
        })
    }
}

/// What the service stores in `transfers.metadata` (jsonb): what the SQL schema has no
/// column for. It is part of the SQL fingerprint, so a replay carries the same value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMetadata {
    /// The request that created the transfer (the batch's, for batch members).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Uuid>,
    /// Text for statements.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The client's key/value annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Created pending (a hold).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hold: bool,
}

impl StoredMetadata {
    /// As JSON for the database.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
    /// Parses what the database holds; anything unreadable counts as empty.
    pub fn from_json(v: Option<&serde_json::Value>) -> Self {
        v.and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }
}

/// A transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub id: Uuid,
    pub kind: TransferKind,
    pub status: TransferStatus,
    pub debit_account_id: Uuid,
    pub credit_account_id: Uuid,
    pub amount: i64,
    pub currency: String,
    /// For a posting, the hold it posts.
    pub pending_id: Option<Uuid>,
    pub posted_amount: i64,
    pub expires_at: Option<DateTime<Utc>>,
    pub description: String,
    pub labels: BTreeMap<String, String>,
    pub request_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Transfer {
    pub(crate) fn from_row(r: TransferRow) -> LedgerResult<Self> {
        let meta = StoredMetadata::from_json(r.metadata.as_ref());
        let status = TransferStatus::from_sql(&r.status)?;
        Ok(Self {
            id: r.id,
            kind: kind_of(&meta, status),
            status,
            debit_account_id: r.debit_account_id,
            credit_account_id: r.credit_account_id,
            amount: r.amount,
            currency: r.currency,
            pending_id: None,
            posted_amount: if meta.hold { r.posted_amount } else { 0 },
            expires_at: r.expires_at,
            description: meta.description,
            labels: meta.labels,
            request_id: meta.request_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }

    /// The transfer in an `ok` transfer_result; `meta` is what was stored with it.
    pub(crate) fn from_outcome(o: &TransferOutcome, meta: &StoredMetadata) -> LedgerResult<Self> {
        let missing = || LedgerError::Internal("transfer_result ok without transfer".into());
        let status = TransferStatus::from_sql(o.transfer_status.as_deref().ok_or_else(missing)?)?;
        Ok(Self {
            id: o.transfer_id.ok_or_else(missing)?,
            kind: kind_of(meta, status),
            status,
            debit_account_id: o.debit_account_id.ok_or_else(missing)?,
            credit_account_id: o.credit_account_id.ok_or_else(missing)?,
            amount: o.amount.ok_or_else(missing)?,
            currency: o.currency.clone().ok_or_else(missing)?,
            pending_id: None,
            posted_amount: if meta.hold {
                o.posted_amount.unwrap_or(0)
            } else {
                0
            },
            expires_at: o.expires_at,
            description: meta.description.clone(),
            labels: meta.labels.clone(),
            request_id: meta.request_id,
            created_at: o.created_at.ok_or_else(missing)?,
            updated_at: o.updated_at.ok_or_else(missing)?,
        })
    }

    /// The posting view of a posted hold: the money it moved.
    pub fn posting(&self) -> Self {
        Self {
            kind: TransferKind::Posting,
            status: TransferStatus::Posted,
            amount: self.posted_amount,
            pending_id: Some(self.id),
            posted_amount: 0,
            expires_at: None,
            created_at: self.updated_at,
            ..self.clone()
        }
    }
}

fn kind_of(meta: &StoredMetadata, status: TransferStatus) -> TransferKind {
    // Only holds are ever pending, voided or expired; `hold` says it for posted ones.
    if meta.hold || status != TransferStatus::Posted {
        TransferKind::Hold
    } else {
        TransferKind::Direct
    }
}

/// One journal entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// A UUIDv7 derived from the entry's key (the journal has no id column): its
    /// timestamp is the entry's, its other bits a hash of (account, seq).
    pub id: Uuid,
    pub account_id: Uuid,
    pub transfer_id: Uuid,
    pub counterparty: Option<Uuid>,
    pub amount: i64,
    pub balance_after: i64,
    pub currency: String,
    pub created_at: DateTime<Utc>,
}

impl Entry {
    pub(crate) fn from_row(r: EntryRow) -> Self {
        Self {
            id: entry_id(r.account_id, r.seq, r.created_at),
            account_id: r.account_id,
            transfer_id: r.transfer_id,
            counterparty: r.counterparty,
            amount: r.amount,
            balance_after: r.balance_after,
            currency: r.currency.unwrap_or_default(),
            created_at: r.created_at,
        }
    }
}

/// Deterministic UUIDv7 for an entry: (account, seq) is its unique key. Every RPC
/// that shows an entry (ListEntries, GetStatement) names it with this id.
pub(crate) fn entry_id(account: Uuid, seq: i64, at: DateTime<Utc>) -> Uuid {
    let hash = Uuid::new_v5(&account, &seq.to_be_bytes());
    let mut random = [0u8; 10];
    random.copy_from_slice(&hash.as_bytes()[6..16]);
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

/// Balances of an account now or at a past instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Balance {
    pub account_id: Uuid,
    pub currency: String,
    pub posted: i64,
    pub pending_debits: i64,
    pub pending_credits: i64,
    pub available: i64,
    pub as_of: DateTime<Utc>,
}

/// A supported currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Currency {
    pub code: String,
    pub minor_units: i16,
    pub name: String,
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// A mutation's result and its consistency token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written<T> {
    pub value: T,
    pub consistency_token: String,
    /// The ledger's clock at the commit, where the SQL reports it.
    pub ledger_time: Option<DateTime<Utc>>,
}
