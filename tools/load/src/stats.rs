//! Per-operation-kind recording (latencies in microseconds, errors by gRPC code and
//! reason) and the summary computed from it: counts, rates and nearest-rank percentiles.

use std::collections::BTreeMap;

use serde::Serialize;

/// The operations the workload issues. A hold is two calls, recorded separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// CreateTransfer, posted at once.
    Single,
    /// CreateTransferBatch.
    Batch,
    /// CreateTransfer with `pending`.
    Hold,
    /// VoidPendingTransfer of the hold just placed.
    Void,
    /// GetBalance.
    Read,
}

impl OpKind {
    /// Lower-case name used in the report and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Single => "single",
            OpKind::Batch => "batch",
            OpKind::Hold => "hold",
            OpKind::Void => "void",
            OpKind::Read => "read",
        }
    }
}

/// What one client recorded for one kind.
#[derive(Debug, Default, Clone)]
pub struct KindRecorder {
    /// Latency of every successful call, microseconds.
    pub latencies_us: Vec<u64>,
    /// Calls that failed, by gRPC code (`UNAVAILABLE`, ...).
    pub errors_by_code: BTreeMap<String, u64>,
    /// Calls that failed, by `CODE/ERROR_REASON_*` when the status carried ErrorInfo.
    pub errors_by_reason: BTreeMap<String, u64>,
    /// Batch members applied.
    pub members_ok: u64,
    /// Batch members refused, by reason.
    pub member_errors: BTreeMap<String, u64>,
}

impl KindRecorder {
    /// Adds another client's records.
    pub fn merge(&mut self, other: KindRecorder) {
        self.latencies_us.extend(other.latencies_us);
        for (k, v) in other.errors_by_code {
            *self.errors_by_code.entry(k).or_default() += v;
        }
        for (k, v) in other.errors_by_reason {
            *self.errors_by_reason.entry(k).or_default() += v;
        }
        self.members_ok += other.members_ok;
        for (k, v) in other.member_errors {
            *self.member_errors.entry(k).or_default() += v;
        }
    }
}

/// One client's records, by kind.
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    kinds: BTreeMap<OpKind, KindRecorder>,
}

impl Recorder {
    /// The recorder of one kind.
    pub fn kind(&mut self, kind: OpKind) -> &mut KindRecorder {
        self.kinds.entry(kind).or_default()
    }

    /// Adds another client's records.
    pub fn merge(&mut self, other: Recorder) {
        for (k, v) in other.kinds {
            self.kind(k).merge(v);
        }
    }

    /// Summaries of every kind that saw at least one call, over `elapsed_secs`.
    pub fn summarize(self, elapsed_secs: f64) -> Vec<KindSummary> {
        self.kinds
            .into_iter()
            .map(|(kind, rec)| KindSummary::new(kind, rec, elapsed_secs))
            .filter(|s| s.calls > 0)
            .collect()
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// The result for one operation kind.
#[derive(Debug, Clone, Serialize)]
pub struct KindSummary {
    pub kind: OpKind,
    /// Calls issued in the measured phase (ok + failed).
    pub calls: u64,
    /// Calls that returned OK.
    pub ok: u64,
    /// Failed calls, all codes.
    pub errors: u64,
    /// Successful calls per second.
    pub calls_per_sec: f64,
    /// Transfers applied per second: successful calls for single/hold, applied members
    /// for batches, absent for reads and voids.
    pub transfers_per_sec: Option<f64>,
    /// Latency of successful calls; absent when none succeeded.
    pub latency: Option<Latency>,
    pub errors_by_code: BTreeMap<String, u64>,
    pub errors_by_reason: BTreeMap<String, u64>,
    /// Batches only: members applied and refused.
    pub members_ok: u64,
    pub member_errors: BTreeMap<String, u64>,
}

impl KindSummary {
    fn new(kind: OpKind, mut rec: KindRecorder, elapsed_secs: f64) -> Self {
        rec.latencies_us.sort_unstable();
        let ok = rec.latencies_us.len() as u64;
        let errors: u64 = rec.errors_by_code.values().sum();
        let rate = |n: u64| {
            if elapsed_secs > 0.0 {
                n as f64 / elapsed_secs
            } else {
                0.0
            }
        };
        let transfers_per_sec = match kind {
            OpKind::Single | OpKind::Hold => Some(rate(ok)),
            OpKind::Batch => Some(rate(rec.members_ok)),
            OpKind::Void | OpKind::Read => None,
        };
        KindSummary {
            kind,
            calls: ok + errors,
            ok,
            errors,
            calls_per_sec: rate(ok),
            transfers_per_sec,
            latency: latency(&rec.latencies_us),
            errors_by_code: rec.errors_by_code,
            errors_by_reason: rec.errors_by_reason,
            members_ok: rec.members_ok,
            member_errors: rec.member_errors,
        }
    }
}

/// Nearest-rank percentile of a sorted, non-empty slice.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn latency(sorted_us: &[u64]) -> Option<Latency> {
    let max = *sorted_us.last()?;
    let ms = |us: u64| us as f64 / 1000.0;
    let mean = sorted_us.iter().sum::<u64>() as f64 / sorted_us.len() as f64 / 1000.0;
    Some(Latency {
        p50_ms: ms(percentile(sorted_us, 50.0)),
        p90_ms: ms(percentile(sorted_us, 90.0)),
        p99_ms: ms(percentile(sorted_us, 99.0)),
        max_ms: ms(max),
        mean_ms: mean,
    })
}

/// `UNAVAILABLE`-style name of a gRPC code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
    }

    #[test]
    fn summary_counts_errors_and_members() {
        let mut r = Recorder::default();
        r.kind(OpKind::Batch).latencies_us.extend([1000, 2000]);
        r.kind(OpKind::Batch).members_ok = 150;
        r.kind(OpKind::Batch)
            .errors_by_code
            .insert("ABORTED".into(), 1);
        let s = r.summarize(2.0);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].calls, s[0].ok, s[0].errors), (3, 2, 1));
        assert_eq!(s[0].transfers_per_sec, Some(75.0));
        assert_eq!(s[0].latency.as_ref().unwrap().max_ms, 2.0);
    }
}
