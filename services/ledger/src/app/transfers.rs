//! Transfer use cases: create (posted or pending), batches, post and void holds. Each
//! is one SQL function call; the only extra reads happen on refusals that need detail
//! the SQL result does not carry (the overdraft limit for INSUFFICIENT_FUNDS, the
//! accounts' currencies for CURRENCY_MISMATCH).

use ferrobank_auth::{Principal, Role};
use uuid::Uuid;

use crate::store::{NewTransfer, TransferOutcome};

use super::error::{LedgerError, LedgerResult};
use super::model::{StoredMetadata, Transfer, Written};
use super::validate::{self, MAX_BATCH, TransferInput, ValidTransfer, invalid};
use super::{LedgerApp, Reference, request_id};

/// Per-member outcomes of a batch, in request order.
#[derive(Debug)]
pub struct BatchOutcome {
    pub results: Vec<Result<Transfer, LedgerError>>,
}

impl LedgerApp {
    /// Creates one transfer (posted, or a hold with a timeout).
    pub async fn create_transfer(
        &self,
        p: &Principal,
        request: &str,
        input: &TransferInput,
    ) -> LedgerResult<Written<Transfer>> {
        let rid = request_id(request)?;
        let t = validate::transfer("transfer.", input)?;
        let reference = self
            .reference_with("transfer.currency_code", &t.currency)
            .await?;
        let scope = create_scope(p, &reference, &t)?;
        let (new, meta) = new_transfer(p, rid, rid, t, scope);
        // Batched or not, the member carries the client's request id unchanged: the
        // SQL gives both paths the same fingerprint, so either replays the other.
        let out = match &self.batcher {
            Some(batcher) => batcher.create_transfer(new).await?,
            None => self.store.create_transfer(&new).await?,
        };
        let transfer = self.created(&out.value, &meta, "transfer.").await?;
        Ok(Written {
            ledger_time: Some(transfer.updated_at),
            value: transfer,
            consistency_token: out.lsn,
        })
    }

    /// Creates up to 100 transfers in one call. Each member is idempotent on its own
    /// request id, derived from the batch's and its position (UUIDv5), so a replayed
    /// batch replays member by member.
    pub async fn create_batch(
        &self,
        p: &Principal,
        request: &str,
        inputs: &[TransferInput],
        linked: bool,
    ) -> LedgerResult<Written<BatchOutcome>> {
        let rid = request_id(request)?;
        if inputs.is_empty() {
            return Err(invalid("transfers", "must have at least one member"));
        }
        if inputs.len() > MAX_BATCH {
            return Err(invalid(
                "transfers",
                format!("must have at most {MAX_BATCH} members"),
            ));
        }
        // Validate and authorize every member; only valid ones reach the SQL.
        let mut prepared: Vec<Result<(NewTransfer, StoredMetadata), LedgerError>> =
            Vec::with_capacity(inputs.len());
        for (i, input) in inputs.iter().enumerate() {
            let member = match validate::transfer("", input) {
                Ok(t) => match self.reference_with("currency_code", &t.currency).await {
                    Ok(reference) => create_scope(p, &reference, &t)
                        .map(|scope| new_transfer(p, member_request_id(rid, i), rid, t, scope)),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            prepared.push(member);
        }
        let first_invalid = prepared.iter().position(Result::is_err);
        if let (true, Some(failed_index)) = (linked, first_invalid) {
            let results = prepared
                .into_iter()
                .map(|m| match m {
                    Ok(_) => Err(LedgerError::BatchMemberFailed { failed_index }),
                    Err(e) => Err(e),
                })
                .collect();
            return Ok(Written {
                value: BatchOutcome { results },
                consistency_token: String::new(),
                ledger_time: None,
            });
        }

        let members: Vec<NewTransfer> = prepared
            .iter()
            .filter_map(|m| m.as_ref().ok().map(|(n, _)| n.clone()))
            .collect();
        let out = self.store.create_transfers(linked, &members).await?;
        if out.value.len() != members.len() {
            return Err(LedgerError::Internal(format!(
                "create_transfers returned {} results for {} members",
                out.value.len(),
                members.len()
            )));
        }
        // Positions (in the request) of the members that were sent.
        let sent: Vec<usize> = prepared
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.is_ok().then_some(i))
            .collect();
        let failed_index = out
            .value
            .iter()
            .zip(&sent)
            .find(|(o, _)| o.status != "ok" && o.status != "linked_failed")
            .map_or(0, |(_, i)| *i);
        let mut outcomes = out.value.into_iter();
        let mut results = Vec::with_capacity(prepared.len());
        let mut applied = false;
        let mut ledger_time = None;
        for member in prepared {
            let result = match member {
                Err(e) => Err(e),
                Ok((_, meta)) => {
                    let o = outcomes
                        .next()
                        .ok_or_else(|| LedgerError::Internal("missing batch result".into()))?;
                    if o.status == "linked_failed" {
                        Err(LedgerError::BatchMemberFailed { failed_index })
                    } else {
                        let r = self.created(&o, &meta, "").await;
                        if let Ok(t) = &r {
                            applied = true;
                            ledger_time = ledger_time.or(Some(t.updated_at));
                        }
                        r
                    }
                }
            };
            results.push(result);
        }
        Ok(Written {
            value: BatchOutcome { results },
            consistency_token: if applied { out.lsn } else { String::new() },
            ledger_time,
        })
    }

    /// Posts a hold, fully (`amount` 0) or in part; the rest is released. Returns the
    /// posting view and the hold.
    pub async fn post_pending(
        &self,
        p: &Principal,
        request: &str,
        pending_id: &str,
        amount: i64,
        description: &str,
    ) -> LedgerResult<Written<(Transfer, Transfer)>> {
        let rid = request_id(request)?;
        let id = validate::uuid("pending_id", pending_id)?;
        let amount = match amount {
            0 => None,
            a if a < 0 => return Err(invalid("amount", "must not be negative")),
            a => Some(a),
        };
        validate::text("description", description, 256, false)?;
        let scope = resolve_scope(p)?;
        let out = self
            .store
            .post_pending(rid, id, amount, scope, p.user_id)
            .await?;
        let hold = self.resolved(&out.value, id, amount).await?;
        Ok(Written {
            ledger_time: Some(hold.updated_at),
            value: (hold.posting(), hold),
            consistency_token: out.lsn,
        })
    }

    /// Voids a hold, releasing all of it.
    pub async fn void_pending(
        &self,
        p: &Principal,
        request: &str,
        pending_id: &str,
    ) -> LedgerResult<Written<Transfer>> {
        let rid = request_id(request)?;
        let id = validate::uuid("pending_id", pending_id)?;
        let scope = resolve_scope(p)?;
        let out = self.store.void_pending(rid, id, scope, p.user_id).await?;
        let hold = self.resolved(&out.value, id, None).await?;
        Ok(Written {
            ledger_time: Some(hold.updated_at),
            value: hold,
            consistency_token: out.lsn,
        })
    }

    /// The transfer a create call made, or the failure it reports.
    async fn created(
        &self,
        o: &TransferOutcome,
        meta: &StoredMetadata,
        prefix: &str,
    ) -> LedgerResult<Transfer> {
        if o.status == "ok" {
            return Transfer::from_outcome(o, meta);
        }
        Err(self.refusal(o, prefix, None).await)
    }

    /// The hold a post/void resolved, or the failure it reports.
    async fn resolved(
        &self,
        o: &TransferOutcome,
        id: Uuid,
        requested: Option<i64>,
    ) -> LedgerResult<Transfer> {
        if o.status == "ok" {
            let meta = StoredMetadata::from_json(o.metadata.as_ref());
            return Transfer::from_outcome(o, &meta);
        }
        if o.status == "permission_denied" {
            return Err(LedgerError::TransferAccessDenied { transfer: id });
        }
        Err(self.refusal(o, "", requested).await)
    }

    /// The error for a refused transfer_result.
    async fn refusal(
        &self,
        o: &TransferOutcome,
        prefix: &str,
        requested: Option<i64>,
    ) -> LedgerError {
        let f = |name: &str| format!("{prefix}{name}");
        let account = o
            .failed_account_id
            .or(o.debit_account_id)
            .unwrap_or_default();
        let transfer = o.transfer_id.unwrap_or_default();
        match o.status.as_str() {
            "request_id_reused" => LedgerError::RequestIdReused {
                request_id: o.request_id.unwrap_or_default(),
            },
            "invalid_amount" => invalid(f("amount"), "must be greater than zero"),
            "invalid_timeout" => invalid(f("timeout"), "must be positive and at most 10 years"),
            "same_account" => LedgerError::SameAccount {
                field: f("credit_account_id"),
            },
            "permission_denied" => LedgerError::AccountAccessDenied { account },
            "account_not_found" => LedgerError::AccountNotFound { account },
            "transfer_not_found" => LedgerError::TransferNotFound { transfer },
            "currency_not_found" => LedgerError::UnknownCurrency {
                field: f("currency_code"),
                currency: o.currency.clone().unwrap_or_default(),
            },
            "account_frozen" => LedgerError::AccountFrozen { account },
            "account_closed" => LedgerError::AccountClosed { account },
            "amount_overflow" => LedgerError::AmountOverflow { account },
            "transfer_not_pending" => LedgerError::TransferNotPending {
                transfer,
                status: o.transfer_status.clone().unwrap_or_default(),
            },
            "transfer_expired" => LedgerError::TransferExpired { transfer },
            "amount_exceeds_pending" => LedgerError::AmountExceedsPending {
                transfer,
                pending_amount: o.amount.unwrap_or_default(),
                requested: requested.unwrap_or_default(),
            },
            "insufficient_funds" => {
                // The overdraft limit is fixed at open, so reading it now is exact.
                let limit = match self.store.get_account(account).await {
                    Ok(Some(a)) => a.overdraft_limit,
                    Ok(None) => 0,
                    Err(e) => return e.into(),
                };
                let available = o.debit_available.unwrap_or_default();
                LedgerError::InsufficientFunds {
                    account,
                    available: validate::headroom(available, limit).unwrap_or(i64::MAX),
                    requested: o.amount.unwrap_or_default(),
                }
            }
            "currency_mismatch" => self.mismatch(o).await,
            other => LedgerError::Internal(format!("transfer function returned {other}")),
        }
    }

    /// Which currencies disagreed: the request's against the debit account's, else
    /// the two accounts'.
    async fn mismatch(&self, o: &TransferOutcome) -> LedgerError {
        let currency_of = |id: Option<Uuid>| async move {
            match id {
                Some(id) => self
                    .store
                    .get_account(id)
                    .await
                    .map(|a| a.map(|a| a.currency)),
                None => Ok(None),
            }
        };
        let (debit, credit) = match (
            currency_of(o.debit_account_id).await,
            currency_of(o.credit_account_id).await,
        ) {
            (Ok(d), Ok(c)) => (d.unwrap_or_default(), c.unwrap_or_default()),
            (Err(e), _) | (_, Err(e)) => return e.into(),
        };
        let requested = o.currency.clone().unwrap_or_default();
        if requested != debit {
            LedgerError::CurrencyMismatch {
                expected: debit,
                actual: requested,
            }
        } else {
            LedgerError::CurrencyMismatch {
                expected: debit,
                actual: credit,
            }
        }
    }
}

/// The owner scope a create runs under, or why the caller may not make it.
fn create_scope(p: &Principal, r: &Reference, t: &ValidTransfer) -> LedgerResult<Option<Uuid>> {
    match p.role {
        // Debit ownership is checked in the SQL (before existence); crediting another
        // customer is a payment, crediting the bank's own accounts is not for customers.
        Role::Customer if r.is_system(t.credit) => {
            Err(LedgerError::AccountAccessDenied { account: t.credit })
        }
        Role::Customer => Ok(Some(p.user_id)),
        Role::Operator if r.is_system(t.debit) || r.is_system(t.credit) => Ok(None),
        Role::Operator => Err(LedgerError::Forbidden {
            action: "operators may only book transfers to or from a system account",
        }),
        Role::Admin => Ok(None),
        Role::Service if t.pending => Ok(None),
        Role::Service => Err(LedgerError::Forbidden {
            action: "services may only create pending transfers",
        }),
    }
}

/// Who may post or void holds: staff and services (customers may not release a hold
/// that may back a payment in flight).
fn resolve_scope(p: &Principal) -> LedgerResult<Option<Uuid>> {
    match p.role {
        Role::Operator | Role::Admin | Role::Service => Ok(None),
        Role::Customer => Err(LedgerError::Forbidden {
            action: "customers may not post or void pending transfers",
        }),
    }
}

/// The SQL call for one validated transfer, with the metadata stored beside it.
fn new_transfer(
    p: &Principal,
    member_request_id: Uuid,
    request_id: Uuid,
    t: ValidTransfer,
    owner_scope: Option<Uuid>,
) -> (NewTransfer, StoredMetadata) {
    let meta = StoredMetadata {
        request_id: Some(request_id),
        description: t.description,
        labels: t.labels,
        hold: t.pending,
    };
    let new = NewTransfer {
        request_id: member_request_id,
        id: Uuid::now_v7(),
        debit_account_id: t.debit,
        credit_account_id: t.credit,
        amount: t.amount,
        currency: t.currency,
        pending: t.pending,
        timeout_ms: t.timeout_ms,
        metadata: meta.to_json(),
        owner_scope,
        actor: p.user_id,
    };
    (new, meta)
}

/// The request id of batch member `index`: a UUIDv5 in the batch's namespace.
pub(crate) fn member_request_id(batch: Uuid, index: usize) -> Uuid {
    Uuid::new_v5(&batch, format!("member/{index}").as_bytes())
}
