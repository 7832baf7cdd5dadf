//! `ferrobank.ledger.v1.LedgerService`. Its RPCs arrive with the ledger issue; until
//! then each answers UNIMPLEMENTED.

use ferrobank_proto::ledger::ledger_service_server::LedgerService;

use crate::Ledger;

/// The ledger gRPC service.
#[derive(Clone)]
pub struct LedgerApi {
    _ledger: Ledger,
}

impl LedgerApi {
    /// Wraps the shared state.
    pub fn new(ledger: Ledger) -> Self {
        Self { _ledger: ledger }
    }
}

#[tonic::async_trait]
impl LedgerService for LedgerApi {}
