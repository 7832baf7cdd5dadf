//! Command-line arguments: the target, the workload shape (clients, mix, key choice,
//! duration or count, open or closed loop) and the optional pgbench comparison.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use serde::Serialize;

/// Drives a running Ferrobank over real gRPC with N concurrent clients and reports
/// throughput, latency percentiles and errors by status code; optionally compares with
/// pgbench's tpcb-like script against the same Postgres.
#[derive(Parser, Debug, Clone)]
#[command(name = "ferrobank-load", version, about)]
pub struct Args {
    /// The gateway (plaintext HTTP/2); only loopback targets are expected.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub target: String,
    /// Send the measured operations here instead of --target (setup still goes through
    /// --target), e.g. the ledger's own port to measure what the gateway adds.
    #[arg(long)]
    pub workload_target: Option<String>,
    /// Also send the measured operations here, alternating with the workload target in
    /// time slices of --interleave-slice, and report each target apart: an A/B of two
    /// paths under the same machine conditions, where runs one after the other compare
    /// a machine whose speed has drifted in between. Closed loop, fixed duration only;
    /// each target gets half of --duration.
    #[arg(long)]
    pub interleave_target: Option<String>,
    /// Length of one slice of --interleave-target.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub interleave_slice: Duration,
    /// The operator that funds the accounts from the cash vault.
    #[arg(long, default_value = "ops")]
    pub operator_user: String,
    /// File holding the operator's password (first line).
    #[arg(long, default_value = ".dev/secrets/operator-password")]
    pub operator_password_file: PathBuf,
    /// Concurrent clients, each with its own customer and token.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Customers to sign up (accounts are spread over them); defaults to --clients.
    #[arg(long)]
    pub customers: Option<usize>,
    /// Clients sharing one HTTP/2 connection.
    #[arg(long, default_value_t = 8)]
    pub clients_per_connection: usize,
    /// Length of the measured phase, e.g. `20s`, `1500ms`, `2m`.
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    pub duration: Duration,
    /// Measure exactly this many operations instead of a fixed duration.
    #[arg(long)]
    pub count: Option<u64>,
    /// Unmeasured load before the measured phase.
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    pub warmup: Duration,
    /// Customer accounts opened and funded during setup.
    #[arg(long, default_value_t = 1000)]
    pub accounts: usize,
    /// Key choice: `uniform`, `hot` (one account is the credit side of every transfer) or
    /// `own` (both sides among the client's own accounts).
    #[arg(long, value_enum, default_value_t = Keys::Uniform)]
    pub keys: Keys,
    /// Operation weights, e.g. `single=80,batch=5,hold=5,read=10`.
    #[arg(long, value_parser = parse_mix, default_value = "single=100,batch=0,hold=0,read=0")]
    pub mix: Mix,
    /// Members per CreateTransferBatch call.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Currency of every account and transfer.
    #[arg(long, default_value = "USD")]
    pub currency: String,
    /// Offered load in operations per second across all clients (open loop, latency
    /// measured from the scheduled start); closed loop when absent.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Per-call deadline.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub call_timeout: Duration,
    /// A name for this run, recorded in the JSON result.
    #[arg(long)]
    pub name: Option<String>,
    /// Where to write the JSON result.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Poll the gateway's health until SERVING for at most this long before starting.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub wait_ready: Duration,
    /// Only wait for the gateway to be SERVING (see --wait-ready), then exit.
    #[arg(long)]
    pub ready_only: bool,
    /// Process id of the server: its peak RSS (VmHWM) is recorded at the end.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Also run pgbench's tpcb-like script at the same client count and duration (and
    /// open loop at the same --rate when one is given), reporting its latency percentiles.
    #[arg(long)]
    pub pgbench: bool,
    /// Superuser URL on the same Postgres primary (a scratch database `pgbench_load` is
    /// dropped and recreated there).
    #[arg(long, env = "DATABASE_URL_ADMIN", hide_env_values = true)]
    pub pgbench_db_url: Option<String>,
    /// pgbench scale factor; defaults to --clients.
    #[arg(long)]
    pub pgbench_scale: Option<u32>,
    /// pgbench worker threads (`-j`).
    #[arg(long, default_value_t = 2)]
    pub pgbench_jobs: u32,
    /// Directory holding pgbench and psql; defaults to `pg_config --bindir`.
    #[arg(long)]
    pub pg_bindir: Option<PathBuf>,
}

/// How transfer counterparties are chosen.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Keys {
    /// Debit one of the client's own accounts, credit any account, uniformly.
    Uniform,
    /// Debit one of the client's own accounts, always credit the one hot account.
    Hot,
    /// Debit and credit two of the client's own accounts: clients never share an
    /// account (with one customer per client), so their transfers never wait on each
    /// other's row locks.
    Own,
}

/// Relative weights of the operation kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Mix {
    /// CreateTransfer, posted at once.
    pub single: u32,
    /// CreateTransferBatch of --batch-size members, not linked.
    pub batch: u32,
    /// CreateTransfer with `pending` (a hold), then VoidPendingTransfer.
    pub hold: u32,
    /// GetBalance of one of the client's accounts.
    pub read: u32,
}

impl Mix {
    /// Sum of the weights.
    pub fn total(&self) -> u32 {
        self.single + self.batch + self.hold + self.read
    }
}

/// Parses `20s`, `1500ms`, `2m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .with_context(|| format!("bad duration '{s}': expected e.g. 20s, 500ms, 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => bail!("bad duration unit in '{s}': use ms, s or m"),
    };
    if !secs.is_finite() || secs < 0.0 {
        bail!("bad duration '{s}'");
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `single=80,batch=5,hold=5,read=10`; omitted kinds weigh 0.
pub fn parse_mix(s: &str) -> anyhow::Result<Mix> {
    let mut mix = Mix {
        single: 0,
        batch: 0,
        hold: 0,
        read: 0,
    };
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .with_context(|| format!("bad mix entry '{part}': expected kind=weight"))?;
        let w: u32 = v
            .trim()
            .parse()
            .with_context(|| format!("bad weight in mix entry '{part}'"))?;
        match k.trim() {
            "single" => mix.single = w,
            "batch" => mix.batch = w,
            "hold" => mix.hold = w,
            "read" => mix.read = w,
            other => bail!("unknown mix kind '{other}': use single, batch, hold, read"),
        }
    }
    if mix.total() == 0 {
        bail!("mix '{s}' has no positive weight");
    }
    Ok(mix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn mix_parses_and_rejects_unknown_kinds() {
        let m = parse_mix("single=80,read=20").unwrap();
        assert_eq!((m.single, m.batch, m.hold, m.read), (80, 0, 0, 20));
        assert!(parse_mix("single=0").is_err());
        assert!(parse_mix("writes=1").is_err());
    }
}
