//! `ferrobank.ledger.v1.LedgerService`: authenticates each call, turns protobuf into
//! the `app` inputs and the results back, and maps `LedgerError` to a status once
//! (`impl From<LedgerError> for Status`). The only module that sees tonic or generated
//! ledger types (WatchEvents is delegated to `crate::events`).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ferrobank_auth::Principal;
use ferrobank_proto::common::ErrorReason;
use ferrobank_proto::ledger::ledger_service_server::LedgerService;
use ferrobank_proto::ledger::{self as pb, transfer_batch_result};
use ferrobank_proto::status::{self, ERROR_DOMAIN};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use uuid::Uuid;

use crate::Ledger;
use crate::app::{
    self, AccountKind, AccountListInput, AccountStatus, EntryListInput, LedgerApp, LedgerError,
    OpenAccountInput, SystemRole, TransferInput, TransferKind, TransferListInput, TransferStatus,
};
use crate::store::StatusChange;

/// The ledger gRPC service.
#[derive(Clone)]
pub struct LedgerApi {
    ledger: Ledger,
    app: Arc<LedgerApp>,
}

impl LedgerApi {
    /// Wraps the shared state and the use cases (shared with reporting).
    pub fn new(ledger: Ledger, app: Arc<LedgerApp>) -> Self {
        Self { ledger, app }
    }

    async fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        self.ledger
            .auth
            .authenticate_request(request.metadata(), request.extensions())
            .await
    }
}

// ---------------------------------------------------------------------------
// Errors: the one mapping from LedgerError to a status.
// ---------------------------------------------------------------------------

fn meta<const N: usize>(pairs: [(&str, String); N]) -> Vec<(String, String)> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// A status about one field with a reason other than INVALID_FIELD: ErrorInfo (with
/// `field` and `extra` metadata) plus a BadRequest violation naming the field.
fn field_status(
    code: Code,
    reason: ErrorReason,
    field: &str,
    message: String,
    extra: Vec<(String, String)>,
) -> Status {
    let mut info = vec![("field".to_owned(), field.to_owned())];
    info.extend(extra);
    let mut details = ErrorDetails::with_error_info(
        reason.as_str_name(),
        ERROR_DOMAIN,
        info.into_iter()
            .collect::<std::collections::HashMap<_, _>>(),
    );
    details.add_bad_request_violation(field, message.clone());
    Status::with_error_details(code, format!("{field}: {message}"), details)
}

impl From<LedgerError> for Status {
    fn from(err: LedgerError) -> Self {
        use ErrorReason as R;
        let message = err.to_string();
        match err {
            LedgerError::InvalidField { field, message } => status::invalid_field(&field, message),
            LedgerError::InvalidPageToken => field_status(
                Code::InvalidArgument,
                R::InvalidPageToken,
                "page_token",
                "is malformed or was issued for a different query; start again without it".into(),
                Vec::new(),
            ),
            LedgerError::RequestIdReused { request_id } => status::error_with_metadata(
                Code::InvalidArgument,
                R::RequestIdReused,
                message,
                meta([("request_id", request_id.to_string())]),
            ),
            LedgerError::UnknownCurrency { field, currency } => field_status(
                Code::InvalidArgument,
                R::UnknownCurrency,
                &field,
                format!("unknown currency {currency}; see ListCurrencies"),
                meta([("currency_code", currency)]),
            ),
            LedgerError::SameAccount { field } => field_status(
                Code::InvalidArgument,
                R::SameAccount,
                &field,
                "the debit and credit accounts must differ".into(),
                Vec::new(),
            ),
            LedgerError::Forbidden { action } => {
                status::error(Code::PermissionDenied, R::PermissionDenied, action)
            }
            // Identical for a missing account and someone else's: code, reason,
            // message (built from the id the caller sent) and metadata.
            LedgerError::AccountAccessDenied { account } => status::error_with_metadata(
                Code::PermissionDenied,
                R::PermissionDenied,
                message,
                meta([("account_id", account.to_string())]),
            ),
            LedgerError::TransferAccessDenied { transfer } => status::error_with_metadata(
                Code::PermissionDenied,
                R::PermissionDenied,
                message,
                meta([("transfer_id", transfer.to_string())]),
            ),
            LedgerError::AccountNotFound { account } => status::error_with_metadata(
                Code::NotFound,
                R::AccountNotFound,
                message,
                meta([("account_id", account.to_string())]),
            ),
            LedgerError::TransferNotFound { transfer } => status::error_with_metadata(
                Code::NotFound,
                R::TransferNotFound,
                message,
                meta([("transfer_id", transfer.to_string())]),
            ),
            LedgerError::InsufficientFunds {
                account,
                available,
                requested,
            } => status::error_with_metadata(
                Code::FailedPrecondition,
                R::InsufficientFunds,
                message,
                meta([
                    ("account_id", account.to_string()),
                    ("available", available.to_string()),
                    ("requested", requested.to_string()),
                ]),
            ),
            LedgerError::AccountFrozen { account } => status::error_with_metadata(
                Code::FailedPrecondition,
                R::AccountFrozen,
                message,
                meta([("account_id", account.to_string())]),
            ),
            LedgerError::AccountClosed { account } => status::error_with_metadata(
                Code::FailedPrecondition,
                R::AccountClosed,
                message,
                meta([("account_id", account.to_string())]),
            ),
            LedgerError::CurrencyMismatch { expected, actual } => status::error_with_metadata(
                Code::FailedPrecondition,
                R::CurrencyMismatch,
                message,
                meta([("expected", expected), ("actual", actual)]),
            ),
            LedgerError::AmountOverflow { account } => status::error_with_metadata(
                Code::FailedPrecondition,
                R::AmountOverflow,
                message,
                meta([("account_id", account.to_string())]),
            ),
            LedgerError::TransferNotPending { transfer, status } => status::error_with_metadata(
                Code::FailedPrecondition,
                R::TransferNotPending,
                message,
                meta([("transfer_id", transfer.to_string()), ("status", status)]),
            ),
            LedgerError::TransferExpired { transfer } => status::error_with_metadata(
                Code::FailedPrecondition,
                R::TransferExpired,
                message,
                meta([("transfer_id", transfer.to_string())]),
            ),
            LedgerError::AmountExceedsPending {
                transfer,
                pending_amount,
                requested,
            } => status::error_with_metadata(
                Code::FailedPrecondition,
                R::AmountExceedsPending,
                message,
                meta([
                    ("transfer_id", transfer.to_string()),
                    ("pending_amount", pending_amount.to_string()),
                    ("requested", requested.to_string()),
                ]),
            ),
            LedgerError::AccountNotEmpty { account } => status::error_with_metadata(
                Code::FailedPrecondition,
                R::AccountNotEmpty,
                message,
                meta([("account_id", account.to_string())]),
            ),
            LedgerError::SystemAccount { account } => status::error_with_metadata(
                Code::PermissionDenied,
                R::PermissionDenied,
                message,
                meta([("account_id", account.to_string())]),
            ),
            LedgerError::AlreadyExists { field, .. } => status::error_with_metadata(
                Code::AlreadyExists,
                R::AlreadyExists,
                message,
                meta([("field", field.to_owned())]),
            ),
            LedgerError::BatchMemberFailed { failed_index } => status::error_with_metadata(
                Code::Aborted,
                R::BatchMemberFailed,
                message,
                meta([("failed_index", failed_index.to_string())]),
            ),
            LedgerError::ReplicaLagging { lsn } => status::error_with_metadata(
                Code::Unavailable,
                R::ReplicaLagging,
                message,
                meta([("consistency_token", lsn)]),
            ),
            LedgerError::Store(e) => e.into(),
            LedgerError::Internal(cause) => {
                tracing::error!(error = %cause, "internal ledger error");
                status::error(Code::Internal, R::Internal, "internal error")
            }
        }
    }
}

/// A batch member's failure as the proto's TransferError: the same reason, message
/// and field the member would have failed with on its own.
fn member_error(err: LedgerError) -> pb::TransferError {
    let status = Status::from(err);
    let info = status.get_details_error_info();
    let reason = info
        .as_ref()
        .and_then(|i| ErrorReason::from_str_name(&i.reason))
        .unwrap_or(ErrorReason::Internal);
    let field = info
        .and_then(|i| i.metadata.get("field").cloned())
        .unwrap_or_default();
    pb::TransferError {
        reason: reason as i32,
        message: status.message().to_owned(),
        field,
    }
}

// ---------------------------------------------------------------------------
// Conversions.
// ---------------------------------------------------------------------------

pub(super) fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub(super) fn opt_id(id: Option<Uuid>) -> String {
    id.map(|i| i.to_string()).unwrap_or_default()
}

fn account_pb(a: app::Account) -> pb::Account {
    pb::Account {
        id: a.id.to_string(),
        owner_id: opt_id(a.owner_id),
        currency_code: a.currency,
        kind: match a.kind {
            AccountKind::Customer => pb::AccountKind::Customer,
            AccountKind::System => pb::AccountKind::System,
        } as i32,
        system_role: match a.system_role {
            None => pb::SystemRole::Unspecified,
            Some(SystemRole::CashVault) => pb::SystemRole::CashVault,
            Some(SystemRole::ExternalClearing) => pb::SystemRole::ExternalClearing,
            Some(SystemRole::Fees) => pb::SystemRole::Fees,
        } as i32,
        status: match a.status {
            AccountStatus::Active => pb::AccountStatus::Active,
            AccountStatus::Frozen => pb::AccountStatus::Frozen,
            AccountStatus::Closed => pb::AccountStatus::Closed,
        } as i32,
        // Not stored by the SQL schema (no columns for them).
        status_reason: String::new(),
        label: String::new(),
        overdraft_limit: a.overdraft_limit,
        posted_balance: a.balance,
        pending_debits: a.pending_debits,
        pending_credits: a.pending_credits,
        available_balance: a.available,
        version: a.version,
        create_time: Some(ts(a.created_at)),
        update_time: Some(ts(a.updated_at)),
    }
}

fn transfer_status_pb(s: TransferStatus) -> pb::TransferStatus {
    match s {
        TransferStatus::Pending => pb::TransferStatus::Pending,
        TransferStatus::Posted => pb::TransferStatus::Posted,
        TransferStatus::Voided => pb::TransferStatus::Voided,
        TransferStatus::Expired => pb::TransferStatus::Expired,
    }
}

fn transfer_pb(t: app::Transfer) -> pb::Transfer {
    pb::Transfer {
        id: t.id.to_string(),
        kind: match t.kind {
            TransferKind::Direct => pb::TransferKind::Direct,
            TransferKind::Hold => pb::TransferKind::Hold,
            TransferKind::Posting => pb::TransferKind::Posting,
        } as i32,
        status: transfer_status_pb(t.status) as i32,
        debit_account_id: t.debit_account_id.to_string(),
        credit_account_id: t.credit_account_id.to_string(),
        amount: t.amount,
        currency_code: t.currency,
        pending_id: opt_id(t.pending_id),
        posted_amount: t.posted_amount,
        expire_time: t.expires_at.map(ts),
        description: t.description,
        metadata: t.labels.into_iter().collect(),
        request_id: opt_id(t.request_id),
        create_time: Some(ts(t.created_at)),
        update_time: Some(ts(t.updated_at)),
    }
}

fn entry_pb(e: app::Entry) -> pb::Entry {
    pb::Entry {
        id: e.id.to_string(),
        account_id: e.account_id.to_string(),
        transfer_id: e.transfer_id.to_string(),
        counterparty_account_id: opt_id(e.counterparty),
        amount: e.amount,
        balance_after: e.balance_after,
        currency_code: e.currency,
        create_time: Some(ts(e.created_at)),
    }
}

fn transfer_input(spec: pb::TransferSpec) -> TransferInput {
    TransferInput {
        debit_account_id: spec.debit_account_id,
        credit_account_id: spec.credit_account_id,
        amount: spec.amount,
        currency_code: spec.currency_code,
        pending: spec.pending,
        timeout: spec.timeout.map(|d| (d.seconds, d.nanos)),
        description: spec.description,
        labels: spec.metadata.into_iter().collect::<BTreeMap<_, _>>(),
    }
}

pub(super) fn timestamp_in(
    field: &str,
    t: Option<prost_types::Timestamp>,
) -> Result<Option<DateTime<Utc>>, LedgerError> {
    t.map(|t| app::validate::timestamp(field, t.seconds, t.nanos))
        .transpose()
}

fn unknown_enum(field: &str) -> LedgerError {
    LedgerError::InvalidField {
        field: field.to_owned(),
        message: "is not a known value".to_owned(),
    }
}

fn account_status_in(field: &str, v: i32) -> Result<Option<AccountStatus>, LedgerError> {
    match pb::AccountStatus::try_from(v) {
        Ok(pb::AccountStatus::Unspecified) => Ok(None),
        Ok(pb::AccountStatus::Active) => Ok(Some(AccountStatus::Active)),
        Ok(pb::AccountStatus::Frozen) => Ok(Some(AccountStatus::Frozen)),
        Ok(pb::AccountStatus::Closed) => Ok(Some(AccountStatus::Closed)),
        Err(_) => Err(unknown_enum(field)),
    }
}

fn account_kind_in(field: &str, v: i32) -> Result<Option<AccountKind>, LedgerError> {
    match pb::AccountKind::try_from(v) {
        Ok(pb::AccountKind::Unspecified) => Ok(None),
        Ok(pb::AccountKind::Customer) => Ok(Some(AccountKind::Customer)),
        Ok(pb::AccountKind::System) => Ok(Some(AccountKind::System)),
        Err(_) => Err(unknown_enum(field)),
    }
}

fn system_role_in(field: &str, v: i32) -> Result<Option<SystemRole>, LedgerError> {
    match pb::SystemRole::try_from(v) {
        Ok(pb::SystemRole::Unspecified) => Ok(None),
        Ok(pb::SystemRole::CashVault) => Ok(Some(SystemRole::CashVault)),
        Ok(pb::SystemRole::ExternalClearing) => Ok(Some(SystemRole::ExternalClearing)),
        Ok(pb::SystemRole::Fees) => Ok(Some(SystemRole::Fees)),
        Err(_) => Err(unknown_enum(field)),
    }
}

fn transfer_status_in(field: &str, v: i32) -> Result<Option<TransferStatus>, LedgerError> {
    match pb::TransferStatus::try_from(v) {
        Ok(pb::TransferStatus::Unspecified) => Ok(None),
        Ok(pb::TransferStatus::Pending) => Ok(Some(TransferStatus::Pending)),
        Ok(pb::TransferStatus::Posted) => Ok(Some(TransferStatus::Posted)),
        Ok(pb::TransferStatus::Voided) => Ok(Some(TransferStatus::Voided)),
        Ok(pb::TransferStatus::Expired) => Ok(Some(TransferStatus::Expired)),
        Err(_) => Err(unknown_enum(field)),
    }
}

impl LedgerApi {
    async fn set_status(
        &self,
        principal: &Principal,
        change: StatusChange,
        request_id: &str,
        account_id: &str,
        reason: &str,
    ) -> Result<(pb::Account, String), Status> {
        let w = self
            .app
            .change_status(principal, change, request_id, account_id, reason)
            .await?;
        Ok((account_pb(w.value), w.consistency_token))
    }
}

#[tonic::async_trait]
impl LedgerService for LedgerApi {
    async fn open_account(
        &self,
        request: Request<pb::OpenAccountRequest>,
    ) -> Result<Response<pb::OpenAccountResponse>, Status> {
        let p = self.principal(&request).await?;
        let r = request.into_inner();
        let input = OpenAccountInput {
            request_id: r.request_id,
            owner_id: r.owner_id,
            currency_code: r.currency_code,
            kind: account_kind_in("kind", r.kind)?,
            system_role: system_role_in("system_role", r.system_role)?,
            overdraft_limit: r.overdraft_limit,
            label: r.label,
        };
        let w = self.app.open_account(&p, input).await?;
        Ok(Response::new(pb::OpenAccountResponse {
            account: Some(account_pb(w.value)),
            consistency_token: w.consistency_token,
        }))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
        let p = self.principal(&request).await?;
        let account = self
            .app
            .get_account(&p, &request.get_ref().account_id)
            .await?;
        Ok(Response::new(pb::GetAccountResponse {
            account: Some(account_pb(account)),
        }))
    }

    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let p = self.principal(&request).await?;
        let r = request.into_inner();
        let input = AccountListInput {
            page_size: r.page_size,
            page_token: r.page_token,
            owner_id: r.owner_id,
            status: account_status_in("status", r.status)?,
            currency_code: r.currency_code,
            kind: account_kind_in("kind", r.kind)?,
            system_role: system_role_in("system_role", r.system_role)?,
        };
        let page = self.app.list_accounts(&p, input).await?;
        Ok(Response::new(pb::ListAccountsResponse {
            accounts: page.items.into_iter().map(account_pb).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn freeze_account(
        &self,
        request: Request<pb::FreezeAccountRequest>,
    ) -> Result<Response<pb::FreezeAccountResponse>, Status> {
        let p = self.principal(&request).await?;
        let r = request.get_ref();
        let (account, consistency_token) = self
            .set_status(
                &p,
                StatusChange::Freeze,
                &r.request_id,
                &r.account_id,
                &r.reason,
            )
            .await?;
        Ok(Response::new(pb::FreezeAccountResponse {
            account: Some(account),
            consistency_token,
        }))
    }

    async fn unfreeze_account(
        &self,
        request: Request<pb::UnfreezeAccountRequest>,
    ) -> Result<Response<pb::UnfreezeAccountResponse>, Status> {
        let p = self.principal(&request).await?;
        let r = request.get_ref();
        let (account, consistency_token) = self
            .set_status(
                &p,
                StatusChange::Unfreeze,
                &r.request_id,
                &r.account_id,
                &r.reason,
            )
            .await?;
        Ok(Response::new(pb::UnfreezeAccountResponse {
            account: Some(account),
            consistency_token,
        }))
    }

    async fn close_account(
        &self,
        request: Request<pb::CloseAccountRequest>,
    ) -> Result<Response<pb::CloseAccountResponse>, Status> {
        let p = self.principal(&request).await?;
        let r = request.get_ref();
        let (account, consistency_token) = self
            .set_status(
                &p,
                StatusChange::Close,
                &r.request_id,
                &r.account_id,
                &r.reason,
            )
            .await?;
        Ok(Response::new(pb::CloseAccountResponse {
            account: Some(account),
            consistency_token,
        }))
    }

    async fn create_transfer(
        &self,
        request: Request<pb::CreateTransferRequest>,
    ) -> Result<Response<pb::CreateTransferResponse>, Status> {
        let p = self.principal(&request).await?;
        let r = request.into_inner();
        let Some(spec) = r.transfer else {
            return Err(status::invalid_field("transfer", "is required"));
        };
        let w = self
            .app
            .create_transfer(&p, &r.request_id, &transfer_input(spec))
            .await?;
        Ok(Response::new(pb::CreateTransferResponse {
            transfer: Some(transfer_pb(w.value)),
            consistency_token: w.consistency_token,
            ledger_time: w.ledger_time.map(ts),
        }))
    }

    async fn post_pending_transfer(
        &self,
        request: Request<pb::PostPendingTransferRequest>,
    ) -> Result<Response<pb::PostPendingTransferResponse>, Status> {
        let p = self.principal(&request).await?;
        let r = request.get_ref();
        let w = self
            .app
            .post_pending(&p, &r.request_id, &r.pending_id, r.amount, &r.description)
            .await?;
        let (posting, hold) = w.value;
        Ok(Response::new(pb::PostPendingTransferResponse {
            transfer: Some(transfer_pb(posting)),
            pending_transfer: Some(transfer_pb(hold)),
            consistency_token: w.consistency_token,
            ledger_time: w.ledger_time.map(ts),
        }))
    }

    async fn void_pending_transfer(
        &self,
        request: Request<pb::VoidPendingTransferRequest>,
    ) -> Result<Response<pb::VoidPendingTransferResponse>, Status> {
        let p = self.principal(&request).await?;
        let r = request.get_ref();
        let w = self
            .app
            .void_pending(&p, &r.request_id, &r.pending_id)
            .await?;
        Ok(Response::new(pb::VoidPendingTransferResponse {
            pending_transfer: Some(transfer_pb(w.value)),
            consistency_token: w.consistency_token,
            ledger_time: w.ledger_time.map(ts),
        }))
    }

    async fn create_transfer_batch(
        &self,
        request: Request<pb::CreateTransferBatchRequest>,
    ) -> Result<Response<pb::CreateTransferBatchResponse>, Status> {
        let p = self.principal(&request).await?;
        let r = request.into_inner();
        let inputs: Vec<TransferInput> = r.transfers.into_iter().map(transfer_input).collect();
        let w = self
            .app
            .create_batch(&p, &r.request_id, &inputs, r.linked)
            .await?;
        let results = w
            .value
            .results
            .into_iter()
            .map(|res| pb::TransferBatchResult {
                outcome: Some(match res {
                    Ok(t) => transfer_batch_result::Outcome::Transfer(transfer_pb(t)),
                    Err(e) => transfer_batch_result::Outcome::Error(member_error(e)),
                }),
            })
            .collect();
        Ok(Response::new(pb::CreateTransferBatchResponse {
            results,
            consistency_token: w.consistency_token,
            ledger_time: w.ledger_time.map(ts),
        }))
    }

    async fn get_transfer(
        &self,
        request: Request<pb::GetTransferRequest>,
    ) -> Result<Response<pb::GetTransferResponse>, Status> {
        let p = self.principal(&request).await?;
        let t = self
            .app
            .get_transfer(&p, &request.get_ref().transfer_id)
            .await?;
        Ok(Response::new(pb::GetTransferResponse {
            transfer: Some(transfer_pb(t)),
        }))
    }

    async fn list_transfers(
        &self,
        request: Request<pb::ListTransfersRequest>,
    ) -> Result<Response<pb::ListTransfersResponse>, Status> {
        let p = self.principal(&request).await?;
        let r = request.into_inner();
        let input = TransferListInput {
            page_size: r.page_size,
            page_token: r.page_token,
            account_id: r.account_id,
            start: timestamp_in("start_time", r.start_time)?,
            end: timestamp_in("end_time", r.end_time)?,
            status: transfer_status_in("status", r.status)?,
        };
        let page = self.app.list_transfers(&p, input).await?;
        Ok(Response::new(pb::ListTransfersResponse {
            transfers: page.items.into_iter().map(transfer_pb).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn list_entries(
        &self,
        request: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        let p = self.principal(&request).await?;
        let r = request.into_inner();
        let input = EntryListInput {
            page_size: r.page_size,
            page_token: r.page_token,
            account_id: r.account_id,
            start: timestamp_in("start_time", r.start_time)?,
            end: timestamp_in("end_time", r.end_time)?,
        };
        let page = self.app.list_entries(&p, input).await?;
        Ok(Response::new(pb::ListEntriesResponse {
            entries: page.items.into_iter().map(entry_pb).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn get_balance(
        &self,
        request: Request<pb::GetBalanceRequest>,
    ) -> Result<Response<pb::GetBalanceResponse>, Status> {
        let p = self.principal(&request).await?;
        let r = request.into_inner();
        let as_of = timestamp_in("as_of_time", r.as_of_time)?;
        let b = self.app.get_balance(&p, &r.account_id, as_of).await?;
        Ok(Response::new(pb::GetBalanceResponse {
            account_id: b.account_id.to_string(),
            currency_code: b.currency,
            posted_balance: b.posted,
            pending_debits: b.pending_debits,
            pending_credits: b.pending_credits,
            available_balance: b.available,
            as_of_time: Some(ts(b.as_of)),
        }))
    }

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<crate::events::EventStream>, Status> {
        let principal = self.principal(&request).await?;
        crate::events::watch(&self.ledger, principal, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_currencies(
        &self,
        request: Request<pb::ListCurrenciesRequest>,
    ) -> Result<Response<pb::ListCurrenciesResponse>, Status> {
        self.principal(&request).await?;
        let r = request.get_ref();
        let page = self.app.list_currencies(r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListCurrenciesResponse {
            currencies: page
                .items
                .into_iter()
                .map(|c| pb::Currency {
                    code: c.code,
                    minor_units: i32::from(c.minor_units),
                    name: c.name,
                })
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }
}
