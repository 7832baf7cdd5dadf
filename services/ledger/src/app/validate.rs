//! Request validation and money arithmetic: pure functions, each failing with
//! `LedgerError::InvalidField` naming the field's path in the request.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::error::{LedgerError, LedgerResult};

/// The longest hold the SQL accepts: 10 years (`ledger.create_transfer`).
pub const MAX_TIMEOUT_MS: i64 = 315_576_000_000;
/// Page size when the request says 0.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// Largest page (ledger.proto: larger values are treated as this).
pub const MAX_PAGE_SIZE: i64 = 1000;
/// Most members in one CreateTransferBatch (ledger.proto).
pub const MAX_BATCH: usize = 1000;

/// A transfer as a client asked for it, fields still unchecked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransferInput {
    pub debit_account_id: String,
    pub credit_account_id: String,
    pub amount: i64,
    pub currency_code: String,
    pub pending: bool,
    /// (seconds, nanos) of the hold's timeout, if given.
    pub timeout: Option<(i64, i32)>,
    pub description: String,
    pub labels: BTreeMap<String, String>,
}

/// A transfer whose fields are well formed (existence and funds are the SQL's job).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidTransfer {
    pub debit: Uuid,
    pub credit: Uuid,
    pub amount: i64,
    pub currency: String,
    pub pending: bool,
    /// Milliseconds until a hold expires (holds only; always >= 1).
    pub timeout_ms: Option<i64>,
    pub description: String,
    pub labels: BTreeMap<String, String>,
}

pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> LedgerError {
    LedgerError::InvalidField {
        field: field.into(),
        message: message.into(),
    }
}

/// A required UUID.
pub fn uuid(field: &str, value: &str) -> LedgerResult<Uuid> {
    if value.is_empty() {
        return Err(invalid(field, "is required"));
    }
    Uuid::try_parse(value).map_err(|_| invalid(field, "must be a UUID"))
}

/// An optional UUID (empty = none).
pub fn optional_uuid(field: &str, value: &str) -> LedgerResult<Option<Uuid>> {
    if value.is_empty() {
        Ok(None)
    } else {
        uuid(field, value).map(Some)
    }
}

/// An ISO 4217 alphabetic code's shape (whether it is supported is checked apart).
pub fn currency_code(field: &str, value: &str) -> LedgerResult<String> {
    if value.is_empty() {
        return Err(invalid(field, "is required"));
    }
    if value.len() == 3 && value.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(value.to_owned())
    } else {
        Err(invalid(
            field,
            "must be an ISO 4217 code of three capital letters",
        ))
    }
}

/// An amount to move: greater than zero (an int64 always fits the SQL's bigint).
pub fn amount(field: &str, value: i64) -> LedgerResult<i64> {
    if value > 0 {
        Ok(value)
    } else {
        Err(invalid(field, "must be greater than zero"))
    }
}

/// A hold's timeout in whole milliseconds, rounded up so that a positive duration
/// never becomes 0 (which the SQL reads as "never expires").
pub fn timeout_ms(field: &str, seconds: i64, nanos: i32) -> LedgerResult<i64> {
    if !(0..1_000_000_000).contains(&nanos) || seconds < 0 {
        return Err(invalid(field, "must be a positive duration"));
    }
    let ms = seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(i64::from(nanos).div_euclid(1_000_000)))
        .and_then(|ms| ms.checked_add(i64::from(nanos % 1_000_000 != 0)));
    match ms {
        Some(0) => Err(invalid(field, "must be a positive duration")),
        Some(ms) if ms <= MAX_TIMEOUT_MS => Ok(ms),
        _ => Err(invalid(field, "must be at most 10 years")),
    }
}

/// Free text up to `max` characters; `required` refuses empty.
pub fn text(field: &str, value: &str, max: usize, required: bool) -> LedgerResult<String> {
    if required && value.trim().is_empty() {
        return Err(invalid(field, "is required"));
    }
    if value.chars().count() > max {
        return Err(invalid(field, format!("must be at most {max} characters")));
    }
    Ok(value.to_owned())
}

/// Metadata pairs: at most 16, keys 1..=64 of `[a-z0-9_.-]`, values up to 256.
pub fn labels(
    field: &str,
    pairs: &BTreeMap<String, String>,
) -> LedgerResult<BTreeMap<String, String>> {
    if pairs.len() > 16 {
        return Err(invalid(field, "must have at most 16 pairs"));
    }
    for (k, v) in pairs {
        let key_ok = !k.is_empty()
            && k.len() <= 64
            && k.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
            });
        if !key_ok {
            return Err(invalid(
                format!("{field}[{k}]"),
                "keys must be 1 to 64 characters of [a-z0-9_.-]",
            ));
        }
        if v.chars().count() > 256 {
            return Err(invalid(
                format!("{field}[{k}]"),
                "values must be at most 256 characters",
            ));
        }
    }
    Ok(pairs.clone())
}

/// AIP-158 page size: negative is an error, 0 the default, large values capped.
pub fn page_size(field: &str, value: i32) -> LedgerResult<i64> {
    match value {
        v if v < 0 => Err(invalid(field, "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        v => Ok(i64::from(v).min(MAX_PAGE_SIZE)),
    }
}

/// A protobuf timestamp (seconds, nanos) as an instant Postgres can hold.
pub fn timestamp(field: &str, seconds: i64, nanos: i32) -> LedgerResult<DateTime<Utc>> {
    let nanos = u32::try_from(nanos).map_err(|_| invalid(field, "has negative nanos"))?;
    match DateTime::from_timestamp(seconds, nanos) {
        // Postgres timestamptz ends in 294276 AD; keep well inside it.
        Some(t) if (0..=253_402_300_799).contains(&seconds) => Ok(t),
        _ => Err(invalid(field, "must be between 1970 and 9999")),
    }
}

/// How much a customer may still spend: available balance plus overdraft limit, or
/// None if that leaves int64 (the SQL's own floor check uses the same quantity).
pub fn headroom(available: i64, overdraft_limit: i64) -> Option<i64> {
    available.checked_add(overdraft_limit)
}

/// Checks one transfer; field paths are `prefix` + the TransferSpec field name.
pub fn transfer(prefix: &str, t: &TransferInput) -> LedgerResult<ValidTransfer> {
    let f = |name: &str| format!("{prefix}{name}");
    let debit = uuid(&f("debit_account_id"), &t.debit_account_id)?;
    let credit = uuid(&f("credit_account_id"), &t.credit_account_id)?;
    let amount = amount(&f("amount"), t.amount)?;
    let currency = currency_code(&f("currency_code"), &t.currency_code)?;
    let timeout_ms = match (t.pending, t.timeout) {
        (true, Some((s, n))) => Some(timeout_ms(&f("timeout"), s, n)?),
        (true, None) => return Err(invalid(f("timeout"), "is required for a pending transfer")),
        (false, _) => None,
    };
    let description = text(&f("description"), &t.description, 256, false)?;
    let labels = labels(&f("metadata"), &t.labels)?;
    if debit == credit {
        return Err(LedgerError::SameAccount {
            field: f("credit_account_id"),
        });
    }
    Ok(ValidTransfer {
        debit,
        credit,
        amount,
        currency,
        pending: t.pending,
        timeout_ms,
        description,
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn field_of(err: LedgerError) -> String {
        match err {
            LedgerError::InvalidField { field, .. } | LedgerError::SameAccount { field } => field,
            other => panic!("unexpected {other:?}"),
        }
    }

    proptest! {
        /// Amounts are accepted exactly when positive, and never change on the way.
        #[test]
        fn amount_accepts_exactly_positive(v in any::<i64>()) {
            match amount("transfer.amount", v) {
                Ok(a) => prop_assert!(v > 0 && a == v),
                Err(e) => { prop_assert!(v <= 0); prop_assert_eq!(field_of(e), "transfer.amount"); }
            }
        }

        /// Headroom (available + overdraft) never panics or wraps: it is the exact sum
        /// whenever that fits in i64, and None otherwise.
        #[test]
        fn headroom_matches_wide_arithmetic(avail in any::<i64>(), limit in 0..=i64::MAX) {
            prop_assert_eq!(headroom(avail, limit).map(i128::from),
                            i128::from(avail).checked_add(i128::from(limit)).filter(|v| *v <= i128::from(i64::MAX)));
        }

        /// A timeout is accepted iff it is positive and at most 10 years; it rounds up
        /// to whole milliseconds, so a positive duration never reads as "no timeout".
        #[test]
        fn timeout_rounds_up_and_bounds(s in -5i64..400_000_000, n in -1i32..1_000_000_001) {
            let total_ns = i128::from(s) * 1_000_000_000 + i128::from(n);
            match timeout_ms("transfer.timeout", s, n) {
                Ok(ms) => {
                    prop_assert!((1..=MAX_TIMEOUT_MS).contains(&ms));
                    prop_assert!(i128::from(ms) * 1_000_000 >= total_ns);
                    prop_assert!(i128::from(ms - 1) * 1_000_000 < total_ns);
                }
                Err(e) => {
                    prop_assert_eq!(field_of(e), "transfer.timeout");
                    prop_assert!(!(0..1_000_000_000).contains(&n) || s < 0 || total_ns <= 0
                        || total_ns > i128::from(MAX_TIMEOUT_MS) * 1_000_000);
                }
            }
        }

        /// Any string is either a UUID (round-tripping) or refused naming the field.
        #[test]
        fn uuid_parse_never_panics(s in ".{0,40}") {
            match uuid("transfer.debit_account_id", &s) {
                Ok(u) => prop_assert_eq!(Uuid::try_parse(&s).ok(), Some(u)),
                Err(e) => prop_assert_eq!(field_of(e), "transfer.debit_account_id"),
            }
        }

        /// Page sizes: negative refused, 0 → default, otherwise clamped to 1..=1000.
        #[test]
        fn page_size_clamps(v in any::<i32>()) {
            match page_size("page_size", v) {
                Ok(n) => prop_assert!((1..=MAX_PAGE_SIZE).contains(&n) && (v == 0 || n == i64::from(v).min(MAX_PAGE_SIZE))),
                Err(_) => prop_assert!(v < 0),
            }
        }

        /// A whole transfer validates iff each field does; the first bad field is named.
        #[test]
        fn transfer_validation_names_the_first_bad_field(
            good_ids in any::<bool>(), amt in -3i64..3, cur in "[A-Za-z]{2,4}", pending in any::<bool>(),
        ) {
            let a = Uuid::now_v7().to_string();
            let b = if good_ids { Uuid::now_v7().to_string() } else { "nope".to_owned() };
            let input = TransferInput {
                debit_account_id: a, credit_account_id: b, amount: amt, currency_code: cur.clone(),
                pending, timeout: pending.then_some((1, 0)), ..TransferInput::default()
            };
            let cur_ok = cur.len() == 3 && cur.bytes().all(|c| c.is_ascii_uppercase());
            match transfer("transfer.", &input) {
                Ok(v) => { prop_assert!(good_ids && amt > 0 && cur_ok); prop_assert_eq!(v.timeout_ms.is_some(), pending); }
                Err(e) => {
                    let want = if !good_ids { "transfer.credit_account_id" }
                        else if amt <= 0 { "transfer.amount" } else { "transfer.currency_code" };
                    prop_assert_eq!(field_of(e), want);
                }
            }
        }
    }

    /// The same account on both sides is refused naming the credit side.
    #[test]
    fn same_account_is_refused() {
        let id = Uuid::now_v7().to_string();
        let input = TransferInput {
            debit_account_id: id.clone(),
            credit_account_id: id,
            amount: 1,
            currency_code: "USD".into(),
            ..TransferInput::default()
        };
        assert!(matches!(
            transfer("transfer.", &input),
            Err(LedgerError::SameAccount { field }) if field == "transfer.credit_account_id"
        ));
    }
}
