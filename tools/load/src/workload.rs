//! The measured phase: N client tasks issuing the configured mix, closed loop (next call
//! when the last returns) or open loop (calls on a fixed schedule, latency measured from
//! the scheduled start so a slow server is not hidden by a waiting client).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferrobank_proto::common::ErrorReason;
use ferrobank_proto::ledger::ledger_service_client::LedgerServiceClient;
use ferrobank_proto::ledger::transfer_batch_result::Outcome;
use ferrobank_proto::ledger::{
    CreateTransferBatchRequest, CreateTransferRequest, GetBalanceRequest, TransferSpec,
    VoidPendingTransferRequest,
};
use tonic::Status;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::cli::{Args, Mix};
use crate::cpu::{self, Reading, SliceCpu};
use crate::setup::{Fixture, Token, authed};
use crate::stats::{KindRecorder, OpKind, Recorder, code_name};

/// How long a hold is placed for (it is voided at once).
const HOLD_TIMEOUT_SECS: i64 = 3600;

/// What the measured phase produced.
pub struct PhaseResult {
    pub recorder: Recorder,
    /// From the end of the warm-up to the last measured completion (with
    /// `--interleave-target`, the part of that in the workload target's slices).
    pub elapsed_secs: f64,
    /// With `--interleave-target`: its calls, and the measured seconds in its slices.
    pub interleaved: Option<(Recorder, f64)>,
    /// With `--interleave-target`: CPU time in the workload target's whole measured
    /// slices, then in the interleaved target's.
    pub slice_cpu: Option<(SliceCpu, SliceCpu)>,
}

struct Shared {
    mix: Mix,
    batch_size: usize,
    currency: String,
    customers: Vec<Token>,
    accounts_by_customer: Vec<Vec<String>>,
    all_accounts: Vec<String>,
    hot: Option<String>,
    /// Credit among the client's own accounts (`--keys own`).
    own_only: bool,
    measure_start: Instant,
    measure_end: Option<Instant>,
    count: Option<u64>,
    issued: AtomicU64,
    /// Open loop: the interval between one client's calls, and the common start.
    interval: Option<Duration>,
    clients: usize,
    /// With `--interleave-target`: the slice length, counted from `start`.
    slice: Option<Duration>,
    start: Instant,
}

impl Shared {
    /// Whether a call at `at` goes to the interleaved target: odd slices do.
    fn interleaved_at(&self, at: Instant) -> bool {
        self.slice.is_some_and(|slice| {
            (at.saturating_duration_since(self.start).as_nanos() / slice.as_nanos()) % 2 == 1
        })
    }
}

/// Runs warm-up and the measured phase.
pub async fn run(args: &Args, fixture: Fixture) -> anyhow::Result<PhaseResult> {
    let start = Instant::now();
    let measure_start = start + args.warmup;
    let interval = match args.rate {
        Some(r) if r > 0.0 => Some(Duration::from_secs_f64(args.clients as f64 / r)),
        Some(r) => anyhow::bail!("--rate must be positive, got {r}"),
        None => None,
    };
    let slice = match &fixture.interleave_channels {
        Some(_) if args.rate.is_some() || args.count.is_some() => {
            anyhow::bail!("--interleave-target needs a closed loop and a --duration")
        }
        Some(_) if args.interleave_slice.is_zero() => {
            anyhow::bail!("--interleave-slice must be positive")
        }
        Some(_) => Some(args.interleave_slice),
        None => None,
    };
    let shared = Arc::new(Shared {
        mix: args.mix,
        batch_size: args.batch_size,
        currency: args.currency.clone(),
        customers: fixture.customers.iter().map(|c| c.token.clone()).collect(),
        accounts_by_customer: fixture.accounts_by_customer,
        all_accounts: fixture.all_accounts,
        hot: fixture.hot,
        own_only: args.keys == crate::cli::Keys::Own,
        measure_start,
        measure_end: args.count.is_none().then(|| measure_start + args.duration),
        count: args.count,
        issued: AtomicU64::new(0),
        interval,
        clients: args.clients,
        slice,
        start,
    });
    // CPU readings at each slice boundary from the end of the warm-up to the end.
    let sampler = match (slice, shared.measure_end) {
        (Some(slice), Some(end)) => {
            let server_pid = args.server_pid;
            let first =
                measure_start.saturating_duration_since(start).as_nanos() / slice.as_nanos() + 1;
            Some(tokio::spawn(async move {
                let mut readings = Vec::new();
                for k in first as u64.. {
                    let at = start + slice * k as u32;
                    if at > end {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                    readings.push((k, Instant::now(), Reading::now(server_pid)));
                }
                readings
            }))
        }
        _ => None,
    };
    let mut tasks = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let connection = i / args.clients_per_connection;
        let channel = fixture.channels[connection].clone();
        let alt = fixture
            .interleave_channels
            .as_ref()
            .map(|channels| channels[connection].clone());
        let shared = Arc::clone(&shared);
        tasks.push(tokio::spawn(client(i, channel, alt, shared, start)));
    }
    let mut recorder = Recorder::default();
    let mut alt_recorder = Recorder::default();
    let mut last = measure_start;
    for t in tasks {
        let (rec, alt_rec, done) = t.await?;
        recorder.merge(rec);
        alt_recorder.merge(alt_rec);
        last = last.max(done);
    }
    let elapsed_secs = last.saturating_duration_since(measure_start).as_secs_f64();
    let slice_cpu = match sampler {
        Some(sampler) => Some(cpu::split(&sampler.await?)),
        None => None,
    };
    Ok(match slice {
        Some(slice) => {
            let alt_secs = odd_slice_secs(start, slice, measure_start, last);
            PhaseResult {
                recorder,
                elapsed_secs: elapsed_secs - alt_secs,
                interleaved: Some((alt_recorder, alt_secs)),
                slice_cpu,
            }
        }
        None => PhaseResult {
            recorder,
            elapsed_secs,
            interleaved: None,
            slice_cpu: None,
        },
    })
}

/// Seconds of `[from, to]` in odd slices of length `slice` counted from `start`: the
/// interleaved target's share of the measured time.
fn odd_slice_secs(start: Instant, slice: Duration, from: Instant, to: Instant) -> f64 {
    let (a, b) = (
        from.saturating_duration_since(start).as_secs_f64(),
        to.saturating_duration_since(start).as_secs_f64(),
    );
    let w = slice.as_secs_f64();
    let mut total = 0.0;
    let mut k = (a / w).floor() as u64;
    while (k as f64) * w < b {
        if k % 2 == 1 {
            let (lo, hi) = ((k as f64 * w).max(a), ((k + 1) as f64 * w).min(b));
            total += (hi - lo).max(0.0);
        }
        k += 1;
    }
    total
}

/// xorshift64*: fast, good enough to pick keys.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One client: its own customer (token) and HTTP/2 connection (and one to the
/// interleaved target, `alt`). Returns what each target measured.
async fn client(
    i: usize,
    channel: Channel,
    alt: Option<Channel>,
    s: Arc<Shared>,
    start: Instant,
) -> (Recorder, Recorder, Instant) {
    let cust = i % s.customers.len();
    let token = s.customers[cust].clone();
    let own = &s.accounts_by_customer[cust];
    let mut main = LedgerServiceClient::new(channel);
    let mut alt = alt.map(LedgerServiceClient::new);
    let mut rec_alt = Recorder::default();
    let mut rng = Rng(uuid::Uuid::new_v4().as_u64_pair().0 | 1);
    let mut rec = Recorder::default();
    let mut warm = Recorder::default();
    let mut last_done = start;
    // Open loop: clients are staggered evenly over one interval.
    let first = s
        .interval
        .map(|iv| start + iv.mul_f64(i as f64 / s.clients as f64));
    let mut tick: u64 = 0;
    loop {
        let scheduled = match (s.interval, first) {
            (Some(iv), Some(first)) => {
                let t = first + iv.mul_f64(tick as f64);
                tick += 1;
                tokio::time::sleep_until(t.into()).await;
                t
            }
            _ => Instant::now(),
        };
        if s.measure_end.is_some_and(|end| scheduled >= end) {
            break;
        }
        let measured = scheduled >= s.measure_start;
        if measured
            && let Some(count) = s.count
            && s.issued.fetch_add(1, Ordering::Relaxed) >= count
        {
            break;
        }
        let interleaved = s.interleaved_at(scheduled);
        let ledger = match (&mut alt, interleaved) {
            (Some(alt), true) => alt,
            _ => &mut main,
        };
        let r = match (measured, interleaved) {
            (false, _) => &mut warm,
            (true, false) => &mut rec,
            (true, true) => &mut rec_alt,
        };
        let kind = pick(&s.mix, &mut rng);
        let debit = &own[rng.below(own.len())];
        match kind {
            OpKind::Single => {
                let credit = counterparty(&s, own, debit, &mut rng);
                let res = ledger
                    .create_transfer(authed(
                        CreateTransferRequest {
                            request_id: uuid::Uuid::new_v4().to_string(),
                            transfer: Some(spec(&s, debit, credit, &mut rng, false)),
                        },
                        &token,
                    ))
                    .await;
                record(r.kind(OpKind::Single), scheduled, res);
            }
            OpKind::Batch => {
                let transfers = (0..s.batch_size)
                    .map(|_| {
                        let d = &own[rng.below(own.len())];
                        let c = counterparty(&s, own, d, &mut rng);
                        spec(&s, d, c, &mut rng, false)
                    })
                    .collect();
                let res = ledger
                    .create_transfer_batch(authed(
                        CreateTransferBatchRequest {
                            request_id: uuid::Uuid::new_v4().to_string(),
                            transfers,
                            linked: false,
                        },
                        &token,
                    ))
                    .await;
                let kr = r.kind(OpKind::Batch);
                if let Some(resp) = record(kr, scheduled, res) {
                    for m in resp.into_inner().results {
                        match m.outcome {
                            Some(Outcome::Transfer(_)) => kr.members_ok += 1,
                            Some(Outcome::Error(e)) => {
                                let reason = ErrorReason::try_from(e.reason)
                                    .map(|r| r.as_str_name())
                                    .unwrap_or("UNKNOWN_REASON");
                                *kr.member_errors.entry(reason.to_owned()).or_default() += 1;
                            }
                            None => {
                                *kr.member_errors.entry("NO_OUTCOME".to_owned()).or_default() += 1
                            }
                        }
                    }
                }
            }
            OpKind::Hold | OpKind::Void => {
                let credit = counterparty(&s, own, debit, &mut rng);
                let res = ledger
                    .create_transfer(authed(
                        CreateTransferRequest {
                            request_id: uuid::Uuid::new_v4().to_string(),
                            transfer: Some(spec(&s, debit, credit, &mut rng, true)),
                        },
                        &token,
                    ))
                    .await;
                let hold = record(r.kind(OpKind::Hold), scheduled, res)
                    .and_then(|resp| resp.into_inner().transfer);
                if let Some(hold) = hold {
                    let void_start = Instant::now();
                    let res = ledger
                        .void_pending_transfer(authed(
                            VoidPendingTransferRequest {
                                request_id: uuid::Uuid::new_v4().to_string(),
                                pending_id: hold.id,
                            },
                            &token,
                        ))
                        .await;
                    record(r.kind(OpKind::Void), void_start, res);
                }
            }
            OpKind::Read => {
                let res = ledger
                    .get_balance(authed(
                        GetBalanceRequest {
                            account_id: debit.clone(),
                            as_of_time: None,
                        },
                        &token,
                    ))
                    .await;
                record(r.kind(OpKind::Read), scheduled, res);
            }
        }
        last_done = Instant::now();
    }
    (rec, rec_alt, last_done)
}

fn pick(mix: &Mix, rng: &mut Rng) -> OpKind {
    let mut x = (rng.next() % u64::from(mix.total())) as u32;
    for (w, k) in [
        (mix.single, OpKind::Single),
        (mix.batch, OpKind::Batch),
        (mix.hold, OpKind::Hold),
    ] {
        if x < w {
            return k;
        }
        x -= w;
    }
    OpKind::Read
}

/// The credit side: the hot account, one of the client's own accounts (`--keys own`),
/// or any account; never the debit account itself. With `--keys hot` the owner of the
/// hot account debits its other accounts.
fn counterparty<'a>(s: &'a Shared, own: &'a [String], debit: &str, rng: &mut Rng) -> &'a str {
    if s.own_only {
        // Setup opens at least two accounts per customer.
        loop {
            let c = &own[rng.below(own.len())];
            if c != debit {
                return c;
            }
        }
    }
    if let Some(hot) = &s.hot {
        if hot != debit {
            return hot;
        }
        // Only the hot account's owner gets here; it has at least two accounts.
        return own.iter().find(|a| *a != debit).map_or(hot, |a| a);
    }
    loop {
        let c = &s.all_accounts[rng.below(s.all_accounts.len())];
        if c != debit {
            return c;
        }
    }
}

fn spec(s: &Shared, debit: &str, credit: &str, rng: &mut Rng, pending: bool) -> TransferSpec {
    TransferSpec {
        debit_account_id: debit.to_owned(),
        credit_account_id: credit.to_owned(),
        amount: 1 + (rng.next() % 100) as i64,
        currency_code: s.currency.clone(),
        pending,
        timeout: pending.then_some(prost_types::Duration {
            seconds: HOLD_TIMEOUT_SECS,
            nanos: 0,
        }),
        ..Default::default()
    }
}

/// Records one call: its latency from `started` when OK, its code (and ErrorInfo
/// reason) when not. Returns the response when OK.
fn record<T>(rec: &mut KindRecorder, started: Instant, res: Result<T, Status>) -> Option<T> {
    match res {
        Ok(v) => {
            rec.latencies_us
                .push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
            Some(v)
        }
        Err(status) => {
            let code = code_name(status.code());
            *rec.errors_by_code.entry(code.to_owned()).or_default() += 1;
            if let Some(info) = status.get_details_error_info() {
                *rec.errors_by_reason
                    .entry(format!("{code}/{}", info.reason))
                    .or_default() += 1;
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The interleaved target's share of a window: the odd slices within it, cut at
    /// its ends.
    #[test]
    fn odd_slices_are_counted_within_the_window() {
        let start = Instant::now();
        let at = |secs: f64| start + Duration::from_secs_f64(secs);
        let slice = Duration::from_secs(1);
        let share = |a, b| odd_slice_secs(start, slice, at(a), at(b));
        assert!((share(0.0, 4.0) - 2.0).abs() < 1e-6);
        assert!((share(3.0, 23.0) - 10.0).abs() < 1e-6);
        assert!((share(0.5, 1.5) - 0.5).abs() < 1e-6);
        assert!((share(1.25, 1.75) - 0.5).abs() < 1e-6);
        assert!(share(2.0, 3.0).abs() < 1e-6);
    }
}
