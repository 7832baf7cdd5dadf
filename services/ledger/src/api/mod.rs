//! The gRPC surface: the only module that sees tonic and generated types.

mod ledger;
mod reporting;

pub use ledger::LedgerApi;
pub use reporting::ReportingApi;
