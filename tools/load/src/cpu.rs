//! CPU time by interleaved slice (`--interleave-target`): at every slice boundary the
//! load tool reads, from `/proc`, the CPU time used so far by the server process
//! (`--server-pid`), by itself, and by the whole machine. The time between two
//! boundaries belongs to the target of that slice, so each target's CPU cost per call
//! comes out of one run, on one machine: what a gateway costs beyond the direct path in
//! the server, in the client, and everywhere else (Postgres, Redis, the kernel).
//!
//! `/proc` counts in USER_HZ ticks, 100 per second on Linux: over a 1 s slice a
//! process's reading is good to about 1%. Calls still in flight at a boundary finish in
//! the next slice, on both targets alike.

use std::time::Instant;

use serde::Serialize;

/// `/proc`'s clock ticks per second (USER_HZ; fixed at 100 for user space on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU time used so far, in ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    server: Option<u64>,
    load: u64,
    machine: u64,
}

impl Reading {
    /// Now, or `None` where `/proc` cannot be read (not Linux). A server that cannot be
    /// read (gone, or not ours) reads as `None` on its own.
    pub fn now(server_pid: Option<u32>) -> Option<Self> {
        let load = process_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        let machine = machine_busy_ticks(&std::fs::read_to_string("/proc/stat").ok()?)?;
        let server = server_pid
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
            .and_then(|stat| process_ticks(&stat));
        Some(Self {
            server,
            load,
            machine,
        })
    }
}

/// utime + stime of a `/proc/<pid>/stat` line. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from its closing parenthesis.
fn process_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3, utime field 14, stime field 15.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Busy ticks of all CPUs: the `cpu` line of `/proc/stat` less idle and iowait.
fn machine_busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    // Guest time is already counted in user time.
    let guest = ticks.get(8).copied().unwrap_or(0) + ticks.get(9).copied().unwrap_or(0);
    Some(total - idle - guest)
}

/// The CPU time spent in one target's slices.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SliceCpu {
    /// Wall seconds of the slices counted.
    pub secs: f64,
    /// CPU seconds of the server process (`None` when it could not be read).
    pub server: Option<f64>,
    /// CPU seconds of the load tool.
    pub load: f64,
    /// CPU seconds of the whole machine.
    pub machine: f64,
}

impl Default for SliceCpu {
    /// No slices yet: nothing spent, the server's share known (zero).
    fn default() -> Self {
        Self {
            secs: 0.0,
            server: Some(0.0),
            load: 0.0,
            machine: 0.0,
        }
    }
}

impl SliceCpu {
    fn add(&mut self, secs: f64, from: Reading, to: Reading) {
        let delta = |a: u64, b: u64| b.saturating_sub(a) as f64 / TICKS_PER_SEC;
        let server = from.server.zip(to.server).map(|(a, b)| delta(a, b));
        // A slice without a server reading leaves the server's total unknown.
        self.server = self.server.zip(server).map(|(sum, d)| sum + d);
        self.secs += secs;
        self.load += delta(from.load, to.load);
        self.machine += delta(from.machine, to.machine);
    }

    /// Per call at `calls_per_sec` over these slices, in µs.
    pub fn per_call(&self, calls_per_sec: f64) -> Option<CpuPerCall> {
        let calls = calls_per_sec * self.secs;
        (calls > 0.0).then(|| CpuPerCall {
            server_us: self.server.map(|s| s * 1e6 / calls),
            load_us: self.load * 1e6 / calls,
            rest_us: (self.machine - self.server.unwrap_or(0.0) - self.load) * 1e6 / calls,
            machine_us: self.machine * 1e6 / calls,
            busy_cores: self.machine / self.secs,
        })
    }
}

/// CPU time per successful call.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct CpuPerCall {
    /// In the server process (`--server-pid`).
    pub server_us: Option<f64>,
    /// In the load tool.
    pub load_us: f64,
    /// Everywhere else on the machine: databases, Redis, the kernel's own threads.
    pub rest_us: f64,
    /// All of the machine's CPUs.
    pub machine_us: f64,
    /// Cores busy on average over these slices.
    pub busy_cores: f64,
}

/// Splits readings taken at slice boundaries (`(boundary index, when, reading)`, in
/// order) between the two targets: slice `k` runs from boundary `k` to `k + 1` and is
/// the interleaved target's when `k` is odd. Only whole slices are counted.
pub fn split(readings: &[(u64, Instant, Option<Reading>)]) -> (SliceCpu, SliceCpu) {
    let (mut main, mut alt) = (SliceCpu::default(), SliceCpu::default());
    for pair in readings.windows(2) {
        let [(k, t0, Some(a)), (k1, t1, Some(b))] = pair else {
            continue;
        };
        if *k1 != k + 1 {
            continue;
        }
        let secs = t1.saturating_duration_since(*t0).as_secs_f64();
        let side = if k % 2 == 1 { &mut alt } else { &mut main };
        side.add(secs, *a, *b);
    }
    (main, alt)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// utime and stime are found after a command name with spaces and parentheses.
    #[test]
    fn reads_process_ticks_after_an_awkward_name() {
        let stat = "4242 (tokio (rt) w) S 1 2 3 4 5 6 7 8 9 10 250 70 0 0 20 0 4 0 100";
        assert_eq!(process_ticks(stat), Some(320));
        assert_eq!(process_ticks("4242 (x) S 1 2"), None);
    }

    /// Busy is everything but idle and iowait, guest time counted once.
    #[test]
    fn machine_busy_leaves_out_idle_iowait_and_guest() {
        let stat = "cpu  100 5 50 1000 20 3 2 1 7 0\ncpu0 50 2 25 500 10 1 1 0 0 0\n";
        // user 100 + nice 5 + system 50 + irq 3 + softirq 2 + steal 1 (+ guest 7 in user).
        assert_eq!(machine_busy_ticks(stat), Some(161));
    }

    /// Even slices go to the workload target, odd ones to the interleaved one; a
    /// missing reading or a gap drops only the slices it touches.
    #[test]
    fn splits_slices_between_targets() {
        let t = Instant::now();
        let at = |k: u64, server: u64, load: u64, machine: u64| {
            (
                k,
                t + Duration::from_secs(k),
                Some(Reading {
                    server: Some(server),
                    load,
                    machine,
                }),
            )
        };
        let readings = vec![
            at(4, 0, 0, 0),
            at(5, 100, 20, 180), // slice 4 (main): 1.0 s server, 0.2 load, 1.8 machine
            at(6, 150, 30, 360), // slice 5 (alt): 0.5, 0.1, 1.8
            (7, t + Duration::from_secs(7), None),
            at(8, 400, 60, 900),  // slices 6 and 7 dropped (no reading at 7)
            at(9, 480, 70, 1080), // slice 8 (main): 0.8, 0.1, 1.8
        ];
        let (main, alt) = split(&readings);
        assert_eq!(main.secs, 2.0);
        assert_eq!(main.server, Some(1.8));
        assert!((main.load - 0.3).abs() < 1e-9 && (main.machine - 3.6).abs() < 1e-9);
        assert_eq!((alt.secs, alt.server), (1.0, Some(0.5)));
        let per_call = main.per_call(1000.0).expect("calls");
        assert_eq!(per_call.server_us, Some(900.0));
        assert!((per_call.rest_us - (3.6 - 1.8 - 0.3) * 1e6 / 2000.0).abs() < 1e-6);
        assert!((per_call.busy_cores - 1.8).abs() < 1e-9);
    }
}
