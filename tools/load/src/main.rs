//! `ferrobank-load`: drives a running Ferrobank over real gRPC with N concurrent clients
//! (setup unmeasured: customers, accounts, funding; then warm-up and the measured
//! phase), prints throughput, latency percentiles and errors by code per operation kind,
//! optionally runs pgbench's tpcb-like script at the same client count for a ratio, and
//! writes the whole result as JSON.

mod cli;
mod cpu;
mod pgbench;
mod setup;
mod stats;
mod workload;

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use serde::Serialize;

use crate::cli::{Args, Keys, Mix};
use crate::pgbench::PgbenchResult;
use crate::stats::KindSummary;

/// The run's configuration as recorded in the JSON.
#[derive(Serialize)]
struct Config {
    target: String,
    /// Where the measured operations went (`--workload-target`, else `target`).
    workload_target: String,
    clients: usize,
    customers: usize,
    connections: usize,
    accounts: usize,
    keys: Keys,
    mix: Mix,
    batch_size: usize,
    currency: String,
    duration_secs: Option<f64>,
    count: Option<u64>,
    warmup_secs: f64,
    rate: Option<f64>,
    loop_kind: &'static str,
}

/// Memory of the server process, from /proc/PID/status.
#[derive(Serialize)]
struct ServerMemory {
    pid: u32,
    peak_rss_kib: Option<u64>,
    rss_kib: Option<u64>,
}

/// Sums over every kind.
#[derive(Serialize)]
struct Totals {
    calls: u64,
    ok: u64,
    errors: u64,
    /// Single transfers, holds and applied batch members per second.
    transfers_per_sec: f64,
}

/// The JSON result.
#[derive(Serialize)]
struct Report {
    name: Option<String>,
    timestamp: String,
    git_commit: Option<String>,
    git_dirty: Option<bool>,
    config: Config,
    setup_secs: f64,
    measured_secs: f64,
    results: Vec<KindSummary>,
    totals: Totals,
    pgbench: Option<PgbenchResult>,
    /// Single-transfer throughput over pgbench tps (total transfers when the mix has no
    /// single transfers).
    ferrobank_over_pgbench: Option<f64>,
    server: Option<ServerMemory>,
    /// With `--interleave-target`: what it measured in its slices (`results` and
    /// `measured_secs` above are then the workload target's, in its own slices).
    interleaved: Option<Interleaved>,
    /// With `--interleave-target`: CPU time per successful call in the workload
    /// target's slices (see `cpu.rs`).
    cpu_per_call: Option<cpu::CpuPerCall>,
}

/// The interleaved target's side of an A/B run.
#[derive(Serialize)]
struct Interleaved {
    target: String,
    slice_secs: f64,
    measured_secs: f64,
    results: Vec<KindSummary>,
    /// CPU time per successful call in this target's slices.
    cpu_per_call: Option<cpu::CpuPerCall>,
}

/// Successful calls per second over all kinds.
fn ok_per_sec(results: &[KindSummary]) -> f64 {
    results.iter().map(|r| r.calls_per_sec).sum()
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "ferrobank-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "ferrobank-load: {msg}");
}

async fn run(args: Args) -> anyhow::Result<()> {
    setup::wait_ready(&args, args.wait_ready).await?;
    if args.ready_only {
        note(&format!("{} is SERVING", args.target));
        return Ok(());
    }
    // Fail before the long phases if the comparison cannot run.
    let pg = if args.pgbench {
        let url = args
            .pgbench_db_url
            .clone()
            .context("--pgbench needs --pgbench-db-url or DATABASE_URL_ADMIN")?;
        Some((pgbench::bindir(args.pg_bindir.as_deref())?, url))
    } else {
        None
    };

    note(&format!(
        "setup: {} customers, {} accounts",
        args.customers.unwrap_or(args.clients),
        args.accounts
    ));
    let fixture = setup::prepare(&args).await.context("setup")?;
    let setup_secs = fixture.setup_secs;
    let connections = fixture.channels.len();
    let customers = fixture.customers.len();
    note(&format!(
        "setup took {setup_secs:.1}s; warm-up {:?}, then {}",
        args.warmup,
        match args.count {
            Some(n) => format!("{n} operations"),
            None => format!("{:?}", args.duration),
        }
    ));
    let phase = workload::run(&args, fixture).await?;
    let results = phase.recorder.summarize(phase.elapsed_secs);
    let (main_cpu, alt_cpu) = phase.slice_cpu.unzip();
    let cpu_per_call = main_cpu.and_then(|c| c.per_call(ok_per_sec(&results)));
    let interleaved = match (phase.interleaved, &args.interleave_target) {
        (Some((recorder, secs)), Some(target)) => {
            let results = recorder.summarize(secs);
            Some(Interleaved {
                target: target.clone(),
                slice_secs: args.interleave_slice.as_secs_f64(),
                measured_secs: secs,
                cpu_per_call: alt_cpu.and_then(|c| c.per_call(ok_per_sec(&results))),
                results,
            })
        }
        _ => None,
    };

    let pgbench = match pg {
        Some((bindir, url)) => {
            let scale = args.pgbench_scale.unwrap_or(args.clients as u32).max(1);
            note(&format!("pgbench: -s {scale}, -c {} ...", args.clients));
            let (clients, jobs, rate) = (args.clients, args.pgbench_jobs, args.rate);
            let duration = if args.count.is_some() {
                std::time::Duration::from_secs_f64(phase.elapsed_secs)
            } else {
                args.duration
            };
            let r = tokio::task::spawn_blocking(move || {
                pgbench::run(&bindir, &url, clients, jobs, scale, duration, rate)
            })
            .await?
            .context("pgbench comparison")?;
            Some(r)
        }
        None => None,
    };

    let totals = Totals {
        calls: results.iter().map(|r| r.calls).sum(),
        ok: results.iter().map(|r| r.ok).sum(),
        errors: results.iter().map(|r| r.errors).sum(),
        // Folded from +0.0: an empty f64 sum is -0.0, printed as "-0.0".
        transfers_per_sec: results
            .iter()
            .filter_map(|r| r.transfers_per_sec)
            .fold(0.0, |sum, t| sum + t),
    };
    let single = results
        .iter()
        .find(|r| r.kind == stats::OpKind::Single)
        .and_then(|r| r.transfers_per_sec);
    let ratio = pgbench
        .as_ref()
        .filter(|p| p.tps > 0.0)
        .map(|p| single.unwrap_or(totals.transfers_per_sec) / p.tps);

    let report = Report {
        name: args.name.clone(),
        timestamp: chrono::Utc::now().to_rfc3339(),
        git_commit: git(&["rev-parse", "HEAD"]),
        git_dirty: git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty()),
        config: Config {
            target: args.target.clone(),
            workload_target: args
                .workload_target
                .clone()
                .unwrap_or_else(|| args.target.clone()),
            clients: args.clients,
            customers,
            connections,
            accounts: args.accounts,
            keys: args.keys,
            mix: args.mix,
            batch_size: args.batch_size,
            currency: args.currency.clone(),
            duration_secs: args.count.is_none().then_some(args.duration.as_secs_f64()),
            count: args.count,
            warmup_secs: args.warmup.as_secs_f64(),
            rate: args.rate,
            loop_kind: if args.rate.is_some() {
                "open"
            } else {
                "closed"
            },
        },
        setup_secs,
        measured_secs: phase.elapsed_secs,
        results,
        totals,
        pgbench,
        ferrobank_over_pgbench: ratio,
        server: args.server_pid.map(server_memory),
        interleaved,
        cpu_per_call,
    };

    print_report(&report).context("writing the report")?;
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        note(&format!("wrote {}", path.display()));
    }
    Ok(())
}

fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn server_memory(pid: u32) -> ServerMemory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    ServerMemory {
        pid,
        peak_rss_kib: field("VmHWM:"),
        rss_kib: field("VmRSS:"),
    }
}

fn print_report(r: &Report) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let c = &r.config;
    writeln!(
        out,
        "ferrobank-load{}: {} clients over {} connections, keys={:?}, mix single={} batch={}x{} hold={} read={}, {} loop{}",
        r.name
            .as_deref()
            .map(|n| format!(" [{n}]"))
            .unwrap_or_default(),
        c.clients,
        c.connections,
        c.keys,
        c.mix.single,
        c.mix.batch,
        c.batch_size,
        c.mix.hold,
        c.mix.read,
        c.loop_kind,
        c.rate
            .map(|r| format!(" at {r}/s offered"))
            .unwrap_or_default(),
    )?;
    writeln!(
        out,
        "measured {:.2}s after {:.1}s warm-up (setup {:.1}s, not measured)",
        r.measured_secs, c.warmup_secs, r.setup_secs
    )?;
    print_kinds(&mut out, &r.results)?;
    if let Some(i) = &r.interleaved {
        writeln!(
            out,
            "interleaved with {} in {:.1}s slices: the table above is {}, {:.2}s; {} had {:.2}s:",
            i.target,
            i.slice_secs,
            r.config.workload_target,
            r.measured_secs,
            i.target,
            i.measured_secs
        )?;
        print_kinds(&mut out, &i.results)?;
        for (target, cpu) in [
            (&r.config.workload_target, &r.cpu_per_call),
            (&i.target, &i.cpu_per_call),
        ] {
            if let Some(c) = cpu {
                let server = c
                    .server_us
                    .map_or_else(|| "-".to_owned(), |us| format!("{us:.1}"));
                writeln!(
                    out,
                    "CPU per call, {target}: server {server} µs, load {:.1} µs, rest {:.1} µs, \
                     machine {:.1} µs ({:.2} cores busy)",
                    c.load_us, c.rest_us, c.machine_us, c.busy_cores
                )?;
            }
        }
    }
    writeln!(
        out,
        "total: {} ok, {} errors, {:.1} transfers/s",
        r.totals.ok, r.totals.errors, r.totals.transfers_per_sec
    )?;
    if let Some(p) = &r.pgbench {
        writeln!(
            out,
            "pgbench tpcb-like: {:.1} tps (-c {} -j {} -s {} -T {}, latency avg {} ms)",
            p.tps,
            p.clients,
            p.jobs,
            p.scale,
            p.seconds,
            p.latency_avg_ms
                .map(|l| format!("{l:.2}"))
                .unwrap_or_else(|| "?".to_owned())
        )?;
        if let Some([p50, p90, p99, max]) = p.latency_percentiles_ms {
            writeln!(
                out,
                "pgbench latency{}: p50 {p50:.2} ms, p90 {p90:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
                p.rate.map(|r| format!(" at -R {r}")).unwrap_or_default()
            )?;
        }
    }
    if let Some(ratio) = r.ferrobank_over_pgbench {
        writeln!(out, "ferrobank/pgbench = {ratio:.3}")?;
    }
    if let Some(m) = &r.server {
        writeln!(
            out,
            "server pid {}: peak RSS {} MiB",
            m.pid,
            m.peak_rss_kib
                .map(|k| format!("{:.1}", k as f64 / 1024.0))
                .unwrap_or_else(|| "?".to_owned())
        )?;
    }
    Ok(())
}

fn print_kinds(out: &mut impl Write, results: &[KindSummary]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<7} {:>8} {:>7} {:>10} {:>12} {:>9} {:>9} {:>9} {:>9}",
        "kind", "ok", "errors", "calls/s", "transfers/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    )?;
    for k in results {
        let (p50, p90, p99, max) = k
            .latency
            .as_ref()
            .map(|l| (l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms))
            .unwrap_or_default();
        writeln!(
            out,
            "{:<7} {:>8} {:>7} {:>10.1} {:>12} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            k.kind.name(),
            k.ok,
            k.errors,
            k.calls_per_sec,
            k.transfers_per_sec
                .map(|t| format!("{t:.1}"))
                .unwrap_or_else(|| "-".to_owned()),
            p50,
            p90,
            p99,
            max
        )?;
        for (code, n) in &k.errors_by_code {
            writeln!(out, "        error {code}: {n}")?;
        }
        for (reason, n) in &k.errors_by_reason {
            writeln!(out, "        reason {reason}: {n}")?;
        }
        for (reason, n) in &k.member_errors {
            writeln!(out, "        batch member refused {reason}: {n}")?;
        }
    }
    Ok(())
}
