//! Gateway overhead: the same read RPC (GetAccount against an in-process upstream)
//! called directly and through the gateway, at concurrency 1 and 64. Prints requests/s
//! and p50/p99 for both and the ratios. Targets: < 15% added p50 and ≥ 80% of direct
//! throughput.
//!
//! `cargo bench -p ferrobank-gateway` (optimised build). The gateway runs its full
//! stack; with `REDIS_URL` set, rate limits are the real one-EVALSHA-per-call path,
//! otherwise the in-process limiter. `BENCH_SECS` sets each run's length (default 3).

#![allow(clippy::print_stdout)] // printing the results is what a bench binary is for

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrobank_gateway::{GatewayConfig, Rate};
use ferrobank_proto::ledger::ledger_service_client::LedgerServiceClient;
use tonic::transport::Channel;
use uuid::Uuid;

struct Run {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

async fn run(addr: SocketAddr, concurrency: usize, length: Duration) -> Run {
    let channel = channel(addr).await;
    // Warm up connections and caches.
    let warm = Instant::now() + Duration::from_millis(300);
    let mut client = LedgerServiceClient::new(channel.clone());
    let warm_user = Uuid::new_v4();
    while Instant::now() < warm {
        client
            .get_account(support::get_account(warm_user))
            .await
            .expect("warm-up call");
    }
    let start = Instant::now();
    let end = start + length;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let mut client = LedgerServiceClient::new(channel.clone());
            tokio::spawn(async move {
                let user = Uuid::new_v4();
                let mut latencies = Vec::with_capacity(100_000);
                while Instant::now() < end {
                    let t = Instant::now();
                    client
                        .get_account(support::get_account(user))
                        .await
                        .expect("call");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.expect("worker"));
    }
    let elapsed = start.elapsed();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Run {
        rps: all.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let length = Duration::from_secs(
            std::env::var("BENCH_SECS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(3),
        );
        let upstream = support::Upstream::start().await;
        let uri: ferrobank_config::http_uri::Uri =
            format!("http://{}", upstream.addr).parse().expect("uri");
        let mut config = GatewayConfig::new(
            vec![uri.clone()],
            vec![uri.clone()],
            vec![uri],
            Arc::new(ferrobank_auth::DevHeaderAuthenticator),
        );
        if let Ok(url) = std::env::var("REDIS_URL") {
            config.redis_url = Some(url.parse().expect("REDIS_URL"));
            config.redis_prefix = format!("bench:{}:", Uuid::new_v4().simple());
        }
        // Limits high enough never to refuse: the bench measures their cost, not them.
        config.rates = [Rate::new(u32::MAX, u32::MAX); 3];
        let redis = config.redis_url.is_some();
        let gateway = support::Gateway::start(config).await;

        println!(
            "gateway overhead, GetAccount, {}s per run, rate limits in {}",
            length.as_secs(),
            if redis { "Redis" } else { "process" }
        );
        println!(
            "{:>11} {:>8} {:>10} {:>10} {:>10}",
            "concurrency", "target", "req/s", "p50 µs", "p99 µs"
        );
        for concurrency in [1, 64] {
            let direct = run(upstream.addr, concurrency, length).await;
            let through = run(gateway.addr, concurrency, length).await;
            for (name, r) in [("direct", &direct), ("gateway", &through)] {
                println!(
                    "{:>11} {:>8} {:>10.0} {:>10} {:>10}",
                    concurrency,
                    name,
                    r.rps,
                    r.p50.as_micros(),
                    r.p99.as_micros()
                );
            }
            println!(
                "{:>11} throughput {:.0}% of direct, p50 {:+.0}%",
                concurrency,
                100.0 * through.rps / direct.rps,
                100.0 * (through.p50.as_secs_f64() / direct.p50.as_secs_f64() - 1.0)
            );
        }
    });
}
