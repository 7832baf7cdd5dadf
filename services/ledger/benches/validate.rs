//! CreateTransfer request validation, pure CPU (no database): the checks the ledger
//! runs on a request before any SQL — the request id, then each transfer's ids,
//! amount, currency code, hold timeout, description and metadata labels — for one
//! valid CreateTransfer and for a CreateTransferBatch of 100 valid members.
//!
//! `cargo bench -p ferrobank-ledger --bench validate`
//!
//! The validation module is compiled into this bench from its source (`#[path]`, as
//! `store.rs` does with the store): the library keeps it private, and the bench
//! measures exactly the code the service runs. Not included: the protobuf-to-input
//! conversion in `api` (moves the strings, collects the labels) and the currency
//! lookup and authorization that follow validation.

#[path = "../src/app"]
#[allow(dead_code)]
mod app {
    pub mod error;
    pub mod validate;
}

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use app::error::LedgerResult;
use app::validate::{self, MAX_BATCH, TransferInput, ValidTransfer};
use criterion::{Criterion, criterion_group, criterion_main};
use uuid::Uuid;

/// A typical client transfer: two account ids, an amount, a description and two labels.
fn input() -> TransferInput {
    TransferInput {
        debit_account_id: Uuid::now_v7().to_string(),
        credit_account_id: Uuid::now_v7().to_string(),
        amount: 2_500,
        currency_code: "USD".into(),
        pending: false,
        timeout: None,
        description: "rent, November".into(),
        labels: BTreeMap::from([
            ("invoice".to_owned(), "INV-2026-0042".to_owned()),
            ("channel".to_owned(), "mobile".to_owned()),
        ]),
    }
}

/// What `LedgerApp::create_transfer` checks before the SQL (`request_id` there is
/// `validate::uuid("request_id", ..)`).
fn create_transfer(request_id: &str, t: &TransferInput) -> LedgerResult<(Uuid, ValidTransfer)> {
    let rid = validate::uuid("request_id", request_id)?;
    Ok((rid, validate::transfer("transfer.", t)?))
}

/// What `LedgerApp::create_batch` checks per member before the SQL.
fn create_batch(
    request_id: &str,
    inputs: &[TransferInput],
) -> LedgerResult<(Uuid, Vec<LedgerResult<ValidTransfer>>)> {
    let rid = validate::uuid("request_id", request_id)?;
    assert!(!inputs.is_empty() && inputs.len() <= MAX_BATCH);
    Ok((
        rid,
        inputs.iter().map(|t| validate::transfer("", t)).collect(),
    ))
}

fn benches(c: &mut Criterion) {
    let request_id = Uuid::new_v4().to_string();
    let one = input();
    let batch: Vec<TransferInput> = (0..100).map(|_| input()).collect();
    let mut group = c.benchmark_group("validate");

    group.bench_function("create_transfer", |b| {
        b.iter(|| {
            black_box(create_transfer(black_box(&request_id), black_box(&one)).expect("valid"))
        })
    });
    group.bench_function("create_transfer_batch_100", |b| {
        b.iter(|| {
            let (rid, members) =
                create_batch(black_box(&request_id), black_box(&batch)).expect("valid");
            debug_assert!(members.iter().all(Result::is_ok));
            black_box((rid, members))
        })
    });
    group.finish();
}

criterion_group! {
    name = validate_benches;
    // Short by default (`make bench` runs every suite); criterion's flags override.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(validate_benches);
