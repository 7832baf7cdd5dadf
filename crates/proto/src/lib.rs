//! Rust code generated from `proto/`, the embedded file-descriptor set for server
//! reflection, and the one helper every service uses to build error statuses from the
//! generated `ErrorReason` enum.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod status;

/// Everything under the `ferrobank` proto package.
pub mod ferrobank {
    /// `ferrobank.common.v1`.
    pub mod common {
        pub mod v1 {
            tonic::include_proto!("ferrobank.common.v1");
        }
    }
    /// `ferrobank.identity.v1`.
    pub mod identity {
        pub mod v1 {
            tonic::include_proto!("ferrobank.identity.v1");
        }
    }
    /// `ferrobank.ledger.v1`.
    pub mod ledger {
        pub mod v1 {
            tonic::include_proto!("ferrobank.ledger.v1");
        }
    }
    /// `ferrobank.payments.v1`.
    pub mod payments {
        pub mod v1 {
            tonic::include_proto!("ferrobank.payments.v1");
        }
    }
    /// `ferrobank.reporting.v1`.
    pub mod reporting {
        pub mod v1 {
            tonic::include_proto!("ferrobank.reporting.v1");
        }
    }
}

pub use ferrobank::{common::v1 as common, identity::v1 as identity, ledger::v1 as ledger};
pub use ferrobank::{payments::v1 as payments, reporting::v1 as reporting};

/// The encoded `FileDescriptorSet` of every Ferrobank proto and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ferrobank_descriptor.bin"));

/// Fully qualified names of the four domain services, as reflection and health list them.
pub const SERVICE_NAMES: [&str; 4] = [
    "ferrobank.identity.v1.IdentityService",
    "ferrobank.ledger.v1.LedgerService",
    "ferrobank.payments.v1.PaymentsService",
    "ferrobank.reporting.v1.ReportingService",
];
