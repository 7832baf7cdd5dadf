//! Account use cases: open, get, list, freeze, unfreeze, close, list currencies.

use ferrobank_auth::{Principal, Role};
use uuid::Uuid;

use crate::store::{AccountFilter, AccountOutcome, StatusChange};

use super::error::{LedgerError, LedgerResult};
use super::model::{Account, AccountKind, AccountStatus, Currency, Page, SystemRole, Written};
use super::page_token::{self, Position};
use super::validate::{self, invalid};
use super::{LedgerApp, check_account_access, request_id};

/// OpenAccount as asked.
#[derive(Clone, Debug, Default)]
pub struct OpenAccountInput {
    pub request_id: String,
    pub owner_id: String,
    pub currency_code: String,
    pub kind: Option<AccountKind>,
    pub system_role: Option<SystemRole>,
    pub overdraft_limit: i64,
    pub label: String,
}

/// ListAccounts as asked.
#[derive(Clone, Debug, Default)]
pub struct AccountListInput {
    pub page_size: i32,
    pub page_token: String,
    pub owner_id: String,
    pub status: Option<AccountStatus>,
    pub currency_code: String,
    pub kind: Option<AccountKind>,
    pub system_role: Option<SystemRole>,
}

impl LedgerApp {
    /// Opens a customer account (system accounts exist per currency from migrations).
    pub async fn open_account(
        &self,
        p: &Principal,
        input: OpenAccountInput,
    ) -> LedgerResult<Written<Account>> {
        let rid = request_id(&input.request_id)?;
        let currency = validate::currency_code("currency_code", &input.currency_code)?;
        validate::text("label", &input.label, 128, false)?;
        if input.overdraft_limit < 0 {
            return Err(invalid("overdraft_limit", "must not be negative"));
        }
        if p.role == Role::Service {
            return Err(LedgerError::Forbidden {
                action: "services may not open accounts",
            });
        }
        if input.kind == Some(AccountKind::System) {
            if p.role != Role::Admin {
                return Err(LedgerError::Forbidden {
                    action: "only admins may open system accounts",
                });
            }
            let role = input
                .system_role
                .ok_or_else(|| invalid("system_role", "is required for a system account"))?;
            if !input.owner_id.is_empty() {
                return Err(invalid("owner_id", "must be empty for a system account"));
            }
            if input.overdraft_limit != 0 {
                return Err(invalid(
                    "overdraft_limit",
                    "must be zero for a system account",
                ));
            }
            let reference = self.reference_with("currency_code", &currency).await?;
            let exists = reference
                .system
                .values()
                .any(|(c, r)| *c == currency && *r == role);
            return Err(if exists {
                LedgerError::AlreadyExists {
                    field: "system_role",
                    message: format!("the {currency} {} account already exists", role.as_sql()),
                }
            } else {
                LedgerError::Internal(format!("no {currency} {} account", role.as_sql()))
            });
        }
        if input.system_role.is_some() {
            return Err(invalid(
                "system_role",
                "must be unset for a customer account",
            ));
        }
        let owner = validate::optional_uuid("owner_id", &input.owner_id)?.unwrap_or(p.user_id);
        if p.role == Role::Customer {
            if owner != p.user_id {
                return Err(LedgerError::Forbidden {
                    action: "customers may open accounts only for themselves",
                });
            }
            if input.overdraft_limit != 0 {
                return Err(LedgerError::Forbidden {
                    action: "only operators and admins may set an overdraft limit",
                });
            }
        }
        self.reference_with("currency_code", &currency).await?;
        let out = self
            .store
            .open_account(
                rid,
                Uuid::now_v7(),
                owner,
                &currency,
                input.overdraft_limit,
                p.user_id,
            )
            .await?;
        let account = account_outcome(&out.value, rid, None)?;
        Ok(Written {
            ledger_time: Some(account.updated_at),
            value: account,
            consistency_token: out.lsn,
        })
    }

    /// One account.
    pub async fn get_account(&self, p: &Principal, id: &str) -> LedgerResult<Account> {
        let id = validate::uuid("account_id", id)?;
        self.readable_account(p, id).await
    }

    /// The account if `p` may read it (see `check_account_access`).
    pub(super) async fn readable_account(&self, p: &Principal, id: Uuid) -> LedgerResult<Account> {
        let account = self
            .store
            .get_account(id)
            .await?
            .map(Account::from_row)
            .transpose()?;
        check_account_access(p, id, account.as_ref())?;
        account.ok_or(LedgerError::AccountNotFound { account: id })
    }

    /// A page of accounts, oldest first.
    pub async fn list_accounts(
        &self,
        p: &Principal,
        input: AccountListInput,
    ) -> LedgerResult<Page<Account>> {
        let limit = validate::page_size("page_size", input.page_size)?;
        let mut owner = validate::optional_uuid("owner_id", &input.owner_id)?;
        let currency = if input.currency_code.is_empty() {
            None
        } else {
            Some(validate::currency_code(
                "currency_code",
                &input.currency_code,
            )?)
        };
        if p.role == Role::Customer {
            match owner {
                Some(o) if o != p.user_id => {
                    return Err(LedgerError::Forbidden {
                        action: "customers may list only their own accounts",
                    });
                }
                _ => owner = Some(p.user_id),
            }
        }
        let filter = AccountFilter {
            owner,
            status: input.status.map(|s| s.as_sql().to_owned()),
            currency,
            kind: input.kind.map(|k| k.as_sql().to_owned()),
            system_role: input.system_role.map(|r| r.as_sql().to_owned()),
        };
        let query = format!("accounts|{filter:?}");
        let after = match page_token::decode(&input.page_token, &query)? {
            None => Uuid::nil(),
            Some(Position::Account { after }) => after,
            Some(_) => return Err(LedgerError::InvalidPageToken),
        };
        let rows = self.store.list_accounts(&filter, after, limit + 1).await?;
        let mut items = rows
            .into_iter()
            .map(Account::from_row)
            .collect::<LedgerResult<Vec<_>>>()?;
        let next_page_token = next_token(&mut items, limit, |a| {
            page_token::encode(&query, Position::Account { after: a.id })
        });
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// Freezes, unfreezes or closes an account.
    pub async fn change_status(
        &self,
        p: &Principal,
        change: StatusChange,
        request: &str,
        account: &str,
        reason: &str,
    ) -> LedgerResult<Written<Account>> {
        let rid = request_id(request)?;
        let id = validate::uuid("account_id", account)?;
        validate::text("reason", reason, 256, change != StatusChange::Close)?;
        let scope = match (change, p.role) {
            (_, Role::Operator | Role::Admin) => None,
            (StatusChange::Close, Role::Customer) => Some(p.user_id),
            _ => {
                return Err(LedgerError::Forbidden {
                    action: "only operators and admins may freeze, unfreeze or close this account",
                });
            }
        };
        let out = self
            .store
            .set_account_status(change, rid, id, scope, p.user_id)
            .await?;
        let account = account_outcome(&out.value, rid, Some(id))?;
        Ok(Written {
            ledger_time: Some(account.updated_at),
            value: account,
            consistency_token: out.lsn,
        })
    }

    /// A page of currencies by code.
    pub async fn list_currencies(
        &self,
        page_size: i32,
        page_token: &str,
    ) -> LedgerResult<Page<Currency>> {
        let limit = validate::page_size("page_size", page_size)?;
        let after = match page_token::decode(page_token, "currencies")? {
            None => String::new(),
            Some(Position::Currency { after }) => after,
            Some(_) => return Err(LedgerError::InvalidPageToken),
        };
        let rows = self.store.list_currencies(&after, limit + 1).await?;
        let mut items: Vec<Currency> = rows
            .into_iter()
            .map(|c| Currency {
                code: c.code,
                minor_units: c.minor_units,
                name: c.name,
            })
            .collect();
        let next_page_token = next_token(&mut items, limit, |c| {
            page_token::encode(
                "currencies",
                Position::Currency {
                    after: c.code.clone(),
                },
            )
        });
        Ok(Page {
            items,
            next_page_token,
        })
    }
}

/// Trims the look-ahead row (`limit + 1` were fetched) and returns the next token.
pub(super) fn next_token<T>(
    items: &mut Vec<T>,
    limit: i64,
    token: impl Fn(&T) -> String,
) -> String {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if items.len() > limit {
        items.truncate(limit);
        items.last().map(token).unwrap_or_default()
    } else {
        String::new()
    }
}

/// Maps an account_result to the account or the failure it reports.
fn account_outcome(o: &AccountOutcome, rid: Uuid, asked: Option<Uuid>) -> LedgerResult<Account> {
    let account = o.account_id.or(asked).unwrap_or_default();
    match o.status.as_str() {
        "ok" => Account::from_outcome(o),
        "request_id_reused" => Err(LedgerError::RequestIdReused { request_id: rid }),
        "permission_denied" => Err(LedgerError::AccountAccessDenied { account }),
        "account_not_found" => Err(LedgerError::AccountNotFound { account }),
        "account_closed" => Err(LedgerError::AccountClosed { account }),
        "account_not_empty" => Err(LedgerError::AccountNotEmpty { account }),
        "system_account" => Err(LedgerError::SystemAccount { account }),
        "currency_not_found" => Err(LedgerError::UnknownCurrency {
            field: "currency_code".into(),
            currency: o.currency.clone().unwrap_or_default(),
        }),
        "invalid_overdraft_limit" => Err(invalid("overdraft_limit", "must not be negative")),
        "account_exists" => Err(LedgerError::AlreadyExists {
            field: "account_id",
            message: "an account with this id exists".into(),
        }),
        other => Err(LedgerError::Internal(format!(
            "account function returned {other}"
        ))),
    }
}
