//! `LedgerError`: every way a ledger use case fails, named for what the caller can do
//! about it and carrying the data a client needs. Mapped to gRPC once, in `api`.

use ferrobank_db::StoreError;
use uuid::Uuid;

/// Why a ledger request failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A request field is missing, malformed or out of range (`field` is its path).
    #[error("{field}: {message}")]
    InvalidField { field: String, message: String },
    /// The page token is garbled, or was issued for another query.
    #[error("the page token is malformed or was issued for a different query")]
    InvalidPageToken,
    /// The request_id was recorded before with another payload.
    #[error("request_id {request_id} was used before with a different request")]
    RequestIdReused { request_id: Uuid },
    /// The currency code is well formed but not supported.
    #[error("{field}: unknown currency {currency}")]
    UnknownCurrency { field: String, currency: String },
    /// Debit and credit name the same account.
    #[error("{field}: the debit and credit accounts must differ")]
    SameAccount { field: String },
    /// The caller's role may not do this at all.
    #[error("{action}")]
    Forbidden { action: &'static str },
    /// The caller may not use this account, or it does not exist: deliberately the
    /// same for both, so a customer learns nothing about other people's accounts.
    #[error("account {account} does not exist or you may not use it")]
    AccountAccessDenied { account: Uuid },
    /// As `AccountAccessDenied`, for a transfer.
    #[error("transfer {transfer} does not exist or you may not see it")]
    TransferAccessDenied { transfer: Uuid },
    /// The account does not exist (said only to callers who may see every account).
    #[error("account {account} does not exist")]
    AccountNotFound { account: Uuid },
    /// The transfer does not exist (said only to callers who may see it).
    #[error("transfer {transfer} does not exist")]
    TransferNotFound { transfer: Uuid },
    /// The debit would take a customer account below its floor.
    #[error(
        "account {account} has insufficient funds: {available} available including overdraft, {requested} requested"
    )]
    InsufficientFunds {
        account: Uuid,
        /// Available balance plus overdraft limit, before this request.
        available: i64,
        requested: i64,
    },
    /// The account is frozen.
    #[error("account {account} is frozen")]
    AccountFrozen { account: Uuid },
    /// The account is closed.
    #[error("account {account} is closed")]
    AccountClosed { account: Uuid },
    /// The accounts, or an account and the request, are in different currencies.
    #[error("currency mismatch: expected {expected}, got {actual}")]
    CurrencyMismatch { expected: String, actual: String },
    /// A balance would leave the int64 range.
    #[error("a balance of account {account} would overflow")]
    AmountOverflow { account: Uuid },
    /// Post or void of a transfer that is not a pending hold.
    #[error("transfer {transfer} is not pending (it is {status})")]
    TransferNotPending { transfer: Uuid, status: String },
    /// Post or void after the hold's timeout.
    #[error("transfer {transfer} has expired")]
    TransferExpired { transfer: Uuid },
    /// Partial post above the held amount.
    #[error("transfer {transfer} holds {pending_amount}; cannot post {requested}")]
    AmountExceedsPending {
        transfer: Uuid,
        pending_amount: i64,
        requested: i64,
    },
    /// Close with a balance or holds left.
    #[error("account {account} still has a balance or pending amounts")]
    AccountNotEmpty { account: Uuid },
    /// Close of a system account.
    #[error("system account {account} cannot be closed")]
    SystemAccount { account: Uuid },
    /// The resource exists already (an account id, a system account for a role).
    #[error("{field}: {message}")]
    AlreadyExists {
        field: &'static str,
        message: String,
    },
    /// A linked batch member that was valid but not applied because another failed.
    #[error("not applied: member {failed_index} of the linked batch failed")]
    BatchMemberFailed { failed_index: usize },
    /// The reporting replica had not replayed the request's consistency token within
    /// the wait bound, and falling back to the primary is turned off.
    #[error("the reporting replica has not replayed consistency token {lsn} yet; retry later")]
    ReplicaLagging { lsn: String },
    /// The database failed (classified once in `StoreError`).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug or a broken invariant (e.g. a reason the SQL should never return).
    #[error("internal error: {0}")]
    Internal(String),
}

/// The result of a ledger use case.
pub type LedgerResult<T> = Result<T, LedgerError>;
