#!/usr/bin/env bash
# The README's walk-through as a script: against a running `make run`, signs up and logs
# in a customer, logs in the operator created by `make run`, opens two accounts, books a
# cash deposit, a transfer and a hold, and lists the journal — every call through the
# gateway with buf curl (reflection, no proto files), every call after login with a token.
#
#   scripts/demo.sh            (USERNAME=bob scripts/demo.sh for another customer)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
USERNAME=${USERNAME:-alice}
BUF=$(scripts/tools.sh buf)
call() { "$BUF" curl --protocol grpc --http2-prior-knowledge "$@"; }
field() { python3 -c 'import json,sys
v=json.load(sys.stdin)
for k in sys.argv[1].split("."): v=v[int(k)] if k.isdigit() else v[k]
print(v)' "$1"; }
GW=http://127.0.0.1:50051
rid() { python3 -c 'import uuid; print(uuid.uuid4())'; }

# 1. Sign up a customer (public) and log in: every later call carries the token.
SIGNUP=$(call -d "{\"request_id\":\"$(rid)\",\"username\":\"$USERNAME\",\"email\":\"$USERNAME@example.com\",\"password\":\"a long passphrase 42\"}" $GW/ferrobank.identity.v1.IdentityService/CreateUser)
echo "$SIGNUP"
ALICE_ID=$(field user.id <<<"$SIGNUP")
ALICE=$(call -d '{"username":"'"$USERNAME"'","password":"a long passphrase 42"}' $GW/ferrobank.identity.v1.IdentityService/Login | field accessToken)
# The operator `make run` created; its generated password is in .dev/secrets/.
OPS_PASSWORD=$(cat "${DEV_DIR:-.dev}/secrets/operator-password")
OPS=$(call -d "{\"username\":\"ops\",\"password\":\"$OPS_PASSWORD\"}" $GW/ferrobank.identity.v1.IdentityService/Login | field accessToken)
# 2. Alice opens two USD accounts.
A1=$(call -H "authorization: Bearer $ALICE" -d "{\"request_id\":\"$(rid)\",\"owner_id\":\"$ALICE_ID\",\"currency_code\":\"USD\"}" $GW/ferrobank.ledger.v1.LedgerService/OpenAccount | field account.id)
A2=$(call -H "authorization: Bearer $ALICE" -d "{\"request_id\":\"$(rid)\",\"owner_id\":\"$ALICE_ID\",\"currency_code\":\"USD\"}" $GW/ferrobank.ledger.v1.LedgerService/OpenAccount | field account.id)
echo A1=$A1 A2=$A2
# 3. The operator books a 100.00 USD cash deposit from the cash vault.
VAULT=$(call -H "authorization: Bearer $OPS" -d '{"kind":"ACCOUNT_KIND_SYSTEM","system_role":"SYSTEM_ROLE_CASH_VAULT","currency_code":"USD"}' $GW/ferrobank.ledger.v1.LedgerService/ListAccounts | field accounts.0.id)
call -H "authorization: Bearer $OPS" -d "{\"request_id\":\"$(rid)\",\"transfer\":{\"debit_account_id\":\"$VAULT\",\"credit_account_id\":\"$A1\",\"amount\":\"10000\",\"currency_code\":\"USD\",\"description\":\"cash deposit\"}}" $GW/ferrobank.ledger.v1.LedgerService/CreateTransfer
# 4. Alice moves 25.00 to her second account, and places a 10.00 hold for 1 hour.
call -H "authorization: Bearer $ALICE" -d "{\"request_id\":\"$(rid)\",\"transfer\":{\"debit_account_id\":\"$A1\",\"credit_account_id\":\"$A2\",\"amount\":\"2500\",\"currency_code\":\"USD\"}}" $GW/ferrobank.ledger.v1.LedgerService/CreateTransfer
call -H "authorization: Bearer $ALICE" -d "{\"request_id\":\"$(rid)\",\"transfer\":{\"debit_account_id\":\"$A1\",\"credit_account_id\":\"$A2\",\"amount\":\"1000\",\"currency_code\":\"USD\",\"pending\":true,\"timeout\":\"3600s\"}}" $GW/ferrobank.ledger.v1.LedgerService/CreateTransfer
# 5. The journal and the balance.
call -H "authorization: Bearer $ALICE" -d "{\"account_id\":\"$A1\"}" $GW/ferrobank.ledger.v1.LedgerService/ListEntries
call -H "authorization: Bearer $ALICE" -d "{\"account_id\":\"$A1\"}" $GW/ferrobank.ledger.v1.LedgerService/GetBalance
# 6. A statement from the reporting replica: opening and closing balances, totals and
# each entry with its running balance (start_time is required; end_time unset = now).
call -H "authorization: Bearer $ALICE" -d "{\"account_id\":\"$A1\",\"start_time\":\"2020-01-01T00:00:00Z\"}" $GW/ferrobank.reporting.v1.ReportingService/GetStatement
