#!/usr/bin/env bash
# The scenario of scenario.py with `buf curl` through server reflection — no proto files,
# no generated code: sign up a fresh customer and log in, open two USD accounts, book a
# 100.00 cash deposit from the USD cash vault as the operator, move 25.00 between the
# accounts as the customer, check balances and the journal, and check that an overdraft
# fails with FAILED_PRECONDITION / ERROR_REASON_INSUFFICIENT_FUNDS and moves nothing.
#
#   clients/python/scenario_buf.sh HOST:PORT OPERATOR_USERNAME OPERATOR_PASSWORD
#
# buf comes from scripts/tools.sh (or $BUF). Exits 0 with a one-line summary, or
# non-zero with what differed.
set -euo pipefail
trap 'echo "buf scenario FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR

if [[ $# -ne 3 ]]; then
    echo "usage: $0 HOST:PORT OPERATOR_USERNAME OPERATOR_PASSWORD" >&2
    exit 2
fi
GW="http://$1"
OPS_USER=$2
OPS_PASSWORD=$3
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUF=${BUF:-$("$REPO/scripts/tools.sh" buf)}

fail() {
    echo "buf scenario FAILED: $*" >&2
    exit 1
}
call() { "$BUF" curl --protocol grpc --http2-prior-knowledge --timeout 20s "$@"; }
# Prints one field of the JSON on stdin, by dotted path (numbers index arrays); missing
# fields (proto3 JSON leaves out zeros) print as 0.
field() {
    python3 -c 'import json,sys
v=json.load(sys.stdin)
for k in sys.argv[1].split("."):
    try: v=v[int(k)] if k.isdigit() else v[k]
    except (KeyError, IndexError): v=0; break
print(v)' "$1"
}
expect() { # what got want
    [[ $2 == "$3" ]] || fail "$1: got '$2', want '$3'"
}
rid() { python3 -c 'import uuid; print(uuid.uuid4())'; }
LEDGER=$GW/ferrobank.ledger.v1.LedgerService
IDENTITY=$GW/ferrobank.identity.v1.IdentityService
PASSWORD="a long passphrase 42"

# 1. Sign up a fresh customer (public) and log in.
USERNAME="buf-$(python3 -c 'import uuid; print(uuid.uuid4().hex[:12])')"
SIGNUP=$(call -d "{\"request_id\":\"$(rid)\",\"username\":\"$USERNAME\",\"email\":\"$USERNAME@example.com\",\"password\":\"$PASSWORD\"}" "$IDENTITY/CreateUser")
USER_ID=$(field user.id <<<"$SIGNUP")
CUSTOMER=$(call -d "{\"username\":\"$USERNAME\",\"password\":\"$PASSWORD\"}" "$IDENTITY/Login" | field accessToken)

# 2. Two USD accounts.
open() { call -H "authorization: Bearer $CUSTOMER" -d "{\"request_id\":\"$(rid)\",\"owner_id\":\"$USER_ID\",\"currency_code\":\"USD\"}" "$LEDGER/OpenAccount" | field account.id; }
A1=$(open)
A2=$(open)

# 3. The operator finds the USD cash vault and books a 100.00 deposit.
OPS_LOGIN=$(python3 -c 'import json,sys; print(json.dumps({"username": sys.argv[1], "password": sys.argv[2]}))' "$OPS_USER" "$OPS_PASSWORD")
OPS=$(call -d "$OPS_LOGIN" "$IDENTITY/Login" | field accessToken)
VAULTS=$(call -H "authorization: Bearer $OPS" -d '{"kind":"ACCOUNT_KIND_SYSTEM","system_role":"SYSTEM_ROLE_CASH_VAULT","currency_code":"USD"}' "$LEDGER/ListAccounts")
expect "USD cash vaults" "$(python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("accounts", [])))' <<<"$VAULTS")" 1
VAULT=$(field accounts.0.id <<<"$VAULTS")
transfer() { # token debit credit amount
    call -H "authorization: Bearer $1" -d "{\"request_id\":\"$(rid)\",\"transfer\":{\"debit_account_id\":\"$2\",\"credit_account_id\":\"$3\",\"amount\":\"$4\",\"currency_code\":\"USD\"}}" "$LEDGER/CreateTransfer"
}
transfer "$OPS" "$VAULT" "$A1" 10000 >/dev/null

# 4. The customer moves 25.00 to the second account.
expect "transfer status" "$(transfer "$CUSTOMER" "$A1" "$A2" 2500 | field transfer.status)" TRANSFER_STATUS_POSTED

# 5. Balances and the journal (newest first).
balance() { call -H "authorization: Bearer $CUSTOMER" -d "{\"account_id\":\"$1\"}" "$LEDGER/GetBalance" | field postedBalance; }
expect "a1 posted balance" "$(balance "$A1")" 7500
expect "a2 posted balance" "$(balance "$A2")" 2500
ENTRIES=$(call -H "authorization: Bearer $CUSTOMER" -d "{\"account_id\":\"$A1\"}" "$LEDGER/ListEntries" |
    python3 -c 'import json,sys
print(",".join("%s:%s" % (e.get("amount", 0), e.get("balanceAfter", 0)) for e in json.load(sys.stdin).get("entries", [])))')
expect "a1 entries amount:balance_after, newest first" "$ENTRIES" "-2500:7500,10000:10000"

# 6. An overdraft is refused with a stable reason and moves nothing. buf curl exits with
# the gRPC code shifted left by three (FAILED_PRECONDITION = 9 -> 72) and prints the
# status, details included, as JSON on stderr.
RC=0
ERR=$(transfer "$CUSTOMER" "$A1" "$A2" 100000000 2>&1 >/dev/null) || RC=$?
expect "overdraft exit code (FAILED_PRECONDITION << 3)" "$RC" 72
# The ErrorInfo's reason: from buf's decoded "debug" form if it has one, else from the
# base64 bytes (ErrorInfo.reason is field 1, a string).
REASON=$(python3 -c 'import base64,json,sys
err=json.load(sys.stdin)
for d in err.get("details", []):
    if d.get("type") != "google.rpc.ErrorInfo": continue
    if "reason" in d.get("debug", {}): print(d["debug"]["reason"]); break
    b=base64.b64decode(d["value"] + "=" * (-len(d["value"]) % 4)); i=0
    while i < len(b):
        tag=b[i]; i+=1; n=0; s=0
        while True:
            c=b[i]; i+=1; n|=(c&0x7f)<<s; s+=7
            if c < 0x80: break
        if tag == 0x0a: print(b[i:i+n].decode()); break
        i+=n
    break' <<<"$ERR") || fail "overdraft error is not buf's JSON status: $ERR"
expect "overdraft ErrorInfo.reason" "$REASON" ERROR_REASON_INSUFFICIENT_FUNDS
expect "a1 posted balance after the refused overdraft" "$(balance "$A1")" 7500
expect "a2 posted balance after the refused overdraft" "$(balance "$A2")" 2500

echo "buf scenario ok: customer $USERNAME, a1 $A1 = 75.00 USD, a2 $A2 = 25.00 USD, 2 entries, overdraft refused with ERROR_REASON_INSUFFICIENT_FUNDS"
