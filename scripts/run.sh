#!/usr/bin/env bash
# `make run` after the stack is up: migrate every service, print what to try, then run
# the whole platform in the foreground (Ctrl-C stops it; `make stop` stops the stack).
#
#   scripts/run.sh DIR
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${1:?usage: scripts/run.sh DIR}
# shellcheck disable=SC1091
source "$DIR/env"
export IDENTITY_DATABASE_URL LEDGER_DATABASE_URL PAYMENTS_DATABASE_URL
export LEDGER_REPORTING_DATABASE_URL REDIS_URL
# A dev Ed25519 signing key for identity, generated once under the stack directory.
FERROBANK_IDENTITY_SIGNING_KEY_FILES="$("$REPO/scripts/dev-keys.sh" "$DIR")"
export FERROBANK_IDENTITY_SIGNING_KEY_FILES
BIN="$REPO/target/release/ferrobank"

"$BIN" migrate

# A dev operator (staff who books cash in/out), created once with a generated password.
if [[ ! -f $DIR/secrets/operator-password ]]; then
    (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$DIR/secrets/operator-password")
    FERROBANK_ADMIN_PASSWORD=$(cat "$DIR/secrets/operator-password") \
        "$BIN" admin create-user --username ops --email ops@ferrobank.local --role operator
fi

BUF=$("$REPO/scripts/tools.sh" buf 2>/dev/null || echo buf)
cat >&2 <<MSG

Ferrobank is starting: gateway on 127.0.0.1:50051 (Ctrl-C stops it).
Try, from another shell:

  $BUF curl --protocol grpc --http2-prior-knowledge --list-services http://127.0.0.1:50051
  $BUF curl --protocol grpc --http2-prior-knowledge --list-methods http://127.0.0.1:50051
  $BUF curl --protocol grpc --http2-prior-knowledge -d '{"service":"ferrobank.ledger.v1.LedgerService"}' \\
      http://127.0.0.1:50051/grpc.health.v1.Health/Check
  grpcurl -plaintext 127.0.0.1:50051 list                     # if you have grpcurl
  scripts/demo.sh     # sign up, log in, open accounts, deposit, transfer, hold, journal

Metrics: curl http://127.0.0.1:9464/metrics     Stack: scripts/stack.sh status $DIR

MSG
exec "$BIN" all
