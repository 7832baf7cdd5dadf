-- Single-session checks of the ledger SQL functions (migrations/ledger).
-- Run against a freshly migrated, otherwise empty ledger database:
--   psql -v ON_ERROR_STOP=1 -f tests/sql/ledger_checks.sql <dsn>
-- (scripts/ledger-sql-check.sh does that, then runs the multi-session checks.)
-- Every check prints "ok - ..." or stops the script with "FAILED: ...".

\set ON_ERROR_STOP 1
\pset pager off
\o /dev/null
set client_min_messages = notice;

-- ---------------------------------------------------------------------------
-- helpers (session-local)
-- ---------------------------------------------------------------------------

create function pg_temp.ok(p_cond boolean, p_what text) returns void
language plpgsql as $$
begin
  if p_cond is not true then
    raise exception 'FAILED: %', p_what;
  end if;
  raise notice 'ok - %', p_what;
end $$;

create function pg_temp.owner(n integer) returns uuid
language sql immutable as $$ select ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid $$;

create function pg_temp.vault(p_cur text) returns uuid
language sql as $$ select id from ledger.accounts where currency = p_cur and system_role = 'cash_vault' $$;

create function pg_temp.open(p_owner integer, p_cur text default 'USD', p_od bigint default 0) returns uuid
language sql as $$
  select (ledger.open_account(gen_random_uuid(), ledger.uuid_v7(), pg_temp.owner(p_owner), p_cur, p_od)).account_id
$$;

create function pg_temp.xfer(p_d uuid, p_c uuid, p_amt bigint, p_cur text default 'USD') returns ledger.transfer_result
language sql as $$ select ledger.create_transfer(gen_random_uuid(), ledger.uuid_v7(), p_d, p_c, p_amt, p_cur) $$;

create function pg_temp.bal(p_id uuid) returns bigint
language sql as $$ select balance from ledger.accounts where id = p_id $$;

create function pg_temp.avail(p_id uuid) returns bigint
language sql as $$ select balance - pending_debits from ledger.accounts where id = p_id $$;

-- Row counts of everything a transfer writes, to prove "no effect".
create function pg_temp.effects() returns text
language sql as $$
  select format('transfers=%s entries=%s events=%s balances=%s',
                (select count(*) from ledger.transfers), (select count(*) from ledger.entries),
                (select count(*) from ledger.events),
                (select sum(abs(balance)) + sum(pending_debits) + sum(pending_credits) from ledger.accounts))
$$;

-- A result without its replayed flag, for "identical outcome" comparisons.
create function pg_temp.norm(r ledger.transfer_result) returns ledger.transfer_result
language plpgsql as $$ begin r.replayed := null; return r; end $$;

create function pg_temp.invariants_hold() returns boolean
language sql as $$ select bool_and(violations = 0) from ledger.verify_invariants() $$;

create temp table res (name text primary key, r ledger.transfer_result);

-- ---------------------------------------------------------------------------
\echo '== reference data and system accounts'
-- ---------------------------------------------------------------------------

select pg_temp.ok((select count(*) from ledger.currencies where code in ('USD', 'EUR', 'GBP', 'JPY', 'IDR')) = 5,
                  'USD, EUR, GBP, JPY, IDR are seeded');
select pg_temp.ok((select minor_units from ledger.currencies where code = 'JPY') = 0
                  and (select minor_units from ledger.currencies where code = 'USD') = 2,
                  'minor units: JPY 0, USD 2');
select pg_temp.ok((select count(*) from ledger.accounts a join ledger.currencies c on c.code = a.currency
                    where a.kind = 'system') = 3 * (select count(*) from ledger.currencies),
                  'three system accounts (cash vault, external clearing, fees) per currency');
select pg_temp.ok((select count(*) from ledger.ensure_partitions(18)) = 0, 'ensure_partitions(18) is a no-op after the migration');
select pg_temp.ok((select count(*) from pg_inherits where inhparent = 'ledger.entries'::regclass) = 20
                  and (select count(*) from pg_inherits where inhparent = 'ledger.transfers'::regclass) = 20,
                  '18 months ahead + current month + default partition for entries and transfers');

-- ---------------------------------------------------------------------------
\echo '== accounts'
-- ---------------------------------------------------------------------------

select r.* from ledger.open_account('a0000000-0000-4000-8000-000000000001', ledger.uuid_v7(), pg_temp.owner(1), 'USD', 0) r \gset open1_
select pg_temp.ok(:'open1_status' = 'ok' and :'open1_account_status' = 'active' and :'open1_balance'::bigint = 0
                  and :'open1_version'::bigint = 1, 'open_account opens an active, empty account');
select pg_temp.ok(r.account_id = :'open1_account_id' and r.replayed and r.status = 'ok'
                  and r.created_at = :'open1_created_at'::timestamptz,
                  'open_account replay returns the original account (same id)')
  from ledger.open_account('a0000000-0000-4000-8000-000000000001', ledger.uuid_v7(), pg_temp.owner(1), 'USD', 0) r;
select pg_temp.ok(r.status = 'request_id_reused' and r.account_id is null, 'open_account: same request_id, other payload -> request_id_reused')
  from ledger.open_account('a0000000-0000-4000-8000-000000000001', ledger.uuid_v7(), pg_temp.owner(1), 'EUR', 0) r;
select pg_temp.ok(r.status = 'currency_not_found', 'open_account: unknown currency -> currency_not_found')
  from ledger.open_account(gen_random_uuid(), null, pg_temp.owner(1), 'XXX', 0) r;
select pg_temp.ok(r.status = 'invalid_overdraft_limit', 'open_account: negative overdraft -> invalid_overdraft_limit')
  from ledger.open_account(gen_random_uuid(), null, pg_temp.owner(1), 'USD', -1) r;
select pg_temp.ok(r.status = 'account_exists', 'open_account: existing id -> account_exists')
  from ledger.open_account(gen_random_uuid(), :'open1_account_id', pg_temp.owner(1), 'USD', 0) r;

-- ---------------------------------------------------------------------------
\echo '== posted transfers, replay, reuse'
-- ---------------------------------------------------------------------------

select pg_temp.vault('USD') as vault \gset
select pg_temp.open(1) as a, pg_temp.open(2) as b, pg_temp.open(3, 'USD', 500) as od, pg_temp.open(4, 'EUR') as e \gset

insert into res select 'cashin', r from ledger.create_transfer('b0000000-0000-4000-8000-000000000001', ledger.uuid_v7(),
                                                              :'vault', :'a', 10000, 'USD') r;
select pg_temp.ok((r).status = 'ok' and (r).transfer_status = 'posted' and (r).posted_amount = 10000
                  and (r).debit_balance = -10000 and (r).credit_balance = 10000 and (r).credit_available = 10000
                  and not (r).replayed, 'cash in from the vault (system accounts may go negative)')
  from res where name = 'cashin';
select pg_temp.ok((select count(*) from ledger.entries e join res on (res.r).transfer_id = e.transfer_id where res.name = 'cashin') = 2
                  and (select sum(e.amount) from ledger.entries e join res on (res.r).transfer_id = e.transfer_id where res.name = 'cashin') = 0,
                  'a posted transfer writes exactly two entries that sum to zero');
select pg_temp.ok((select count(*) from ledger.events ev join res on (res.r).transfer_id = ev.aggregate_id
                    where res.name = 'cashin' and ev.type = 'transfer.created') = 1,
                  'a transfer appends one outbox event');

select pg_temp.effects() as before \gset
insert into res select 'cashin_replay', r from ledger.create_transfer('b0000000-0000-4000-8000-000000000001', ledger.uuid_v7(),
                                                                     :'vault', :'a', 10000, 'USD') r;
select pg_temp.ok(pg_temp.norm(x.r) is not distinct from pg_temp.norm(y.r) and (y.r).replayed,
                  'replay returns the identical outcome (same transfer id, same balances)')
  from res x, res y where x.name = 'cashin' and y.name = 'cashin_replay';
select pg_temp.ok(pg_temp.effects() = :'before', 'replay has no effect');

select pg_temp.ok(r.status = 'request_id_reused' and r.transfer_id is null,
                  'same request_id with another payload -> request_id_reused')
  from ledger.create_transfer('b0000000-0000-4000-8000-000000000001', ledger.uuid_v7(), :'vault', :'a', 10001, 'USD') r;
select pg_temp.ok(r.status = 'request_id_reused', 'same request_id from another actor -> request_id_reused')
  from ledger.create_transfer('b0000000-0000-4000-8000-000000000001', ledger.uuid_v7(), :'vault', :'a', 10000, 'USD',
                              false, null, null, null, pg_temp.owner(99)) r;
select pg_temp.ok(pg_temp.effects() = :'before', 'refused reuse has no effect');

-- ---------------------------------------------------------------------------
\echo '== business failures are results, not errors'
-- ---------------------------------------------------------------------------

insert into res select 'nsf', r from ledger.create_transfer('b0000000-0000-4000-8000-000000000002', ledger.uuid_v7(),
                                                           :'a', :'b', 10001, 'USD') r;
select pg_temp.ok((r).status = 'insufficient_funds' and (r).failed_account_id = :'a' and (r).debit_available = 10000
                  and (r).debit_balance = 10000 and (r).transfer_id is null,
                  'insufficient_funds names the account and its available balance')
  from res where name = 'nsf';
select pg_temp.ok(pg_temp.effects() = :'before', 'a refused transfer has no effect');
select pg_temp.ok((pg_temp.xfer(:'vault', :'a', 5000)).status = 'ok', 'fund the account so the refused transfer would now pass');
insert into res select 'nsf_replay', r from ledger.create_transfer('b0000000-0000-4000-8000-000000000002', ledger.uuid_v7(),
                                                                  :'a', :'b', 10001, 'USD') r;
select pg_temp.ok((y.r).status = 'insufficient_funds' and (y.r).replayed
                  and pg_temp.norm(x.r) is not distinct from pg_temp.norm(y.r),
                  'a request refused for insufficient funds stays refused on replay (identical result)')
  from res x, res y where x.name = 'nsf' and y.name = 'nsf_replay';
select pg_temp.ok(pg_temp.bal(:'b') = 0, 'and still moved nothing');

select pg_temp.ok((pg_temp.xfer(:'vault', :'od', 100)).status = 'ok'
                  and (pg_temp.xfer(:'od', :'b', 600)).status = 'ok' and pg_temp.bal(:'od') = -500
                  and (pg_temp.xfer(:'od', :'b', 1)).status = 'insufficient_funds',
                  'overdraft: a customer goes down to -overdraft_limit and no further');

select pg_temp.ok(r.status = 'same_account', 'same_account') from pg_temp.xfer(:'a', :'a', 1) r;
select pg_temp.ok(r.status = 'invalid_amount', 'amount 0 -> invalid_amount') from pg_temp.xfer(:'a', :'b', 0) r;
select pg_temp.ok(r.status = 'invalid_amount', 'negative amount -> invalid_amount') from pg_temp.xfer(:'a', :'b', -5) r;
select pg_temp.ok(r.status = 'currency_mismatch', 'accounts of different currencies -> currency_mismatch')
  from pg_temp.xfer(:'a', :'e', 1, null) r;
select pg_temp.ok(r.status = 'currency_mismatch', 'transfer currency differs from the accounts -> currency_mismatch')
  from pg_temp.xfer(:'a', :'b', 1, 'EUR') r;
select pg_temp.ok(r.status = 'ok' and r.currency = 'USD', 'currency may be omitted: the accounts'' currency is used')
  from pg_temp.xfer(:'a', :'b', 1, null) r;
select pg_temp.ok(r.status = 'account_not_found' and r.failed_account_id = 'c0000000-0000-7000-8000-000000000000',
                  'unknown debit account -> account_not_found naming it')
  from pg_temp.xfer('c0000000-0000-7000-8000-000000000000', :'b', 1) r;
select pg_temp.ok(r.status = 'account_not_found' and r.failed_account_id = 'c0000000-0000-7000-8000-000000000000',
                  'unknown credit account -> account_not_found naming it')
  from pg_temp.xfer(:'a', 'c0000000-0000-7000-8000-000000000000', 1) r;
select pg_temp.ok(r.status = 'permission_denied' and r.failed_account_id = :'a',
                  'owner scope: debiting someone else''s account -> permission_denied')
  from ledger.create_transfer(gen_random_uuid(), null, :'a', :'b', 1, 'USD', false, null, null, pg_temp.owner(2)) r;
select pg_temp.ok(r.status = 'permission_denied',
                  'owner scope is checked before existence (unknown account -> permission_denied)')
  from ledger.create_transfer(gen_random_uuid(), null, 'c0000000-0000-7000-8000-000000000000', :'b', 1, 'USD', false, null,
                              null, pg_temp.owner(2)) r;
select pg_temp.ok(r.status = 'ok', 'owner scope: debiting your own account is fine')
  from ledger.create_transfer(gen_random_uuid(), null, :'a', :'b', 1, 'USD', false, null, null, pg_temp.owner(1)) r;
select pg_temp.ok(r.status = 'invalid_id', 'a transfer id that is not a UUIDv7 -> invalid_id')
  from ledger.create_transfer(gen_random_uuid(), gen_random_uuid(), :'a', :'b', 1, 'USD') r;
select pg_temp.ok(r.status = 'invalid_id', 'a UUIDv7 from another day -> invalid_id (keeps rows out of the default partition)')
  from ledger.create_transfer(gen_random_uuid(), '01900000-0000-7000-8000-000000000000', :'a', :'b', 1, 'USD') r;
select pg_temp.ok(r.status = 'invalid_timeout', 'negative timeout -> invalid_timeout')
  from ledger.create_transfer(gen_random_uuid(), null, :'a', :'b', 1, 'USD', true, -1) r;

-- Overflow: a CHF account pushed to the top of the bigint range.
select pg_temp.vault('CHF') as chf_vault, pg_temp.open(5, 'CHF') as big \gset
select pg_temp.ok((pg_temp.xfer(:'chf_vault', :'big', 9223372036854775000, 'CHF')).status = 'ok',
                  'a balance near the bigint maximum');
select pg_temp.ok(r.status = 'amount_overflow' and r.failed_account_id = :'big',
                  'credit past the bigint maximum -> amount_overflow naming the account, no SQL error')
  from pg_temp.xfer((select id from ledger.accounts where currency = 'CHF' and system_role = 'fees'), :'big', 1000, 'CHF') r;
select pg_temp.ok(r.status = 'amount_overflow' and r.failed_account_id = :'chf_vault',
                  'debit of a system account past the bigint minimum -> amount_overflow')
  from pg_temp.xfer(:'chf_vault', pg_temp.open(6, 'CHF'), 9223372036854775000, 'CHF') r;
select pg_temp.ok((pg_temp.xfer(:'big', :'chf_vault', 9223372036854775000, 'CHF')).status = 'ok', 'and back');

-- ---------------------------------------------------------------------------
\echo '== frozen and closed accounts'
-- ---------------------------------------------------------------------------

select pg_temp.open(7) as f \gset
select pg_temp.ok((pg_temp.xfer(:'vault', :'f', 100)).status = 'ok', 'fund an account to freeze');
select pg_temp.ok(r.status = 'ok' and r.account_status = 'frozen' and r.version = 3, 'freeze_account')
  from ledger.freeze_account('d0000000-0000-4000-8000-000000000001', :'f') r;
select pg_temp.ok(r.status = 'ok' and r.replayed, 'freeze replay')
  from ledger.freeze_account('d0000000-0000-4000-8000-000000000001', :'f') r;
select pg_temp.effects() as before \gset
select pg_temp.ok(r.status = 'account_frozen' and r.failed_account_id = :'f', 'debit of a frozen account -> account_frozen naming it')
  from pg_temp.xfer(:'f', :'b', 1) r;
select pg_temp.ok(r.status = 'account_frozen' and r.failed_account_id = :'f', 'credit of a frozen account -> account_frozen')
  from pg_temp.xfer(:'a', :'f', 1) r;
select pg_temp.ok(pg_temp.effects() = :'before', 'nothing moved');
select pg_temp.ok(r.status = 'ok' and r.account_status = 'active', 'unfreeze_account')
  from ledger.unfreeze_account(gen_random_uuid(), :'f') r;
select pg_temp.ok((pg_temp.xfer(:'f', :'b', 1)).status = 'ok', 'an unfrozen account moves again');
select pg_temp.ok(r.status = 'account_not_empty', 'close_account with a balance -> account_not_empty')
  from ledger.close_account(gen_random_uuid(), :'f') r;
select pg_temp.ok((pg_temp.xfer(:'f', :'vault', 99)).status = 'ok', 'empty it');
select pg_temp.ok(r.status = 'ok' and r.account_status = 'closed', 'close_account of an empty account')
  from ledger.close_account(gen_random_uuid(), :'f') r;
select pg_temp.ok(r.status = 'account_closed' and r.failed_account_id = :'f', 'credit of a closed account -> account_closed')
  from pg_temp.xfer(:'a', :'f', 1) r;
select pg_temp.ok(r.status = 'account_closed', 'a closed account cannot be reopened')
  from ledger.unfreeze_account(gen_random_uuid(), :'f') r;
select pg_temp.ok(r.status = 'system_account', 'a system account cannot be closed')
  from ledger.close_account(gen_random_uuid(), :'vault') r;
select pg_temp.ok(r.status = 'permission_denied', 'owner scope on account status changes')
  from ledger.freeze_account(gen_random_uuid(), :'a', pg_temp.owner(2)) r;

-- ---------------------------------------------------------------------------
\echo '== batches'
-- ---------------------------------------------------------------------------

select pg_temp.open(10) as x, pg_temp.open(11) as y \gset
select pg_temp.ok((pg_temp.xfer(:'vault', :'x', 1000)).status = 'ok', 'fund x with 1000');

-- Linked: the second member overdraws x; nothing may happen.
select pg_temp.effects() as before \gset
create temp table linked1 as
select * from ledger.create_transfers(true,
  array['e0000000-0000-4000-8000-000000000001', 'e0000000-0000-4000-8000-000000000002',
        'e0000000-0000-4000-8000-000000000003']::uuid[], null,
  array[:'x', :'x', :'y']::uuid[], array[:'y', :'y', :'x']::uuid[], array[600, 600, 10]::bigint[],
  null, null, null, null, null, null) with ordinality;
select pg_temp.ok(array_agg(status order by ordinality) = array['linked_failed', 'insufficient_funds', 'linked_failed'],
                  'linked batch: the failing member keeps its reason, the others report linked_failed')
  from linked1;
select pg_temp.ok(pg_temp.effects() = :'before' and pg_temp.bal(:'x') = 1000 and pg_temp.bal(:'y') = 0,
                  'linked batch with one failing member changes nothing');
select pg_temp.ok(array_agg(status order by ordinality) = array['linked_failed', 'insufficient_funds', 'linked_failed']
                  and bool_and(replayed),
                  'linked batch replay returns the recorded failure')
  from ledger.create_transfers(true,
    array['e0000000-0000-4000-8000-000000000001', 'e0000000-0000-4000-8000-000000000002',
          'e0000000-0000-4000-8000-000000000003']::uuid[], null,
    array[:'x', :'x', :'y']::uuid[], array[:'y', :'y', :'x']::uuid[], array[600, 600, 10]::bigint[],
    null, null, null, null, null, null) with ordinality;

-- Linked and valid: all three apply.
select pg_temp.ok(bool_and(status = 'ok') and pg_temp.bal(:'x') = 1000 - 600 - 300 + 10 and pg_temp.bal(:'y') = 890,
                  'linked batch of valid members applies them all, in order')
  from ledger.create_transfers(true, array[gen_random_uuid(), gen_random_uuid(), gen_random_uuid()], null,
    array[:'x', :'x', :'y']::uuid[], array[:'y', :'y', :'x']::uuid[], array[600, 300, 10]::bigint[],
    null, null, null, null, null, null);

-- Unlinked: one result per member, in input order, each on its own.
select pg_temp.effects() as before \gset
create temp table unlinked1 as
select * from ledger.create_transfers(false,
  array['e1000000-0000-4000-8000-000000000001', 'e1000000-0000-4000-8000-000000000002',
        'e1000000-0000-4000-8000-000000000003', 'e1000000-0000-4000-8000-000000000004',
        'e1000000-0000-4000-8000-000000000005', 'e1000000-0000-4000-8000-000000000006',
        'e1000000-0000-4000-8000-000000000001']::uuid[],
  null,
  array[:'x', :'x', :'y', :'x', 'c0000000-0000-7000-8000-000000000000', :'y', :'x']::uuid[],
  array[:'y', :'y', :'x', :'x', :'y', :'x', :'y']::uuid[],
  array[100, 100000, 50, 1, 1, 25, 100]::bigint[],
  null, array[false, false, false, false, false, true, false], array[null, null, null, null, null, 60000, null]::bigint[],
  null, null, null) with ordinality;
select pg_temp.ok(array_agg(status order by ordinality)
                    = array['ok', 'insufficient_funds', 'ok', 'same_account', 'account_not_found', 'ok', 'ok'],
                  'unlinked batch: per-member results in input order')
  from unlinked1;
select pg_temp.ok(array_agg(request_id order by ordinality) = array['e1000000-0000-4000-8000-000000000001',
                  'e1000000-0000-4000-8000-000000000002', 'e1000000-0000-4000-8000-000000000003',
                  'e1000000-0000-4000-8000-000000000004', 'e1000000-0000-4000-8000-000000000005',
                  'e1000000-0000-4000-8000-000000000006', 'e1000000-0000-4000-8000-000000000001']::uuid[],
                  'each result carries its request_id')
  from unlinked1;
select pg_temp.ok((select debit_balance from unlinked1 where ordinality = 1) = 110 - 100
                  and (select credit_balance from unlinked1 where ordinality = 3) = 110 - 100 + 50
                  and (select transfer_status from unlinked1 where ordinality = 6) = 'pending'
                  and (select debit_available from unlinked1 where ordinality = 6) = 890 + 100 - 50 - 25,
                  'members see the balances left by the members before them');
select pg_temp.ok(pg_temp.norm(p.a) is not distinct from pg_temp.norm(q.b) and (q.b).replayed,
                  'a request repeated inside a batch gets the first member''s outcome, applied once')
  from (select u::ledger.transfer_result as a from (select request_id, status, failed_account_id, transfer_id, transfer_status,
          debit_account_id, credit_account_id, currency, amount, posted_amount, expires_at, created_at, updated_at,
          debit_balance, debit_available, credit_balance, credit_available, replayed from unlinked1 where ordinality = 1) u) p,
       (select u::ledger.transfer_result as b from (select request_id, status, failed_account_id, transfer_id, transfer_status,
          debit_account_id, credit_account_id, currency, amount, posted_amount, expires_at, created_at, updated_at,
          debit_balance, debit_available, credit_balance, credit_available, replayed from unlinked1 where ordinality = 7) u) q;
select pg_temp.ok(pg_temp.bal(:'x') = 110 - 100 + 50 and pg_temp.avail(:'y') = 890 + 100 - 50 - 25,
                  'only the successful members moved money');
select pg_temp.ok(bool_and(r.replayed) and array_agg(r.status order by o)
                    = array['ok', 'insufficient_funds', 'ok', 'same_account', 'account_not_found', 'ok', 'ok'],
                  'unlinked batch replay: every member replayed')
  from ledger.create_transfers(false,
    array['e1000000-0000-4000-8000-000000000001', 'e1000000-0000-4000-8000-000000000002',
          'e1000000-0000-4000-8000-000000000003', 'e1000000-0000-4000-8000-000000000004',
          'e1000000-0000-4000-8000-000000000005', 'e1000000-0000-4000-8000-000000000006',
          'e1000000-0000-4000-8000-000000000001']::uuid[],
    null,
    array[:'x', :'x', :'y', :'x', 'c0000000-0000-7000-8000-000000000000', :'y', :'x']::uuid[],
    array[:'y', :'y', :'x', :'x', :'y', :'x', :'y']::uuid[],
    array[100, 100000, 50, 1, 1, 25, 100]::bigint[],
    null, array[false, false, false, false, false, true, false], array[null, null, null, null, null, 60000, null]::bigint[],
    null, null, null) with ordinality as r (request_id, status, failed_account_id, transfer_id, transfer_status,
      debit_account_id, credit_account_id, currency, amount, posted_amount, expires_at, created_at, updated_at,
      debit_balance, debit_available, credit_balance, credit_available, replayed, o);
select pg_temp.ok(array_agg(status order by o) = array['ok', 'request_id_reused'],
                  'a request_id repeated inside a batch with another payload -> request_id_reused')
  from ledger.create_transfers(false, array['e2000000-0000-4000-8000-000000000001', 'e2000000-0000-4000-8000-000000000001']::uuid[],
    null, array[:'x', :'x']::uuid[], array[:'y', :'y']::uuid[], array[1, 2]::bigint[], null, null, null, null, null, null)
    with ordinality as r (request_id, status, failed_account_id, transfer_id, transfer_status,
      debit_account_id, credit_account_id, currency, amount, posted_amount, expires_at, created_at, updated_at,
      debit_balance, debit_available, credit_balance, credit_available, replayed, o);

select pg_temp.ok(array_agg(status order by o) = array['account_not_found', 'account_not_found', 'same_account'],
                  'a batch naming only unknown accounts: per-member account_not_found')
  from ledger.create_transfers(false, array[gen_random_uuid(), gen_random_uuid(), gen_random_uuid()], null,
    array['c0000000-0000-7000-8000-000000000001', null, 'c0000000-0000-7000-8000-000000000003']::uuid[],
    array['c0000000-0000-7000-8000-000000000002', 'c0000000-0000-7000-8000-000000000002',
          'c0000000-0000-7000-8000-000000000003']::uuid[], array[1, 1, 1]::bigint[], null, null, null, null, null, null)
    with ordinality as r (request_id, status, failed_account_id, transfer_id, transfer_status,
      debit_account_id, credit_account_id, currency, amount, posted_amount, expires_at, created_at, updated_at,
      debit_balance, debit_available, credit_balance, credit_available, replayed, o);

-- A single and a batch of one are the same request: either replays the other.
insert into res select 'single', r from ledger.create_transfer('e3000000-0000-4000-8000-000000000001', ledger.uuid_v7(), :'x', :'y', 7, 'USD') r;
select pg_temp.ok(pg_temp.norm(b) is not distinct from pg_temp.norm((select r from res where name = 'single')) and b.replayed,
                  'create_transfer recorded -> create_transfers replays it identically')
  from ledger.create_transfers(false, array['e3000000-0000-4000-8000-000000000001']::uuid[], null, array[:'x']::uuid[],
                               array[:'y']::uuid[], array[7]::bigint[], array['USD'], null, null, null, null, null) b;
create temp table batch1 as
select * from ledger.create_transfers(false, array['e3000000-0000-4000-8000-000000000002']::uuid[], null, array[:'x']::uuid[],
                                      array[:'y']::uuid[], array[99999]::bigint[], null, null, null, null, null, null);
select pg_temp.ok(s.replayed and s.status = 'insufficient_funds' and s.debit_available = b.debit_available
                  and s.failed_account_id = b.failed_account_id,
                  'create_transfers recorded -> create_transfer replays it identically')
  from batch1 b, ledger.create_transfer('e3000000-0000-4000-8000-000000000002', ledger.uuid_v7(), :'x', :'y', 99999, null) s;

-- Single and batch decide alike: the same scenarios through both paths.
create temp table diff_in (n int, d uuid, c uuid, amt bigint, cur text, pend boolean, tmo bigint, scope uuid);
insert into diff_in values
  (1, :'x', :'y', 5, 'USD', false, null, null),
  (2, :'x', :'y', 5, null, true, 1000, null),
  (3, :'x', :'x', 5, 'USD', false, null, null),
  (4, :'x', :'y', 0, 'USD', false, null, null),
  (5, :'x', :'e', 5, null, false, null, null),
  (6, :'x', :'y', 5, 'GBP', false, null, null),
  (7, :'x', :'y', 9999999, 'USD', false, null, null),
  (8, 'c0000000-0000-7000-8000-000000000000', :'y', 5, 'USD', false, null, null),
  (9, :'x', :'y', 5, 'USD', false, null, pg_temp.owner(2)),
  (10, :'x', :'f', 5, 'USD', false, null, null),
  (11, :'x', :'y', 5, 'USD', true, -5, null);
create temp table diff_out as
select n, 'single' as path, ledger.create_transfer(gen_random_uuid(), null, d, c, amt, cur, pend, tmo, null, scope) as r
  from diff_in order by n;
insert into diff_out
select i.n, 'batch', (select b from ledger.create_transfers(false, array[gen_random_uuid()], null, array[i.d], array[i.c],
                        array[i.amt], array[i.cur], array[i.pend], array[i.tmo], null, array[i.scope], null) b)
  from diff_in i order by n;
select pg_temp.ok(bool_and((s.r).status = (b.r).status
                           and (s.r).failed_account_id is not distinct from (b.r).failed_account_id
                           and (s.r).currency is not distinct from (b.r).currency
                           and (s.r).transfer_status is not distinct from (b.r).transfer_status
                           and (s.r).posted_amount is not distinct from (b.r).posted_amount
                           and ((s.r).status <> 'ok' or (s.r).expires_at - (s.r).created_at = (b.r).expires_at - (b.r).created_at
                                or ((s.r).expires_at is null and (b.r).expires_at is null))),
                  'create_transfer and create_transfers reach the same outcome on 11 scenarios ('
                  || string_agg((s.r).status, ',' order by s.n) || ')')
  from diff_out s join diff_out b on b.n = s.n and b.path = 'batch' where s.path = 'single';

select pg_temp.ok(pg_temp.invariants_hold(), 'invariants hold after the batch checks');

-- ---------------------------------------------------------------------------
\echo '== pending transfers: post (partial), void, expiry'
-- ---------------------------------------------------------------------------

select pg_temp.open(20) as p, pg_temp.open(21) as q \gset
select pg_temp.ok((pg_temp.xfer(:'vault', :'p', 1000)).status = 'ok', 'fund p with 1000');
select r.transfer_id as hold1, r.status as hold1_status, r.transfer_status as hold1_ts, r.debit_available as hold1_avail,
       r.debit_balance as hold1_bal, r.expires_at - r.created_at as hold1_ttl
  from ledger.create_transfer(gen_random_uuid(), null, :'p', :'q', 700, 'USD', true, 60000) r \gset
select pg_temp.ok(:'hold1_status' = 'ok' and :'hold1_ts' = 'pending' and :'hold1_avail'::bigint = 300
                  and :'hold1_bal'::bigint = 1000 and :'hold1_ttl'::interval = interval '60 seconds',
                  'a pending transfer reserves funds: available = posted - pending_debits');
select pg_temp.ok((select pending_debits from ledger.accounts where id = :'p') = 700
                  and (select pending_credits from ledger.accounts where id = :'q') = 700
                  and not exists (select 1 from ledger.entries where transfer_id = :'hold1'),
                  'pending columns move, no entries yet');
select pg_temp.ok(r.status = 'insufficient_funds' and r.debit_available = 300, 'held funds cannot be spent twice')
  from pg_temp.xfer(:'p', :'q', 301) r;
select pg_temp.ok(r.status = 'amount_exceeds_pending', 'posting more than held -> amount_exceeds_pending')
  from ledger.post_pending(gen_random_uuid(), :'hold1', 701) r;
select pg_temp.ok(r.status = 'invalid_amount', 'posting 0 -> invalid_amount')
  from ledger.post_pending(gen_random_uuid(), :'hold1', 0) r;
select r.* from ledger.post_pending('f0000000-0000-4000-8000-000000000001', :'hold1', 300) r \gset post1_
select pg_temp.ok(:'post1_status' = 'ok' and :'post1_transfer_status' = 'posted' and :'post1_posted_amount'::bigint = 300
                  and :'post1_debit_balance'::bigint = 700 and :'post1_debit_available'::bigint = 700
                  and :'post1_credit_balance'::bigint = 300,
                  'partial post: 300 moves, the remaining 400 is released');
select pg_temp.ok((select pending_debits from ledger.accounts where id = :'p') = 0
                  and (select pending_credits from ledger.accounts where id = :'q') = 0
                  and (select count(*) from ledger.entries where transfer_id = :'hold1') = 2,
                  'pending columns back to 0, two entries for the posted amount');
select pg_temp.ok(r.status = 'ok' and r.replayed and r.posted_amount = 300, 'post replay')
  from ledger.post_pending('f0000000-0000-4000-8000-000000000001', :'hold1', 300) r;
select pg_temp.ok(r.status = 'transfer_not_pending' and r.transfer_status = 'posted', 'posting twice -> transfer_not_pending')
  from ledger.post_pending(gen_random_uuid(), :'hold1', null) r;
select pg_temp.ok(r.status = 'transfer_not_pending', 'voiding a posted transfer -> transfer_not_pending')
  from ledger.void_pending(gen_random_uuid(), :'hold1') r;
select pg_temp.ok(r.status = 'transfer_not_found', 'unknown transfer -> transfer_not_found')
  from ledger.void_pending(gen_random_uuid(), ledger.uuid_v7()) r;

select (ledger.create_transfer(gen_random_uuid(), null, :'p', :'q', 200, 'USD', true, null)).transfer_id as hold2 \gset
select pg_temp.ok(pg_temp.avail(:'p') = 500, 'hold of 200 without timeout');
select pg_temp.ok(r.status = 'permission_denied', 'owner scope on post/void')
  from ledger.void_pending(gen_random_uuid(), :'hold2', pg_temp.owner(21)) r;
select pg_temp.ok(r.status = 'ok' and r.transfer_status = 'voided' and r.posted_amount = 0 and r.debit_available = 700,
                  'void releases the hold')
  from ledger.void_pending(gen_random_uuid(), :'hold2') r;
select pg_temp.ok(not exists (select 1 from ledger.entries where transfer_id = :'hold2'), 'a voided transfer has no entries');

select (ledger.create_transfer(gen_random_uuid(), null, :'p', :'q', 100, 'USD', true, null)).transfer_id as hold3 \gset
select pg_temp.ok((ledger.freeze_account(gen_random_uuid(), :'p')).status = 'ok', 'freeze the holder');
select pg_temp.ok(r.status = 'account_frozen' and r.failed_account_id = :'p', 'posting on a frozen account -> account_frozen')
  from ledger.post_pending(gen_random_uuid(), :'hold3', null) r;
select pg_temp.ok(r.status = 'ok' and r.transfer_status = 'voided', 'voiding a hold on a frozen account releases it')
  from ledger.void_pending(gen_random_uuid(), :'hold3') r;
select pg_temp.ok((ledger.unfreeze_account(gen_random_uuid(), :'p')).status = 'ok', 'unfreeze');

select (ledger.create_transfer(gen_random_uuid(), null, :'p', :'q', 50, 'USD', true, 1)).transfer_id as hold4 \gset
select pg_sleep(0.05);
select pg_temp.ok(r.status = 'transfer_expired', 'posting past the timeout -> transfer_expired')
  from ledger.post_pending(gen_random_uuid(), :'hold4', null) r;
select pg_temp.ok(pg_temp.avail(:'p') = 650, 'until swept, an expired hold still reserves');
select pg_temp.ok(ledger.expire_pending(100) = 1, 'expire_pending releases it');
select pg_temp.ok(ledger.expire_pending(100) = 0, 'and only once');
select pg_temp.ok(pg_temp.avail(:'p') = 700 and (select status from ledger.transfers where id = :'hold4') = 'expired'
                  and (select count(*) from ledger.events where aggregate_id = :'hold4' and type = 'transfer.expired') = 1,
                  'expired: funds back, status expired, one transfer.expired event');
select pg_temp.ok(pg_temp.invariants_hold(), 'invariants hold after the pending checks');

-- ---------------------------------------------------------------------------
\echo '== reads: balance as of, keyset lists, partition pruning'
-- ---------------------------------------------------------------------------

select pg_temp.open(30) as h, pg_temp.open(31) as k \gset
select pg_temp.ok((pg_temp.xfer(:'vault', :'h', 100)).status = 'ok', 'h: +100');
select clock_timestamp() as t1 \gset
select pg_sleep(0.01);
select pg_temp.ok((pg_temp.xfer(:'h', :'k', 30)).status = 'ok', 'h: -30');
select clock_timestamp() as t2 \gset
select pg_sleep(0.01);
select pg_temp.ok((pg_temp.xfer(:'vault', :'h', 5)).status = 'ok', 'h: +5');

-- The documented balance-as-of query (docs/ledger-sql.md).
prepare balance_at(uuid, timestamptz) as
  select coalesce((select e.balance_after from ledger.entries e
                    where e.account_id = $1 and e.created_at <= $2
                    order by e.created_at desc, e.seq desc limit 1), 0);
execute balance_at(:'h', :'t1') \gset at1_
execute balance_at(:'h', :'t2') \gset at2_
execute balance_at(:'h', now() - interval '1 day') \gset at0_
select pg_temp.ok(:'at1_coalesce'::bigint = 100 and :'at2_coalesce'::bigint = 70 and :'at0_coalesce'::bigint = 0
                  and pg_temp.bal(:'h') = 75,
                  'balance as of an instant = balance_after of the last entry at or before it');

-- Lookup by id prunes to one partition (no helper column needed: transfers are partitioned on the id).
create function pg_temp.plan(p_sql text) returns text
language plpgsql as $$
declare v_line text; v_plan text := '';
begin
  for v_line in execute 'explain (costs off) ' || p_sql loop
    v_plan := v_plan || v_line || E'\n';
  end loop;
  return v_plan;
end $$;
create function pg_temp.partitions_in(p_plan text, p_parent text) returns integer
language sql as $$ select count(distinct m[1])::integer from regexp_matches(p_plan, p_parent || '_(p\d{6}|default)', 'g') m $$;

select pg_temp.plan(format('select * from ledger.transfers where id = %L', :'hold1')) as plan_by_id \gset
\echo :plan_by_id
select pg_temp.ok(pg_temp.partitions_in(:'plan_by_id', 'transfers') = 1, 'GetTransfer by id scans exactly one partition');
select pg_temp.plan(format('select * from ledger.transfers where id = any (array[%L, %L]::uuid[])', :'hold1', :'hold2')) as plan_by_ids \gset
select pg_temp.ok(pg_temp.partitions_in(:'plan_by_ids', 'transfers') = 1, 'several ids of one month: one partition');

-- The documented list queries use their indexes.
select pg_temp.plan(format($q$select * from ledger.entries where account_id = %L and created_at <= now()
   and (created_at, seq) < (now(), 9223372036854775807) order by created_at desc, seq desc limit 50$q$, :'h')) as plan_entries \gset
\echo :plan_entries
select pg_temp.ok(pg_temp.partitions_in(:'plan_entries', 'entries') <= 2 and :'plan_entries' like '%pkey%',
                  'ListEntries: keyset on the primary key, future partitions pruned');
select pg_temp.plan(format($q$(select * from ledger.transfers where debit_account_id = %1$L and id < %2$L order by id desc limit 50)
   union all (select * from ledger.transfers where credit_account_id = %1$L and id < %2$L order by id desc limit 50)
   order by id desc limit 50$q$, :'h', ledger.uuid_v7_floor(now() + interval '1 second'))) as plan_transfers \gset
\echo :plan_transfers
select pg_temp.ok(:'plan_transfers' like '%debit_account_id_id_idx%' and :'plan_transfers' like '%credit_account_id_id_idx%',
                  'ListTransfers per account uses the per-side indexes');
select pg_temp.ok(pg_temp.partitions_in(:'plan_transfers', 'transfers') <= 6,
                  'ListTransfers: partitions above the cursor are pruned');
set enable_seqscan = off;  -- the test ledger is tiny; prove the index is usable
select pg_temp.plan(format('select * from ledger.accounts where owner_id = %L and id > %L order by id limit 50',
                           pg_temp.owner(1), '00000000-0000-0000-0000-000000000000')) as plan_owner \gset
select pg_temp.ok(:'plan_owner' like '%accounts_owner_idx%', 'ListAccounts by owner uses accounts_owner_idx');
select pg_temp.plan($q$select * from ledger.accounts where status = 'frozen' and id > '00000000-0000-0000-0000-000000000000'
   order by id limit 50$q$) as plan_status \gset
select pg_temp.ok(:'plan_status' like '%accounts_status_idx%', 'ListAccounts by status uses accounts_status_idx');
select pg_temp.plan($q$select id from ledger.transfers where status = 'pending' and expires_at <= now()
   order by expires_at limit 100$q$) as plan_expiry \gset
select pg_temp.ok(:'plan_expiry' like '%expires_at_idx%', 'the expiry sweep uses the partial pending index');
reset enable_seqscan;

-- ---------------------------------------------------------------------------
\echo '== outbox'
-- ---------------------------------------------------------------------------

select pg_temp.ok((select count(*) from ledger.read_events(-1, -1, 10000)) = (select count(*) from ledger.events),
                  'read_events returns every committed event when no writer is in flight');
do $$
declare
  v_key bigint := -1; v_seq bigint := -1; v_n integer := 0; v_page integer; r record; v_prev_key bigint; v_prev_seq bigint;
begin
  loop
    v_page := 0;
    for r in select * from ledger.read_events(v_key, v_seq, 7) loop
      if v_prev_key is not null and (r.order_key, r.seq) <= (v_prev_key, v_prev_seq) then
        raise exception 'FAILED: read_events out of order at (%, %)', r.order_key, r.seq;
      end if;
      v_prev_key := r.order_key; v_prev_seq := r.seq;
      v_key := r.order_key; v_seq := r.seq; v_page := v_page + 1; v_n := v_n + 1;
      if r.payload is null or r.type is null then
        raise exception 'FAILED: event without payload';
      end if;
    end loop;
    exit when v_page = 0;
  end loop;
  perform pg_temp.ok(v_n = (select count(*) from ledger.events), 'paging with the cursor visits every event once, in order');
end $$;
select pg_temp.ok((select payload->>'status' = 'ok' and payload->>'transfer_status' = 'posted' and (payload->>'amount')::bigint = 30
                     from ledger.read_events(-1, -1, 10000)
                    where type = 'transfer.created' and payload->>'debit_account_id' = :'h'),
                  'event payload is the transfer result as JSON');
select pg_temp.ok((select count(*) from ledger.events where type = 'transfer.created')
                  = (select count(*) from ledger.transfers)
                  and (select count(*) from ledger.events where type in ('transfer.posted', 'transfer.voided', 'transfer.expired'))
                  = (select count(*) from ledger.transfers where status in ('voided', 'expired'))
                    + (select count(*) from ledger.transfers t where status = 'posted'
                        and exists (select 1 from ledger.events v where v.aggregate_id = t.id and v.type = 'transfer.posted')),
                  'every state change appended an event');
select pg_temp.ok((select order_key from ledger.events_head()) = (select max(order_key) from ledger.events),
                  'events_head points at the newest deliverable event');

-- ---------------------------------------------------------------------------
\echo '== partitions: ensure_partitions moves strays out of the default partition'
-- ---------------------------------------------------------------------------

begin;
insert into ledger.entries_default (account_id, created_at, seq, amount, balance_after, transfer_id)
values (:'h', date_trunc('month', now()) + interval '21 months' + interval '3 days', 1, 1, 1, ledger.uuid_v7());
insert into ledger.transfers_default (id, debit_account_id, credit_account_id, currency, amount, status, created_at, updated_at)
values (ledger.uuid_v7_floor(date_trunc('month', now()) + interval '21 months' + interval '3 days'), :'h', :'k', 'USD', 1,
        'pending', now(), now());
select pg_temp.ok((select count(*) from ledger.ensure_partitions(24)) = 12, 'ensure_partitions(24) creates 6 months x 2 tables');
select pg_temp.ok((select count(*) from ledger.entries_default) = 0 and (select count(*) from ledger.transfers_default) = 0,
                  'rows that had reached the default partition were moved into their new partition');
select pg_temp.ok(pg_temp.partitions_in(pg_temp.plan(format('select * from ledger.transfers where id = %L',
                    ledger.uuid_v7_floor(date_trunc('month', now()) + interval '21 months' + interval '3 days'))), 'transfers') = 1
                  and (select count(*) from pg_indexes where tablename = 'transfers_p' || to_char(date_trunc('month', now()) + interval '21 months', 'YYYYMM')) = 4,
                  'the new partition is attached with all indexes');
rollback;

-- ---------------------------------------------------------------------------
\echo '== invariants'
-- ---------------------------------------------------------------------------

select check_name, violations, sample from ledger.verify_invariants();
select pg_temp.ok(pg_temp.invariants_hold(),
                  'sum of balances per currency = 0; balance = sum of entries; pending = open holds; floors; two entries per posted transfer');
