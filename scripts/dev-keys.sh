#!/usr/bin/env bash
# Generates the identity service's Ed25519 dev signing key under DIR if it is missing
# (idempotent: an existing key is kept, so tokens stay valid across `make run`s), and
# prints its path. For local development only; production keys come from a secret store.
#
#   scripts/dev-keys.sh DIR        # -> DIR/identity-signing-key.pem
set -euo pipefail

DIR=${1:?usage: scripts/dev-keys.sh DIR}
KEY="$DIR/identity-signing-key.pem"
mkdir -p "$DIR"
if [[ ! -s $KEY ]]; then
    command -v openssl >/dev/null || { echo "dev-keys: openssl not found" >&2; exit 1; }
    umask 077
    tmp=$(mktemp "$DIR/.identity-signing-key.XXXXXX")
    openssl genpkey -algorithm ed25519 -out "$tmp"
    mv "$tmp" "$KEY"
    echo "dev-keys: generated $KEY" >&2
fi
echo "$KEY"
