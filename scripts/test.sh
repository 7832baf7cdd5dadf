#!/usr/bin/env bash
# `make test` (and `make bench`): a throwaway stack (Postgres 15 primary + streaming
# replica + Redis) on free ports in a temporary directory, the whole workspace's tests
# (or, with --bench, the benchmarks) against it, and the stack torn down afterwards —
# also when a test fails or the run is interrupted.
#
#   scripts/test.sh [extra args for cargo nextest run / cargo test]
#   scripts/test.sh --bench [extra args for cargo bench]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

# The stack directory: Postgres runs as an unprivileged user, so it must be reachable
# by that user (mktemp under /tmp is).
STACK_DIR=$(mktemp -d /tmp/ferrobank-test.XXXXXX)
chmod 755 "$STACK_DIR"
cleanup() {
    local rc=$?
    scripts/stack.sh destroy "$STACK_DIR" >/dev/null 2>&1 || true
    exit "$rc"
}
trap cleanup EXIT INT TERM

# A base port whose four ports (primary, replica, Redis, pooler) are all free.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
BASE=""
for _ in $(seq 1 50); do
    candidate=$((20000 + RANDOM % 20000))
    if port_free "$candidate" && port_free $((candidate + 1)) &&
        port_free $((candidate + 2)) && port_free $((candidate + 3)); then
        BASE=$candidate
        break
    fi
done
[[ -n $BASE ]] || { echo "test: no free port range found" >&2; exit 1; }

scripts/stack.sh start "$STACK_DIR" --base-port "$BASE" --fast
# shellcheck disable=SC1091
source "$STACK_DIR/env"
export DATABASE_URL="$DATABASE_URL_ADMIN"
export DATABASE_URL_REPLICA="$DATABASE_URL_ADMIN_REPLICA"
export REDIS_URL FERROBANK_STACK_DIR IDENTITY_DATABASE_URL LEDGER_DATABASE_URL PAYMENTS_DATABASE_URL
export FERROBANK_STACK_SCRIPT="$REPO/scripts/stack.sh"

if [[ ${1:-} == --bench ]]; then
    shift
    cargo bench --locked -p ferrobank-ledger -p ferrobank-gateway -p ferrobank-auth "$@"
elif cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    echo "test: cargo-nextest not found, using cargo test" >&2
    cargo test --workspace --no-fail-fast "$@"
fi
