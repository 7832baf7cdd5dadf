//! The pgbench comparison: a scratch database `pgbench_load` on the same cluster,
//! initialised at a scale factor, then the built-in tpcb-like script at the same client
//! count and duration. Runs after the Ferrobank phase, never at the same time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde::Serialize;

/// The scratch database, dropped and recreated on every run.
const DB: &str = "pgbench_load";

/// What pgbench reported.
#[derive(Debug, Clone, Serialize)]
pub struct PgbenchResult {
    pub scale: u32,
    pub clients: usize,
    pub jobs: u32,
    pub seconds: u64,
    /// "tps = … (without initial connection time)".
    pub tps: f64,
    /// "latency average = … ms", when printed.
    pub latency_avg_ms: Option<f64>,
    /// Offered rate (`-R`), when the comparison ran open loop like the load.
    pub rate: Option<f64>,
    /// Per-transaction latency percentiles from pgbench's log (from the scheduled
    /// start under `-R`, as the load tool measures open loop): p50, p90, p99, max.
    pub latency_percentiles_ms: Option<[f64; 4]>,
    pub command: String,
}

/// Where pgbench and psql live.
pub fn bindir(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(d) = explicit {
        return Ok(d.to_owned());
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if d.join("pgbench").is_file() {
            return Ok(d);
        }
    }
    let d = PathBuf::from("/usr/lib/postgresql/15/bin");
    ensure!(
        d.join("pgbench").is_file(),
        "pgbench not found (no pg_config, no /usr/lib/postgresql/15/bin/pgbench); pass --pg-bindir"
    );
    Ok(d)
}

/// Runs pgbench -i, then the timed run. Blocking; call from `spawn_blocking`.
pub fn run(
    bindir: &Path,
    admin_url: &str,
    clients: usize,
    jobs: u32,
    scale: u32,
    duration: Duration,
    rate: Option<f64>,
) -> anyhow::Result<PgbenchResult> {
    let mut url = url::Url::parse(admin_url).context("--pgbench-db-url is not a URL")?;
    let maintenance = url.to_string();
    url.set_path(&format!("/{DB}"));
    let bench = url.to_string();
    let psql = bindir.join("psql");
    let pgbench = bindir.join("pgbench");

    for sql in [
        format!("DROP DATABASE IF EXISTS {DB}"),
        format!("CREATE DATABASE {DB}"),
    ] {
        run_quiet(
            Command::new(&psql).args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &maintenance,
                "-c",
                &sql,
            ]),
            &sql,
        )?;
    }
    run_quiet(
        Command::new(&pgbench).args(["-i", "-q", "-s", &scale.to_string(), &bench]),
        "pgbench -i",
    )?;

    let seconds = duration.as_secs_f64().ceil().max(1.0) as u64;
    let mut args = vec![
        "-n".to_owned(),
        "-M".to_owned(),
        "prepared".to_owned(),
        "-c".to_owned(),
        clients.to_string(),
        "-j".to_owned(),
        jobs.to_string(),
        "-T".to_owned(),
        seconds.to_string(),
    ];
    // Per-transaction log, for percentiles: one file per thread in a private dir.
    let log_dir = std::env::temp_dir().join(format!("ferrobank-pgbench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&log_dir);
    std::fs::create_dir_all(&log_dir).context("creating the pgbench log directory")?;
    if let Some(r) = rate {
        args.extend(["-R".to_owned(), format!("{r}")]);
    }
    args.push("-l".to_owned());
    let log_prefix = log_dir.join("tx");
    let out = Command::new(&pgbench)
        .args(&args)
        .arg(format!("--log-prefix={}", log_prefix.display()))
        .arg(&bench)
        .output()
        .context("running pgbench")?;
    let latency_percentiles_ms = percentiles(&log_dir);
    let _ = std::fs::remove_dir_all(&log_dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "pgbench failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let (tps, latency_avg_ms) = parse(&stdout)?;
    // Best effort: the scratch database is only disk space.
    let _ = Command::new(&psql)
        .args([
            "-X",
            "-q",
            "-d",
            &maintenance,
            "-c",
            &format!("DROP DATABASE IF EXISTS {DB}"),
        ])
        .output();
    Ok(PgbenchResult {
        scale,
        clients,
        jobs,
        seconds,
        tps,
        latency_avg_ms,
        rate,
        latency_percentiles_ms,
        command: format!("pgbench {} {DB}", args.join(" ")),
    })
}

/// p50/p90/p99/max (ms) of the third column (latency, µs) of pgbench's
/// per-transaction logs in `dir`; None when there are none.
fn percentiles(dir: &Path) -> Option<[f64; 4]> {
    let mut us: Vec<u64> = Vec::new();
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let text = std::fs::read_to_string(entry.path()).ok()?;
        us.extend(
            text.lines()
                .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok()),
        );
    }
    if us.is_empty() {
        return None;
    }
    us.sort_unstable();
    let at = |q: f64| {
        let i = ((us.len() as f64 * q).ceil() as usize).clamp(1, us.len()) - 1;
        us[i] as f64 / 1000.0
    };
    Some([at(0.50), at(0.90), at(0.99), at(1.0)])
}

fn run_quiet(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Extracts tps (without initial connection time) and the average latency.
fn parse(stdout: &str) -> anyhow::Result<(f64, Option<f64>)> {
    let number = |line: &str| {
        line.split('=')
            .nth(1)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let tps = stdout
        .lines()
        .find(|l| l.starts_with("tps = ") && l.contains("without initial connection time"))
        .and_then(number)
        .with_context(|| {
            format!("no 'tps = … (without initial connection time)' in pgbench output:\n{stdout}")
        })?;
    let latency = stdout
        .lines()
        .find(|l| l.starts_with("latency average = "))
        .and_then(number);
    Ok((tps, latency))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbench_15_output() {
        let out = "transaction type: <builtin: TPC-B (sort of)>\n\
                   latency average = 12.345 ms\n\
                   initial connection time = 40.1 ms\n\
                   tps = 2591.884123 (without initial connection time)\n";
        let (tps, lat) = parse(out).unwrap();
        assert!((tps - 2591.884123).abs() < 1e-9);
        assert_eq!(lat, Some(12.345));
        assert!(parse("nothing").is_err());
    }
}
