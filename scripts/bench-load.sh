#!/usr/bin/env bash
# End-to-end load benchmark: a throwaway stack (Postgres primary + replica + Redis, with
# production durability: NOT --fast) on free ports, `ferrobank all` built in release
# and started against it, the `ferrobank-load` scenarios below run one after the other
# over real gRPC, one JSON result per scenario in benches/results/, and everything torn
# down on exit (also on failure or Ctrl-C).
#
#   scripts/bench-load.sh
#
#   a-uniform   single transfers, uniform keys, 32 clients, plus pgbench tpcb-like
#   b-hot       single transfers, one hot credit account, 32 clients
#   c-batch     batches of 100, 8 clients
#   d-open1000  single transfers offered open-loop at 1000/s, 32 clients (p99 target),
#               plus pgbench tpcb-like offered the same rate (-R) for its p99
#   e-batch-own batches of 100, 8 clients, each among its own accounts only: no two
#               batches share an account (the lock-free upper bound of c; not default)
#   l-latency   single transfers, one client, closed loop: the unloaded path's latency
#               (not in the default set)
#   g           gateway overhead: GetBalance (a real ledger read from Postgres) at 1 and
#               64 clients, straight to the ledger's port and through the gateway with
#               every layer on (Redis rate limit at a limit never reached), the two
#               interleaved in 1 s slices within each run (BENCH_SECONDS each), for
#               BENCH_G_ROUNDS runs; prints each run's ratios and their medians
#               (not in the default set)
#   ab          A/B of two builds' gateways: GetBalance at BENCH_G_CLIENTS clients through
#               this checkout's gateway and through BENCH_AB_BIN's (a second `ferrobank
#               all` on the same stack and ports of its own), interleaved like g; prints
#               how much of the other build's throughput this one keeps (not in the
#               default set; needs BENCH_AB_BIN)
#
# Environment: BENCH_SECONDS (measured seconds per scenario, default 20), BENCH_WARMUP
# (default 3), BENCH_RATE (scenario d, default 1000), BENCH_SCENARIOS (default
# "a b c d"), BENCH_DIRECT=1 (send the measured calls straight to the ledger's port,
# bypassing the gateway; setup still goes through it), BENCH_READ_RATE_PER_MIN (the
# gateway's read limit, default far above any run; 0 = off), BENCH_G_CLIENTS (scenario
# g's client counts, default "1 64"), BENCH_G_ROUNDS (scenario g's
# interleaved runs per client count, default 3), BENCH_G_SLICE (their slice, default 1s), BENCH_BIN (a `ferrobank` binary to run instead
# of this checkout's release build, e.g. an older commit's for an A/B), BENCH_OUT (default
# benches/results), BENCH_TAG (file name prefix, default the UTC time). Any other
# ferrobank setting in the environment (e.g. LEDGER_BATCH_WINDOW_US=0) reaches
# `ferrobank all`.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

SECS=${BENCH_SECONDS:-20}
WARMUP=${BENCH_WARMUP:-3}
RATE=${BENCH_RATE:-1000}
SCENARIOS=${BENCH_SCENARIOS:-a b c d}
OUT=${BENCH_OUT:-benches/results}
TAG=${BENCH_TAG:-$(date -u +%Y%m%dT%H%M%SZ)}
log() { echo "bench-load: $*" >&2; }

# Release builds first: they take minutes and need no stack.
cargo build --release --locked -p ferrobank -p ferrobank-load
BIN=${BENCH_BIN:-$REPO/target/release/ferrobank}
LOAD=$REPO/target/release/ferrobank-load

# The stack directory must be reachable by the unprivileged Postgres user.
STACK_DIR=$(mktemp -d /tmp/ferrobank-bench.XXXXXX)
chmod 755 "$STACK_DIR"
SERVER_PID=""
AB_PID=""
stop_server() { # PID
    [[ -n $1 ]] && kill -0 "$1" 2>/dev/null || return 0
    kill "$1" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.2
    done
    kill -9 "$1" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    stop_server "$SERVER_PID"
    stop_server "$AB_PID"
    if ((rc != 0)) && [[ -f $STACK_DIR/ferrobank.log ]]; then
        log "ferrobank all failed or the run was interrupted; last server log lines:"
        tail -n 20 "$STACK_DIR/ferrobank.log" >&2 || true
    fi
    scripts/stack.sh destroy "$STACK_DIR" >/dev/null 2>&1 || true
    rm -rf "$STACK_DIR"
    exit "$rc"
}
trap cleanup EXIT INT TERM

# A base port with twelve free ports: primary, replica, Redis, pooler (stack.sh), then
# the gateway, identity, ledger and payments of `ferrobank all`, then those of the
# second build's (scenario ab).
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
BASE=""
for _ in $(seq 1 50); do
    candidate=$((20000 + RANDOM % 20000))
    ok=1
    for off in $(seq 0 11); do
        port_free $((candidate + off)) || { ok=0; break; }
    done
    if ((ok)); then
        BASE=$candidate
        break
    fi
done
[[ -n $BASE ]] || { log "no free port range found"; exit 1; }

scripts/stack.sh start "$STACK_DIR" --base-port "$BASE"
# shellcheck disable=SC1091
source "$STACK_DIR/env"
export IDENTITY_DATABASE_URL LEDGER_DATABASE_URL PAYMENTS_DATABASE_URL
export LEDGER_REPORTING_DATABASE_URL REDIS_URL DATABASE_URL_ADMIN
FERROBANK_IDENTITY_SIGNING_KEY_FILES="$(scripts/dev-keys.sh "$STACK_DIR")"
export FERROBANK_IDENTITY_SIGNING_KEY_FILES

GATEWAY_PORT=$((BASE + 4))
export FERROBANK_GATEWAY_ADDR=127.0.0.1:$GATEWAY_PORT
export FERROBANK_IDENTITY_ADDR=127.0.0.1:$((BASE + 5))
export FERROBANK_LEDGER_ADDR=127.0.0.1:$((BASE + 6))
export FERROBANK_PAYMENTS_ADDR=127.0.0.1:$((BASE + 7))
export FERROBANK_ADMIN_ADDR=127.0.0.1:0
# The benchmark measures the platform, not the gateway's per-principal quotas: rate 0
# turns a class's limit off; the in-flight caps stay at their defaults. Reads keep a
# limit far above what the benchmark reaches, so scenario g pays for the Redis GCRA
# (BENCH_READ_RATE_PER_MIN=0 turns it off to measure its share).
export FERROBANK_GATEWAY_RATE_READ_PER_MIN=${BENCH_READ_RATE_PER_MIN:-600000000}
export FERROBANK_GATEWAY_RATE_WRITE_PER_MIN=0
export FERROBANK_GATEWAY_RATE_LOGIN_PER_MIN=0
# Production logging: JSON at info.
export FERROBANK_LOG_FORMAT=json RUST_LOG=${RUST_LOG:-info}

RUST_LOG=warn "$BIN" migrate
OPS_PASSWORD_FILE=$STACK_DIR/secrets/operator-password
(umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$OPS_PASSWORD_FILE")
FERROBANK_ADMIN_PASSWORD=$(cat "$OPS_PASSWORD_FILE") \
    "$BIN" admin create-user --username ops --email ops@bench.local --role operator

"$BIN" all >"$STACK_DIR/ferrobank.log" 2>&1 &
SERVER_PID=$!
TARGET=http://127.0.0.1:$GATEWAY_PORT
"$LOAD" --target "$TARGET" --wait-ready 60s --ready-only
if [[ -n ${BENCH_AB_BIN:-} ]]; then
    # The other build, on the same databases and Redis: the same users, tokens and
    # accounts work through either gateway.
    AB_TARGET=http://127.0.0.1:$((BASE + 8))
    FERROBANK_GATEWAY_ADDR=127.0.0.1:$((BASE + 8)) FERROBANK_IDENTITY_ADDR=127.0.0.1:$((BASE + 9)) \
        FERROBANK_LEDGER_ADDR=127.0.0.1:$((BASE + 10)) FERROBANK_PAYMENTS_ADDR=127.0.0.1:$((BASE + 11)) \
        "$BENCH_AB_BIN" all >"$STACK_DIR/ferrobank-ab.log" 2>&1 &
    AB_PID=$!
    "$LOAD" --target "$AB_TARGET" --wait-ready 60s --ready-only
fi

mkdir -p "$OUT"
common=(--target "$TARGET" --operator-user ops --operator-password-file "$OPS_PASSWORD_FILE"
    --warmup "${WARMUP}s" --server-pid "$SERVER_PID")
duration=(--duration "${SECS}s")
if [[ ${BENCH_DIRECT:-0} == 1 ]]; then
    common+=(--workload-target "http://$FERROBANK_LEDGER_ADDR")
fi
scenario() {
    local name=$1
    shift
    log "scenario $name: ferrobank-load $*"
    "$LOAD" "${common[@]}" "${duration[@]}" --name "$name" --json "$OUT/$TAG-$name.json" "$@"
    kill -0 "$SERVER_PID" 2>/dev/null || { log "ferrobank all exited during $name"; exit 1; }
}
# interleaved NAME ALT_TARGET TITLE A B [targets]: for each of BENCH_G_CLIENTS,
# BENCH_G_ROUNDS runs of GetBalance sent to the gateway and to ALT_TARGET in alternating
# slices, then each run's ratios (A, the gateway, against B, ALT_TARGET) and their
# medians; "targets" adds the issue's targets to the summary.
interleaved() {
    local name=$1 alt=$2 title=$3 a=$4 b=$5 targets=${6:-}
    local rounds=${BENCH_G_ROUNDS:-3} c r
    for c in ${BENCH_G_CLIENTS:-1 64}; do
        for r in $(seq 1 "$rounds"); do
            duration=(--duration "$((2 * SECS))s")
            scenario "$name-read-c$c-r$r" --clients "$c" --keys uniform --mix read=100 \
                --interleave-target "$alt" --interleave-slice "${BENCH_G_SLICE:-1s}"
            duration=(--duration "${SECS}s")
        done
        python3 - "$OUT/$TAG-$name" "$c" "$rounds" "$title" "$a" "$b" "$targets" <<'PY' >&2
import json, statistics, sys
prefix, clients, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
title, a_name, b_name, targets = sys.argv[4:8]
kept, added = [], []
for r in range(1, rounds + 1):
    report = json.load(open(f"{prefix}-read-c{clients}-r{r}.json"))
    a, b = report["results"][0], report["interleaved"]["results"][0]
    kept.append(a["calls_per_sec"] / b["calls_per_sec"])
    added.append(a["latency"]["p50_ms"] / b["latency"]["p50_ms"] - 1)
    print(f"{title}, {clients} clients, round {r}: "
          f"{a['calls_per_sec']:.0f}/s vs {b_name} {b['calls_per_sec']:.0f}/s "
          f"({100 * kept[-1]:.0f}% kept); p50 {a['latency']['p50_ms']:.3f} ms vs "
          f"{b['latency']['p50_ms']:.3f} ms ({100 * added[-1]:+.0f}%); "
          f"p99 {a['latency']['p99_ms']:.3f} ms vs {b['latency']['p99_ms']:.3f} ms")
    ac, bc = report.get("cpu_per_call"), report["interleaved"].get("cpu_per_call")
    if ac and bc and ac["server_us"] is not None and bc["server_us"] is not None:
        print(f"  CPU per call, {a_name} vs {b_name}: server {ac['server_us']:.0f} vs "
              f"{bc['server_us']:.0f} µs, load tool {ac['load_us']:.0f} vs {bc['load_us']:.0f} µs, "
              f"rest of the machine {ac['rest_us']:.0f} vs {bc['rest_us']:.0f} µs")
goals = (" (target >= 80%)", " (target < 15%)") if targets else ("", "")
print(f"{title}, {clients} clients, median of {rounds} rounds: "
      f"{100 * statistics.median(kept):.0f}% of {b_name} throughput kept{goals[0]}, "
      f"{100 * statistics.median(added):+.0f}% added to p50{goals[1]}")
PY
    done
}
for s in $SCENARIOS; do
    case $s in
        a) scenario a-uniform --clients 32 --keys uniform --mix single=100 --pgbench ;;
        b) scenario b-hot --clients 32 --keys hot --mix single=100 ;;
        c) scenario c-batch --clients 8 --keys uniform --mix batch=100 --batch-size 100 ;;
        d) scenario d-open"$RATE" --clients 32 --keys uniform --mix single=100 --rate "$RATE" --pgbench ;;
        e) scenario e-batch-own --clients 8 --keys own --mix batch=100 --batch-size 100 ;;
        l) scenario l-latency --clients 1 --keys uniform --mix single=100 ;;
        g)
            # Gateway and direct interleave in slices of BENCH_G_SLICE within one run,
            # each getting BENCH_SECONDS of the measured time, so both paths are measured
            # on the same machine: on a shared 2-core VM either path's throughput drifts
            # by tens of percent from one minute to the next, and runs one after the
            # other compared two different machines.
            interleaved g "http://$FERROBANK_LEDGER_ADDR" "gateway overhead" gateway direct targets
            ;;
        ab)
            [[ -n $AB_PID ]] || { log "scenario ab needs BENCH_AB_BIN"; exit 2; }
            interleaved ab "$AB_TARGET" "A/B" "this build" BENCH_AB_BIN
            ;;
        *) log "unknown scenario '$s' (use a b c d e l g ab)"; exit 2 ;;
    esac
done
log "peak RSS of ferrobank all: $(awk '/^VmHWM:/ {print $2, $3}' "/proc/$SERVER_PID/status")"
log "results in $OUT/$TAG-*.json"
