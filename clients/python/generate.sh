#!/usr/bin/env bash
# Generates Python message classes and gRPC stubs for every proto under proto/ferrobank
# into clients/python/ferrobank_stubs/ (git-ignored) with grpcio-tools, and makes sure
# the venv also has googleapis-common-protos (google.rpc.Status / ErrorInfo, for error
# details). Prints the venv's python path, so callers can write
#
#   PY=$(clients/python/generate.sh) && "$PY" clients/python/scenario.py 127.0.0.1:50051 ops "$PW"
#
# The venv is the one scripts/tools.sh manages (.tools/venv); only paths go to stdout.
# Safe to run concurrently: generation happens under a lock, into a fresh directory that
# replaces the old one.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
OUT="$HERE/ferrobank_stubs"
COMMON_PROTOS_VERSION="${FERROBANK_COMMON_PROTOS_VERSION:-1.76.0}"

PY="$("$REPO/scripts/tools.sh" python-grpc)"

# One generator at a time (parallel test processes); pip shares tools.sh's lock.
exec 8>"$REPO/.tools/.lock"
if command -v flock >/dev/null 2>&1; then
    flock 8
fi

if ! "$PY" -c 'import google.rpc.status_pb2, google.rpc.error_details_pb2' >/dev/null 2>&1; then
    echo "generate.sh: installing googleapis-common-protos==$COMMON_PROTOS_VERSION into the venv" >&2
    "$PY" -m pip install --quiet --disable-pip-version-check \
        "googleapis-common-protos==$COMMON_PROTOS_VERSION" >&2
fi

mapfile -t PROTOS < <(cd "$REPO/proto" && find ferrobank -name '*.proto' | sort)
[[ ${#PROTOS[@]} -gt 0 ]] || { echo "generate.sh: no protos under $REPO/proto/ferrobank" >&2; exit 1; }

TMP="$(mktemp -d "$HERE/.ferrobank_stubs.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
(cd "$REPO/proto" && "$PY" -m grpc_tools.protoc -I . \
    --python_out="$TMP" --grpc_python_out="$TMP" "${PROTOS[@]}")
rm -rf "$OUT"
mv "$TMP" "$OUT"
trap - EXIT

echo "$PY"
