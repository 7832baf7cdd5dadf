#!/usr/bin/env bash
# Checks the ledger's SQL (migrations/ledger/*.sql) on a throwaway PostgreSQL 15
# cluster:
#   1. applies the migrations in version order, each in its own transaction, as
#      the non-superuser role "ledger" that owns database "ledger" (as refinery does);
#   2. runs tests/sql/ledger_checks.sql (single-session checks);
#   3. runs the multi-session checks: concurrent duplicate requests, a request_id
#      reused concurrently with another payload, opposite transfers (no deadlock),
#      two concurrent expiry sweepers, gap-free event cursor and per-account event
#      order under concurrent writers, NOTIFY;
#   4. with --bench, measures the functions with pgbench (see docs/ledger-sql.md).
#
# Usage: scripts/ledger-sql-check.sh [--bench] [--keep]
# Env:   LEDGER_CHECK_PORT (default 55510), PG_BIN (default /usr/lib/postgresql/15/bin),
#        BENCH_SECONDS (default 15).
# Runs as root (the cluster then runs as the "postgres" system user) or as any
# user allowed to run initdb. Everything lives in a temporary directory that is
# removed at the end (kept with --keep).
set -euo pipefail

bench=false
keep=false
for arg in "$@"; do
  case "$arg" in
    --bench) bench=true ;;
    --keep) keep=true ;;
    *) echo "usage: $0 [--bench] [--keep]" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
pg_bin=${PG_BIN:-/usr/lib/postgresql/15/bin}
port=${LEDGER_CHECK_PORT:-55510}
bench_seconds=${BENCH_SECONDS:-15}
work=$(mktemp -d /tmp/ledger-sql-check.XXXXXX)
chmod 755 "$work"

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if [ "$(id -u)" = 0 ]; then chown postgres "$work"; fi

cleanup() {
  as_pg "$pg_bin/pg_ctl" -D "$work/data" -m fast stop >/dev/null 2>&1 || true
  if $keep; then echo "kept $work (port $port)"; else rm -rf "$work"; fi
}
trap cleanup EXIT

fail() { echo "FAILED: $*" >&2; exit 1; }
ok() { echo "ok - $*"; }

# psql as role ledger; extra arguments are passed through.
q() { psql -X -q -v ON_ERROR_STOP=1 -h "$work" -p "$port" -U ledger -d "${DB:-ledger}" "$@"; }
qv() { q -At "$@"; }

echo "== cluster on port $port in $work"
as_pg "$pg_bin/initdb" -D "$work/data" -A trust -U postgres >/dev/null
as_pg "$pg_bin/pg_ctl" -D "$work/data" -l "$work/log" -w \
  -o "-p $port -k $work -c listen_addresses='' -c max_connections=100 -c shared_buffers=256MB -c max_wal_size=2GB" \
  start >/dev/null
psql -X -q -h "$work" -p "$port" -U postgres -d postgres \
  -c "create role ledger login" -c "create database ledger owner ledger" >/dev/null

migrate() {
  local db=$1 f
  for f in $(ls "$root"/migrations/ledger/V*__*.sql | sort -V); do
    DB=$db q --single-transaction -f "$f" >/dev/null || fail "migration $(basename "$f") on $db"
  done
}

echo "== migrations (as role ledger, one transaction each)"
migrate ledger
ok "applied $(ls "$root"/migrations/ledger/V*__*.sql | wc -l) migrations as a non-superuser"

echo "== single-session checks (tests/sql/ledger_checks.sql)"
q -f "$root/tests/sql/ledger_checks.sql" 2>&1 | sed -e 's/^psql:[^ ]*: //' -e 's/^NOTICE:  //' \
  | grep -v -E '^(CONTEXT|PL/pgSQL)' || fail "tests/sql/ledger_checks.sql"

# ---------------------------------------------------------------------------
# Multi-session checks. A barrier: sessions block on a shared advisory lock
# that a holder session keeps for a moment, so they start together.
# ---------------------------------------------------------------------------

barrier_hold() {  # holds advisory lock $1 for $2 seconds, in the background
  psql -X -q -h "$work" -p "$port" -U ledger -d ledger \
    -c "select pg_advisory_lock($1)" -c "select pg_sleep($2)" >/dev/null &
  sleep 0.3
}
barrier_wait_sql() { echo "select pg_advisory_lock_shared($1); select pg_advisory_unlock_shared($1);"; }

acct() {  # opens a USD account for owner $1, funded with $2 from the vault; prints its id
  qv -c "select a from (select (ledger.open_account(gen_random_uuid(), ledger.uuid_v7(),
           ('00000000-0000-4000-8000-' || lpad('$1', 12, '0'))::uuid, 'USD', 0)).account_id as a) x,
         lateral ledger.create_transfer(gen_random_uuid(), null,
           (select id from ledger.accounts where currency = 'USD' and system_role = 'cash_vault'), x.a, $2, 'USD') t"
}

echo "== concurrent duplicates"
a1=$(acct 101 100000); a2=$(acct 102 0); b1=$(acct 103 100000); b2=$(acct 104 0)
for w in 1 2; do
  cat >"$work/dup$w.sql" <<SQL
create function pg_temp.call(p_rid uuid, p_d uuid, p_c uuid, p_amt bigint) returns ledger.transfer_result
language plpgsql as \$\$
begin
  loop
    begin
      return ledger.create_transfer(p_rid, ledger.uuid_v7(), p_d, p_c, p_amt, 'USD');
    exception when serialization_failure then
      -- What the Rust store does with 40001: retry; the retry replays the record.
      raise notice 'retry after 40001';
    end;
  end loop;
end \$\$;
$(barrier_wait_sql 4242)
do \$\$
declare r ledger.transfer_result;
begin
  for i in 1 .. 40 loop  -- one transaction per request, like the service
    r := pg_temp.call(('dddddddd-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, '$a1', '$a2', i);
    raise notice 'row|%|%|%|%|%|%|%', i, r.request_id, r.status, r.transfer_id, r.debit_balance, r.credit_balance, r.created_at;
    commit;
  end loop;
  r := pg_temp.call('dddddddd-0000-4000-8000-999999999999', '$( [ $w = 1 ] && echo "$a1" || echo "$b1")',
                    '$( [ $w = 1 ] && echo "$a2" || echo "$b2")', 1000);
  raise notice 'row|41|%|%', r.request_id, r.status;
end \$\$;
SQL
done
barrier_hold 4242 1
q -f "$work/dup1.sql" >/dev/null 2>"$work/dup1.err" & p1=$!
q -f "$work/dup2.sql" >/dev/null 2>"$work/dup2.err" & p2=$!
wait $p1 $p2 || { cat "$work/dup1.err" "$work/dup2.err"; fail "duplicate senders"; }
for w in 1 2; do grep -oP 'NOTICE:  row\|\K.*' "$work/dup$w.err" >"$work/dup$w.out"; done
head -40 "$work/dup1.out" >"$work/dup1.head"; head -40 "$work/dup2.out" >"$work/dup2.head"
[ "$(wc -l <"$work/dup1.head")" = 40 ] || fail "duplicate sender output incomplete"
cmp -s "$work/dup1.head" "$work/dup2.head" || { diff "$work/dup1.head" "$work/dup2.head" | head; fail "duplicate requests returned different outcomes"; }
[ "$(qv -c "select count(*) from ledger.transfers where debit_account_id = '$a1' and credit_account_id = '$a2' and amount <= 40")" = 40 ] \
  || fail "40 requests sent twice concurrently did not produce exactly 40 transfers"
[ "$(qv -c "select sum(amount) from ledger.entries where account_id = '$a2' and amount <= 40")" = 820 ] || fail "duplicates moved money twice"
retried=$(cat "$work/dup1.err" "$work/dup2.err" | grep -c 'retry after 40001' || true)
ok "40 requests sent twice at the same moment: identical outcomes, one effect each (40001 retries in this section, reuse case included: $retried)"
s1=$(sed -n 41p "$work/dup1.out" | cut -d'|' -f3); s2=$(sed -n 41p "$work/dup2.out" | cut -d'|' -f3)
[ "$(printf '%s\n%s\n' "$s1" "$s2" | sort | tr '\n' ' ')" = "ok request_id_reused " ] \
  || fail "concurrent reuse of a request_id with another payload gave '$s1' and '$s2'"
ok "one request_id used concurrently with two payloads: one ok, one request_id_reused (via 40001 + retry)"

echo "== opposite transfers do not deadlock"
x=$(acct 111 1000000); y=$(acct 112 1000000)
cat >"$work/xy.sql" <<SQL
select status from ledger.create_transfer(gen_random_uuid(), null, '$x', '$y', 1, 'USD');
SQL
cat >"$work/yx.sql" <<SQL
select status from ledger.create_transfer(gen_random_uuid(), null, '$y', '$x', 1, 'USD');
SQL
cat >"$work/xyb.sql" <<SQL
select count(*) from ledger.create_transfers(false, array[gen_random_uuid(), gen_random_uuid()], null,
  array['$y', '$x']::uuid[], array['$x', '$y']::uuid[], array[1, 1]::bigint[], null, null, null, null, null, null);
SQL
pgbench -n -h "$work" -p "$port" -U ledger -c 8 -j 2 -T 5 -f "$work/xy.sql" -f "$work/yx.sql" -f "$work/xyb.sql" ledger \
  >"$work/deadlock.out" 2>&1 || { tail "$work/deadlock.out"; fail "pgbench with opposite transfers failed"; }
grep -q "number of failed transactions: 0 " "$work/deadlock.out" || { tail "$work/deadlock.out"; fail "failed transactions"; }
! grep -qi deadlock "$work/log" || fail "the server log reports a deadlock"
ok "8 clients x 5 s of x->y, y->x and mixed batches: $(grep -oP 'processed: \K[0-9]+' "$work/deadlock.out") transactions, 0 failed, no deadlock"

echo "== two concurrent expiry sweepers"
sleep 1.1  # let the holds left by the single-session checks (1 s timeouts) expire, then drain them
q -c "select ledger.expire_pending(1000)" >/dev/null
s1=$(acct 121 1000000); s2=$(acct 122 0); s3=$(acct 123 1000000)
q -c "select count(*) from ledger.create_transfers(false, array(select gen_random_uuid() from generate_series(1, 300)), null,
        array(select case when g % 2 = 0 then '$s1'::uuid else '$s3'::uuid end from generate_series(1, 300) g),
        array_fill('$s2'::uuid, array[300]), array(select g::bigint from generate_series(1, 300) g), null,
        array_fill(true, array[300]), array_fill(1::bigint, array[300]), null, null, null)" >/dev/null
[ "$(qv -c "select pending_credits from ledger.accounts where id = '$s2'")" = 45150 ] || fail "300 holds not in place"
sleep 0.2
for w in 1 2; do
  cat >"$work/sweep$w.sql" <<SQL
$(barrier_wait_sql 4343)
do \$\$
declare n integer; total integer := 0;
begin
  loop
    n := ledger.expire_pending(7);
    commit;
    exit when n = 0;
    total := total + n;
  end loop;
  raise notice 'swept=%', total;
end \$\$;
SQL
done
barrier_hold 4343 1
q -f "$work/sweep1.sql" >/dev/null 2>"$work/sweep1.out" & p1=$!
q -f "$work/sweep2.sql" >/dev/null 2>"$work/sweep2.out" & p2=$!
wait $p1 $p2
n1=$(grep -oP 'swept=\K[0-9]+' "$work/sweep1.out"); n2=$(grep -oP 'swept=\K[0-9]+' "$work/sweep2.out")
[ $((n1 + n2)) = 300 ] || fail "sweepers expired $n1 + $n2 holds, expected 300"
[ "$(qv -c "select count(*) from ledger.transfers where credit_account_id = '$s2' and status = 'expired'")" = 300 ] \
  || fail "not all holds expired"
[ "$(qv -c "select count(*) from ledger.events e join ledger.transfers t on t.id = e.aggregate_id
             where t.credit_account_id = '$s2' and e.type = 'transfer.expired'")" = 300 ] || fail "expiry events != 300"
[ "$(qv -c "select sum(pending_debits + pending_credits) from ledger.accounts where id in ('$s1', '$s2', '$s3')")" = 0 ] \
  || fail "pending columns not released exactly once"
ok "two sweepers started together expired $n1 + $n2 = 300 holds: each released exactly once, one event each"

echo "== event cursor under concurrent writers"
q -c "create table public.check_done (done boolean)" >/dev/null
accts=()
for i in 1 2 3 4 5 6; do accts+=("$(acct $((130 + i)) 1000000)"); done
arr="array['${accts[0]}', '${accts[1]}', '${accts[2]}', '${accts[3]}', '${accts[4]}', '${accts[5]}']::uuid[]"
cat >"$work/w1.sql" <<SQL
\set i random(1, 6)
\set j random(1, 5)
select status from ledger.create_transfer(gen_random_uuid(), null, ($arr)[:i], ($arr)[1 + (:i + :j - 1) % 6], 1, 'USD');
SQL
cat >"$work/w2.sql" <<SQL
select count(*) from ledger.create_transfers(false, array(select gen_random_uuid() from generate_series(1, 10)), null,
  array(select ($arr)[1 + (g * 7 + (random() * 5)::int) % 6] from generate_series(1, 10) g),
  array(select ($arr)[1 + (g * 7 + 1) % 6] from generate_series(1, 10) g),
  array_fill(1::bigint, array[10]), null, null, null, null, null, null);
SQL
cat >"$work/w3.sql" <<SQL
\set i random(1, 6)
select ledger.post_pending(gen_random_uuid(),
  (ledger.create_transfer(gen_random_uuid(), null, ($arr)[:i], ($arr)[1 + :i % 6], 3, 'USD', true, 60000)).transfer_id, 2);
SQL
# The reader never writes (a reader with an xid would hold the horizon back on itself).
cat >"$work/reader.sql" <<'SQL'
do $$
declare
  v_start_key bigint; v_start_seq bigint; v_key bigint; v_seq bigint;
  v_seen bigint[] := '{}'; v_expect bigint[]; v_n integer; v_done boolean := false; v_polls integer := 0; r record;
begin
  select order_key, seq into v_start_key, v_start_seq from ledger.events_head();
  v_key := v_start_key; v_seq := v_start_seq;
  loop
    v_n := 0;
    for r in select order_key, seq from ledger.read_events(v_key, v_seq, 200) loop
      v_seen := v_seen || r.seq; v_key := r.order_key; v_seq := r.seq; v_n := v_n + 1;
    end loop;
    v_polls := v_polls + 1;
    if v_n = 0 then
      exit when v_done;
      v_done := exists (select 1 from public.check_done);  -- writers finished: one more full drain
      perform pg_sleep(0.02);
    end if;
  end loop;
  select array_agg(seq order by order_key, seq) into v_expect
    from ledger.events where (order_key, seq) > (v_start_key, v_start_seq);
  if v_expect is distinct from v_seen then
    raise exception 'FAILED: cursor saw % events, table has % after the start cursor', cardinality(v_seen), cardinality(v_expect);
  end if;
  raise notice 'reader saw % events in % polls, no gap, no duplicate', cardinality(v_seen), v_polls;
end $$;
SQL
q -f "$work/reader.sql" 2>"$work/reader.out" & reader=$!
sleep 0.3
pgbench -n -h "$work" -p "$port" -U ledger -c 6 -j 2 -T 5 -f "$work/w1.sql@6" -f "$work/w2.sql@2" -f "$work/w3.sql@2" ledger \
  >"$work/writers.out" 2>&1 || { tail "$work/writers.out"; fail "writers"; }
q -c "insert into public.check_done values (true)"
wait $reader || { cat "$work/reader.out"; fail "event reader"; }
ok "$(grep -oP 'NOTICE:  \K.*' "$work/reader.out") ($(grep -oP 'processed: \K[0-9]+' "$work/writers.out") writer transactions)"
causal=$(qv -c "
  with ev as (select distinct on (e.aggregate_id) e.aggregate_id as tid, e.order_key, e.seq
                from ledger.events e
               where e.type in ('transfer.created', 'transfer.posted')
               order by e.aggregate_id, e.order_key desc, e.seq desc),
       en as (select n.account_id, n.seq as entry_seq, ev.order_key, ev.seq as event_seq
                from ledger.entries n join ev on ev.tid = n.transfer_id),
       chk as (select entry_seq, lag(entry_seq) over (partition by account_id order by order_key, event_seq) as prev from en)
  select count(*) filter (where prev >= entry_seq) || ' ' || count(*) from chk")
[ "${causal%% *}" = 0 ] || fail "$causal entries appear out of order in the event stream"
ok "per account, events come in the order the balances changed (${causal##* } entries checked)"
q -c "drop table public.check_done"

echo "== NOTIFY"
sleep 0.1
psql -X -h "$work" -p "$port" -U ledger -d ledger -c "listen ledger_events" -c "select pg_sleep(1)" >"$work/listen.out" 2>&1 &
listener=$!
sleep 0.3
q -c "select ledger.create_transfer(gen_random_uuid(), null, '$x', '$y', 1, 'USD')" >/dev/null
wait $listener
grep -q 'notification "ledger_events"' "$work/listen.out" || { cat "$work/listen.out"; fail "no notification"; }
ok "a committed transfer wakes a LISTEN ledger_events session"

echo "== invariants after the concurrent checks"
bad=$(qv -c "select string_agg(check_name || '=' || violations, ' ') from ledger.verify_invariants() where violations <> 0")
[ -z "$bad" ] || fail "invariants: $bad"
ok "all invariants hold"

if $bench; then
  echo "== pgbench (${bench_seconds}s each; synchronous_commit=on; 1000 accounts)"
  psql -X -q -h "$work" -p "$port" -U postgres -d postgres -c "create database ledger_bench owner ledger" >/dev/null
  migrate ledger_bench
  DB=ledger_bench q >/dev/null <<'SQL'
select count(*) from generate_series(1, 1000) n,
  ledger.open_account(gen_random_uuid(), ('00000000-0000-7000-8000-' || lpad(to_hex(n), 12, '0'))::uuid,
                      ('00000000-0000-4000-8000-' || lpad(to_hex(n), 12, '0'))::uuid, 'USD', 0) r;
select count(*) from ledger.create_transfers(false, array(select gen_random_uuid() from generate_series(1, 1000)), null,
  array_fill((select id from ledger.accounts where currency = 'USD' and system_role = 'cash_vault'), array[1000]),
  array(select ('00000000-0000-7000-8000-' || lpad(to_hex(n), 12, '0'))::uuid from generate_series(1, 1000) n),
  array_fill(1000000000000::bigint, array[1000]), null, null, null, null, null, null);
vacuum analyze ledger.accounts;
SQL
  acc="('00000000-0000-7000-8000-' || lpad(to_hex"
  cat >"$work/b_single_uniform.sql" <<SQL
\set a random(1, 1000)
\set b random(1, 999)
select status from ledger.create_transfer(gen_random_uuid(), null, $acc(:a::int), 12, '0'))::uuid,
  $acc(((:a::int + :b::int - 1) % 1000) + 1), 12, '0'))::uuid, 1, 'USD');
SQL
  cat >"$work/b_single_hot.sql" <<SQL
\set a random(2, 1000)
select status from ledger.create_transfer(gen_random_uuid(), null, $acc(:a::int), 12, '0'))::uuid,
  '00000000-0000-7000-8000-000000000001'::uuid, 1, 'USD');
SQL
  batch() {  # $1: debit expression, $2: credit expression (over d, c, g)
    cat <<SQL
with m as (select gen_random_uuid() as rid, $1 as d, $2 as c from generate_series(1, 100) g)
select count(*) from ledger.create_transfers(false, (select array_agg(rid) from m), null,
  (select array_agg($acc(d), 12, '0'))::uuid) from m), (select array_agg($acc(c), 12, '0'))::uuid) from m),
  array_fill(1::bigint, array[100]), null, null, null, null, null, null);
SQL
  }
  batch "1 + (g * 7 + floor(random() * 1000)::int) % 1000" "1 + (g * 13 + floor(random() * 1000)::int) % 1000" >"$work/b_batch_uniform.sql"
  batch "(:client_id % 8) * 125 + 1 + floor(random() * 125)::int" "(:client_id % 8) * 125 + 1 + floor(random() * 125)::int" >"$work/b_batch_disjoint.sql"
  batch "2 + floor(random() * 999)::int" "1" >"$work/b_batch_hot.sql"
  run() {  # name, clients, transfers per transaction, script [, query mode]
    local out
    out=$(pgbench -n -M "${5:-prepared}" -h "$work" -p "$port" -U ledger -c "$2" -j 2 -T "$bench_seconds" \
      -f "$work/$4" ledger_bench 2>&1) \
      || { echo "$out" | tail -3; fail "pgbench $1"; }
    local tps failed
    tps=$(echo "$out" | grep -oP '^tps = \K[0-9.]+')
    failed=$(echo "$out" | grep -oP 'failed transactions: \K[0-9]+')
    printf '%-50s clients=%-3s calls/s=%-7.0f transfers/s=%-7s failed=%s\n' "$1" "$2" "$tps" \
      "$(awk -v t="$tps" -v n="$3" 'BEGIN { printf "%.0f", t * n }')" "$failed"
  }
  run "create_transfer, uniform over 1000 accounts" 32 1 b_single_uniform.sql
  run "create_transfer, uniform, unnamed statements" 32 1 b_single_uniform.sql extended
  run "create_transfer, all credit one hot account" 32 1 b_single_hot.sql
  run "create_transfer, all credit one hot account" 4 1 b_single_hot.sql
  run "create_transfers x100, uniform (overlapping)" 8 100 b_batch_uniform.sql
  run "create_transfers x100, disjoint per client" 8 100 b_batch_disjoint.sql
  run "create_transfers x100, all credit one hot account" 4 100 b_batch_hot.sql
  DB=ledger_bench q -At -c "select 'invariants after the benchmark: ' || coalesce(string_agg(check_name || '=' || violations, ' '), 'all hold')
                             from ledger.verify_invariants() where violations <> 0"
fi

echo "all ledger SQL checks passed"
