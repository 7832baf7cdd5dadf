//! The rate limiter's in-process decision, pure CPU (no Redis): the GCRA the gateway
//! falls back to when Redis is down (`--redis-fallback local`, the default). The Redis
//! path is one EVALSHA round trip and is measured end to end by `gateway_overhead`.
//!
//! `cargo bench -p ferrobank-gateway --bench rate_limit`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use ferrobank_gateway::layers::auth::Caller;
use ferrobank_gateway::layers::rate_limit::LocalLimiter;
use ferrobank_gateway::{MethodClass, Rate};
use uuid::Uuid;

/// Keys already in the limiter when a new one arrives.
const KEYS: u128 = 10_000;
/// New keys decided per freshly populated limiter (so it holds 10,000–15,000 keys).
const CHUNK: u64 = 5_000;

fn user(i: u128) -> Caller {
    Caller::User(Uuid::from_u128(i))
}

/// A limiter holding `KEYS` callers' read buckets.
fn populated(rate: Rate) -> LocalLimiter {
    let limiter = LocalLimiter::new();
    for i in 0..KEYS {
        assert!(limiter.check(user(i), MethodClass::Read, rate).allowed);
    }
    limiter
}

fn benches(c: &mut Criterion) {
    // Limits high enough never to refuse, so every call takes the admitting path
    // (read, compute, store); `refused` below measures the other one.
    let open = Rate::new(u32::MAX, u32::MAX).expect("a rate");
    let mut group = c.benchmark_group("rate_limit");

    let limiter = populated(open);
    let known = user(KEYS / 2);
    group.bench_function("local_existing_key", |b| {
        b.iter(|| black_box(limiter.check(black_box(known), MethodClass::Read, open)))
    });

    let strict = Rate::new(1, 1).expect("a rate");
    let limited = user(KEYS);
    assert!(limiter.check(limited, MethodClass::Read, strict).allowed);
    group.bench_function("local_existing_key_refused", |b| {
        b.iter(|| {
            let d = limiter.check(black_box(limited), MethodClass::Read, strict);
            debug_assert!(!d.allowed);
            black_box(d)
        })
    });

    // Each call is a caller the limiter has not seen, among 10,000 it has; only the
    // decisions are timed, not populating the limiters.
    let mut next = KEYS;
    group.bench_function("local_new_key_among_10k", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK);
                let limiter = populated(open);
                let fresh: Vec<Caller> = (0..n)
                    .map(|_| {
                        next += 1;
                        user(next)
                    })
                    .collect();
                let start = Instant::now();
                for &caller in &fresh {
                    black_box(limiter.check(caller, MethodClass::Read, open));
                }
                timed += start.elapsed();
                left -= n;
            }
            timed
        })
    });
    group.finish();
}

criterion_group! {
    name = rate_limit_benches;
    // Short by default (`make bench` runs every suite); criterion's flags override.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(rate_limit_benches);
