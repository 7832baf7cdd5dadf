//! Use cases: validation, authorization and the service's error enum. `api` turns
//! protobuf into the inputs here and the results back; `store` runs the SQL.
//!
//! Authorization (checked before existence, so a customer cannot tell another
//! customer's account from a missing one):
//! - customer: reads only accounts they own (and transfers touching them); opens
//!   accounts only for themselves, without overdraft; debits only their own accounts
//!   (enforced inside the SQL via `p_owner_scope`, so it costs no extra round trip)
//!   and may credit any customer account (a payment), never a system account; closes
//!   only their own accounts; may not freeze, unfreeze, post or void (a hold may back a
//!   payment in flight: releasing it is for staff and services).
//! - operator: reads everything; freezes, unfreezes and closes; books transfers only
//!   when one side is a system account (cash in and out); posts and voids holds.
//! - admin: everything (system accounts come from migrations, one per currency and
//!   role, so opening another is ALREADY_EXISTS).
//! - service (payments): creates pending transfers between any accounts, posts and
//!   voids holds, and reads (GetAccount, GetTransfer, GetBalance, lists).

mod accounts;
pub mod error;
pub mod model;
pub mod page_token;
mod reads;
mod statement;
mod transfers;
pub mod validate;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrobank_auth::Principal;
use tokio::sync::RwLock;
use uuid::Uuid;

use crate::store::Store;
use crate::store::batch::{BatchSettings, Batcher};

pub use accounts::{AccountListInput, OpenAccountInput};
pub use error::{LedgerError, LedgerResult};
pub use model::*;
pub use reads::{EntryListInput, TransferListInput};
pub use statement::{Freshness, StatementInput};
pub use validate::TransferInput;

/// A reload of the reference data on a cache miss happens at most this often, so a
/// flood of unknown currency codes cannot turn into a flood of queries.
const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// Currencies and system accounts. Both are created only by migrations, and a
/// currency's system accounts in the same transaction as the currency
/// (`ledger.add_currency`), so a snapshot that has a currency has its system accounts.
#[derive(Debug)]
pub struct Reference {
    currencies: BTreeMap<String, Currency>,
    system: HashMap<Uuid, (String, SystemRole)>,
    loaded_at: Instant,
}

impl Reference {
    fn is_system(&self, account: Uuid) -> bool {
        self.system.contains_key(&account)
    }
}

/// The ledger's use cases.
pub struct LedgerApp {
    store: Store,
    /// Micro-batches single CreateTransfer calls; None: each is its own round trip.
    batcher: Option<Batcher>,
    reference: RwLock<Option<Arc<Reference>>>,
}

impl LedgerApp {
    /// Use cases over `store`; with `batching`, starts the transfer batcher on the
    /// current runtime (it ends when this is dropped).
    pub fn new(store: Store, batching: Option<BatchSettings>) -> Self {
        Self {
            batcher: batching.map(|s| Batcher::spawn(store.clone(), s)),
            store,
            reference: RwLock::new(None),
        }
    }

    /// The reference data, loaded on first use.
    async fn reference(&self) -> LedgerResult<Arc<Reference>> {
        if let Some(r) = self.reference.read().await.as_ref() {
            return Ok(r.clone());
        }
        self.reload(None).await
    }

    /// Reloads unless someone else did after `stale` was loaded (or recently).
    async fn reload(&self, stale: Option<&Arc<Reference>>) -> LedgerResult<Arc<Reference>> {
        let mut slot = self.reference.write().await;
        if let Some(current) = slot.as_ref() {
            let replaced = stale.is_none_or(|s| !Arc::ptr_eq(s, current));
            if replaced || current.loaded_at.elapsed() < RELOAD_INTERVAL {
                return Ok(current.clone());
            }
        }
        let currencies = self.store.all_currencies().await?;
        let system = self.store.system_accounts().await?;
        let mut by_id = HashMap::new();
        for s in system {
            by_id.insert(s.id, (s.currency, SystemRole::from_sql(&s.role)?));
        }
        let fresh = Arc::new(Reference {
            currencies: currencies
                .into_iter()
                .map(|c| {
                    (
                        c.code.clone(),
                        Currency {
                            code: c.code,
                            minor_units: c.minor_units,
                            name: c.name,
                        },
                    )
                })
                .collect(),
            system: by_id,
            loaded_at: Instant::now(),
        });
        *slot = Some(fresh.clone());
        Ok(fresh)
    }

    /// The reference data, checked to know `currency` (reloaded once on a miss).
    async fn reference_with(&self, field: &str, currency: &str) -> LedgerResult<Arc<Reference>> {
        let reference = self.reference().await?;
        if reference.currencies.contains_key(currency) {
            return Ok(reference);
        }
        let reference = self.reload(Some(&reference)).await?;
        if reference.currencies.contains_key(currency) {
            Ok(reference)
        } else {
            Err(LedgerError::UnknownCurrency {
                field: field.to_owned(),
                currency: currency.to_owned(),
            })
        }
    }
}

/// Whether the principal may read accounts it does not own.
fn reads_any(p: &Principal) -> bool {
    p.can_read_any_account()
}

/// Refuses a customer access to an account they do not own: the same error whether
/// it exists or not. Staff get NOT_FOUND for a missing one.
fn check_account_access(p: &Principal, id: Uuid, account: Option<&Account>) -> LedgerResult<()> {
    match account {
        Some(a) if reads_any(p) || a.owner_id == Some(p.user_id) => Ok(()),
        None if reads_any(p) => Err(LedgerError::AccountNotFound { account: id }),
        _ => Err(LedgerError::AccountAccessDenied { account: id }),
    }
}

/// The request_id of a mutation.
fn request_id(value: &str) -> LedgerResult<Uuid> {
    validate::uuid("request_id", value)
}
