-- Transfer functions: create_transfers (batch, linked or not), create_transfer
-- (one), post_pending, void_pending, expire_pending. One call = one round trip
-- = one transaction's worth of work: lock -> check -> update balances ->
-- insert transfers + entries -> outbox -> idempotency record.
--
-- Lock order, everywhere: pending transfer rows first (post/void/expire), then
-- accounts in ascending id order, each account once per call; idempotency
-- records are inserted last, in ascending request_id order. Nothing ever waits
-- for a transfer row while holding an account lock, so no cycle can form.

-- ---------------------------------------------------------------------------
-- create_transfers
-- ---------------------------------------------------------------------------
-- Members are parallel arrays (1..1000 entries, same length). Optional arrays
-- may be NULL as a whole (p_ids: generate ids; p_currencies: take the
-- accounts' currency; p_pending: all false; p_timeouts_ms: no timeout;
-- p_metadata, p_owner_scopes, p_actors: NULL) or contain NULL elements.
--
-- Members are applied in input order, each seeing the balances left by the
-- members before it. Unlinked: each member succeeds or fails on its own.
-- Linked: if any member fails, none is applied; the failing members keep their
-- reason and every other member reports 'linked_failed'.
--
-- Idempotency is per member (request_id + fingerprint of the member's payload
-- and p_linked). A linked batch that mixes recorded members (replays or
-- reuses) with new ones applies nothing and records nothing: new members
-- report 'linked_failed'.
--
-- Returns one ledger.transfer_result per member, in input order.
create function ledger.create_transfers(
  p_linked       boolean,
  p_request_ids  uuid[],
  p_ids          uuid[],
  p_debit_ids    uuid[],
  p_credit_ids   uuid[],
  p_amounts      bigint[],
  p_currencies   text[],
  p_pending      boolean[],
  p_timeouts_ms  bigint[],
  p_metadata     jsonb[],
  p_owner_scopes uuid[],
  p_actors       uuid[])
returns setof ledger.transfer_result
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $fn$
declare
  c_max  constant bigint := 9223372036854775807;
  c_min  constant bigint := -9223372036854775807 - 1;
  c_max_timeout_ms constant bigint := 315576000000;      -- 10 years
  c_id_skew constant interval := interval '10 minutes';  -- accepted UUIDv7 clock skew
  n      integer := coalesce(cardinality(p_request_ids), 0);
  -- Locked accounts: parallel arrays aligned with v_acc (ascending id).
  a_id     uuid[];
  a_owner  uuid[];
  a_cur    text[];
  a_kind   text[];
  a_status text[];
  a_od     bigint[];
  a_bal    bigint[];
  a_pd     bigint[];
  a_pc     bigint[];
  a_ver    bigint[];
  a_key    bigint[];
  a_upd    timestamptz[];
  a_touch  boolean[];
  -- Per member, indexed 1..n.
  m_id     uuid[];      -- transfer id (given or generated)
  m_d      integer[];   -- index of the debit account in a_*, NULL: not found
  m_c      integer[];
  m_fp     bytea[];     -- fingerprint of this request
  m_sfp    bytea[];     -- recorded fingerprint, if any
  m_has    boolean[];   -- request_id already recorded
  m_sres   ledger.transfer_result[];  -- recorded outcome (NULL if recorded by another operation)
  m_first  integer[];   -- first member with the same request_id
  m_iddup  boolean[];   -- a previous member carries the same transfer id
  m_cur    text[];      -- effective currency
  v_acc    uuid[];      -- distinct account ids of the batch, ascending
  o_status text[];      -- 'ok', a reason, '*replay' (recorded), '*dup' (same request earlier in batch)
  o_failed uuid[];
  o_dbal   bigint[];
  o_davail bigint[];
  o_cbal   bigint[];
  o_cavail bigint[];
  o_dseq   bigint[];
  o_cseq   bigint[];
  o_store  boolean[];   -- record this member's outcome
  v_res    ledger.transfer_result[];
  v_r      ledger.transfer_result;
  v_ts     timestamptz;
  v_key    bigint;
  v_ok     integer := 0;   -- new members applied
  v_new    integer := 0;   -- new members (not recorded, not in-batch duplicates)
  v_fail   integer := 0;   -- new members failed, or reused request ids
  v_old    integer := 0;   -- recorded members (replays)
  v_reused integer := 0;   -- members whose request_id is recorded with another payload
  v_stored integer := 0;
  v_expect integer;
  d integer; c integer; v_amt bigint; v_pend boolean; v_tmo bigint; v_avail bigint;
begin
  if n = 0 then
    return;
  end if;
  if n > 1000 then
    raise exception 'a batch holds at most 1000 transfers, got %', n using errcode = 'invalid_parameter_value';
  end if;
  if cardinality(p_debit_ids) is distinct from n or cardinality(p_credit_ids) is distinct from n
     or cardinality(p_amounts) is distinct from n
     or coalesce(cardinality(p_ids), n) <> n or coalesce(cardinality(p_currencies), n) <> n
     or coalesce(cardinality(p_pending), n) <> n or coalesce(cardinality(p_timeouts_ms), n) <> n
     or coalesce(cardinality(p_metadata), n) <> n or coalesce(cardinality(p_owner_scopes), n) <> n
     or coalesce(cardinality(p_actors), n) <> n then
    raise exception 'member arrays must all have % elements', n using errcode = 'invalid_parameter_value';
  end if;
  if array_position(p_request_ids, null) is not null then
    raise exception 'every member needs a request_id' using errcode = 'invalid_parameter_value';
  end if;

  -- 1. Before taking any lock: per member fingerprint, recorded outcome,
  --    in-batch duplicates, and the sorted set of accounts to lock. A
  --    concurrent duplicate that commits after this read makes our record
  --    insert conflict (step 6): we then fail with 40001 and the retry replays.
  v_acc := array(select distinct x from unnest(p_debit_ids || p_credit_ids) as x where x is not null order by x);
  select array_agg(x.id), array_agg(x.dpos), array_agg(x.cpos), array_agg(x.fp), array_agg(x.sfp),
         array_agg(x.sres), array_agg(x.has), array_agg(x.first), array_agg(x.iddup)
    into m_id, m_d, m_c, m_fp, m_sfp, m_sres, m_has, m_first, m_iddup
    from (select coalesce(t.id, ledger.uuid_v7()) as id, dp.pos as dpos, cp.pos as cpos, t.fp,
                 r.fingerprint as sfp, r.transfer_result as sres, r.request_id is not null as has, t.first,
                 t.id is not null and t.id_first < t.ord as iddup
            from (select u.*,
                         sha256(convert_to(row('create_transfers', coalesce(p_linked, false), u.d, u.c, u.amt,
                                               u.cur, coalesce(u.pend, false), u.tmo, u.md, u.scope,
                                               u.actor)::text, 'UTF8')) as fp,
                         min(u.ord) over (partition by u.rid) as first,
                         min(u.ord) over (partition by u.id) as id_first
                    from unnest(p_request_ids, p_ids, p_debit_ids, p_credit_ids, p_amounts, p_currencies,
                                p_pending, p_timeouts_ms, p_metadata, p_owner_scopes, p_actors)
                         with ordinality as u (rid, id, d, c, amt, cur, pend, tmo, md, scope, actor, ord)) t
            left join unnest(v_acc) with ordinality as dp (id, pos) on dp.id = t.d
            left join unnest(v_acc) with ordinality as cp (id, pos) on cp.id = t.c
            left join ledger.requests r on r.request_id = t.rid
           order by t.ord) x;  -- array_agg keeps the order of an ordered subquery

  -- 2. Lock every account the batch names, once, in ascending id order. The
  --    a_* arrays are aligned with v_acc; a_id[k] IS NULL: no such account.
  with l as (
    select a.id, a.owner_id, a.currency, a.kind, a.status, a.overdraft_limit, a.balance,
           a.pending_debits, a.pending_credits, a.version, a.last_order_key, a.updated_at
      from ledger.accounts a
     where a.id = any (v_acc)
     order by a.id
       for update
  )
  select array_agg(x.id), array_agg(x.owner_id), array_agg(x.currency), array_agg(x.kind), array_agg(x.status),
         array_agg(x.overdraft_limit), array_agg(x.balance), array_agg(x.pending_debits),
         array_agg(x.pending_credits), array_agg(x.version), array_agg(x.last_order_key), array_agg(x.updated_at),
         array_agg(false)
    into a_id, a_owner, a_cur, a_kind, a_status, a_od, a_bal, a_pd, a_pc, a_ver, a_key, a_upd, a_touch
    from (select l.*
            from unnest(v_acc) with ordinality as u (id, pos)
            left join l on l.id = u.id
           order by u.pos) x;

  -- Taken after the locks: never earlier than any locked account's last
  -- change, so entries' created_at never decreases per account.
  v_ts := greatest(clock_timestamp(), (select max(x) from unnest(a_upd) as x));

  o_status := array_fill(null::text, array[n]);
  o_failed := array_fill(null::uuid, array[n]);
  o_dbal := array_fill(null::bigint, array[n]);
  o_davail := o_dbal; o_cbal := o_dbal; o_cavail := o_dbal; o_dseq := o_dbal; o_cseq := o_dbal;
  o_store := array_fill(false, array[n]);
  m_cur := array_fill(null::text, array[n]);

  -- 3. Decide every member in order against the in-memory balances.
  for i in 1 .. n loop
    if m_has[i] then
      if m_sfp[i] = m_fp[i] then
        o_status[i] := '*replay';
        v_old := v_old + 1;
      else
        o_status[i] := 'request_id_reused';
        v_fail := v_fail + 1;
        v_reused := v_reused + 1;
      end if;
      continue;
    end if;
    if m_first[i] < i then
      if m_fp[i] = m_fp[m_first[i]] then
        o_status[i] := '*dup';
      else
        o_status[i] := 'request_id_reused';
        v_fail := v_fail + 1;
        v_reused := v_reused + 1;
      end if;
      continue;
    end if;

    v_new := v_new + 1;
    o_store[i] := true;
    d := m_d[i];
    c := m_c[i];
    if a_id[d] is null then d := null; end if;
    if a_id[c] is null then c := null; end if;
    m_cur[i] := p_currencies[i];
    v_amt := p_amounts[i];
    v_pend := coalesce(p_pending[i], false);
    v_tmo := p_timeouts_ms[i];

    if p_ids[i] is not null and (m_iddup[i] or substr(p_ids[i]::text, 15, 1) <> '7'
         or ledger.uuid_v7_time(p_ids[i]) not between v_ts - c_id_skew and v_ts + c_id_skew) then
      o_status[i] := 'invalid_id';
    elsif v_amt is null or v_amt <= 0 then
      o_status[i] := 'invalid_amount';
    elsif v_pend and v_tmo is not null and (v_tmo < 0 or v_tmo > c_max_timeout_ms) then
      o_status[i] := 'invalid_timeout';
    elsif p_debit_ids[i] = p_credit_ids[i] then
      o_status[i] := 'same_account';
    else
      m_cur[i] := coalesce(p_currencies[i], a_cur[d]);
      if p_owner_scopes[i] is not null and (d is null or a_owner[d] is distinct from p_owner_scopes[i]) then
        o_status[i] := 'permission_denied';
        o_failed[i] := p_debit_ids[i];
      elsif d is null then
        o_status[i] := 'account_not_found';
        o_failed[i] := p_debit_ids[i];
      elsif c is null then
        o_status[i] := 'account_not_found';
        o_failed[i] := p_credit_ids[i];
      elsif a_status[d] <> 'active' then
        o_status[i] := 'account_' || a_status[d];
        o_failed[i] := p_debit_ids[i];
      elsif a_status[c] <> 'active' then
        o_status[i] := 'account_' || a_status[c];
        o_failed[i] := p_credit_ids[i];
      elsif a_cur[d] <> a_cur[c] or m_cur[i] <> a_cur[d] then
        o_status[i] := 'currency_mismatch';
      else
        v_avail := a_bal[d] - a_pd[d];
        if a_kind[d] = 'customer' and v_avail < v_amt - a_od[d] then
          o_status[i] := 'insufficient_funds';
          o_failed[i] := p_debit_ids[i];
          o_dbal[i] := a_bal[d];
          o_davail[i] := v_avail;
        elsif v_avail < c_min + v_amt
              or (v_pend and a_pd[d] > c_max - v_amt) then
          o_status[i] := 'amount_overflow';
          o_failed[i] := p_debit_ids[i];
        elsif (v_pend and a_pc[c] > c_max - v_amt) or (not v_pend and a_bal[c] > c_max - v_amt) then
          o_status[i] := 'amount_overflow';
          o_failed[i] := p_credit_ids[i];
        else
          if v_pend then
            a_pd[d] := a_pd[d] + v_amt;
            a_pc[c] := a_pc[c] + v_amt;
          else
            a_bal[d] := a_bal[d] - v_amt;
            a_bal[c] := a_bal[c] + v_amt;
          end if;
          a_ver[d] := a_ver[d] + 1;
          a_ver[c] := a_ver[c] + 1;
          a_touch[d] := true;
          a_touch[c] := true;
          o_status[i] := 'ok';
          o_dseq[i] := a_ver[d];
          o_cseq[i] := a_ver[c];
          o_dbal[i] := a_bal[d];
          o_davail[i] := a_bal[d] - a_pd[d];
          o_cbal[i] := a_bal[c];
          o_cavail[i] := a_bal[c] - a_pd[c];
          v_ok := v_ok + 1;
          continue;
        end if;
      end if;
    end if;
    v_fail := v_fail + 1;
  end loop;

  -- 4. Linked: all or nothing. Failure outcomes are recorded (a refused
  --    batch stays refused on replay) unless the batch mixes in recorded or
  --    reused request ids: then the same call fails the same way next time
  --    and nothing is recorded.
  if p_linked and (v_fail > 0 or (v_old > 0 and v_new > 0)) then
    for i in 1 .. n loop
      if o_status[i] = 'ok' then
        o_status[i] := 'linked_failed';
        o_dbal[i] := null; o_davail[i] := null; o_cbal[i] := null; o_cavail[i] := null;
      end if;
      if v_old > 0 or v_reused > 0 then
        o_store[i] := false;
      end if;
    end loop;
    v_ok := 0;
  end if;

  -- 5. Result rows, input order.
  select array_agg(
           case
             when o.st = '*replay' then ledger.replay_transfer(o.rid, o.sfp, m_sres[o.ord], o.fp)
             when o.st = '*dup' then null
             when o.st = 'request_id_reused' then
               row(o.rid, 'request_id_reused', null, null, null, null, null, null, null, null,
                   null, null, null, null, null, null, null, false)::ledger.transfer_result
             else
               row(o.rid, o.st, o.failed,
                   case when o.st = 'ok' then o.tid end,
                   case when o.st = 'ok' then case when coalesce(o.pend, false) then 'pending' else 'posted' end end,
                   o.d, o.c, o.cur, o.amt,
                   case when o.st = 'ok' and not coalesce(o.pend, false) then o.amt else 0 end,
                   case when o.st = 'ok' and o.pend and o.tmo > 0 then v_ts + o.tmo * interval '1 millisecond' end,
                   case when o.st = 'ok' then v_ts end,
                   case when o.st = 'ok' then v_ts end,
                   o.dbal, o.davail, o.cbal, o.cavail, false)::ledger.transfer_result
           end)
    into v_res
    from unnest(p_request_ids, o_status, o_failed, m_id, p_debit_ids, p_credit_ids, m_cur, p_amounts,
                p_pending, p_timeouts_ms, o_dbal, o_davail, o_cbal, o_cavail, m_sfp, m_fp)
         with ordinality as o (rid, st, failed, tid, d, c, cur, amt, pend, tmo, dbal, davail, cbal, cavail,
                               sfp, fp, ord);

  -- In-batch duplicates of a request repeat the first member's outcome.
  for i in 1 .. n loop
    if o_status[i] = '*dup' then
      v_r := v_res[m_first[i]];
      v_r.replayed := true;
      v_res[i] := v_r;
    end if;
  end loop;

  -- 6. Write: balances, transfers, entries, outbox, idempotency records.
  v_expect := (select count(*) from unnest(o_store) s where s);
  if v_ok > 0 then
    v_key := ledger.order_key((select max(k) from unnest(a_key, a_touch) as x (k, t) where t));
    with acc as (
      update ledger.accounts a
         set balance = x.bal, pending_debits = x.pd, pending_credits = x.pc, version = x.ver,
             last_order_key = v_key, updated_at = v_ts
        from unnest(a_id, a_bal, a_pd, a_pc, a_ver, a_touch) as x (id, bal, pd, pc, ver, t)
       where x.t and a.id = x.id
    ), src as materialized (
      select r.*, v_res[r.ordinality] as res, p_metadata[r.ordinality] as md,
             p_actors[r.ordinality] as actor, o_dseq[r.ordinality] as dseq, o_cseq[r.ordinality] as cseq,
             m_fp[r.ordinality] as fp
        from unnest(v_res) with ordinality as r
       where o_store[r.ordinality]
    ), tr as (
      insert into ledger.transfers (id, debit_account_id, credit_account_id, currency, amount, posted_amount,
                                    status, expires_at, created_at, updated_at, actor, metadata)
      select s.transfer_id, s.debit_account_id, s.credit_account_id, s.currency, s.amount, s.posted_amount,
             s.transfer_status, s.expires_at, s.created_at, s.updated_at, s.actor, s.md
        from src s
       where s.status = 'ok'
    ), en as (
      insert into ledger.entries (account_id, created_at, seq, amount, balance_after, transfer_id)
      select e.account_id, v_ts, e.seq, e.amount, e.balance_after, s.transfer_id
        from src s
       cross join lateral (values (s.debit_account_id, s.dseq, -s.amount, s.debit_balance),
                                  (s.credit_account_id, s.cseq, s.amount, s.credit_balance))
                    as e (account_id, seq, amount, balance_after)
       where s.status = 'ok' and s.transfer_status = 'posted'
    ), ev as (
      insert into ledger.events (order_key, id, type, aggregate_id, transfer)
      select v_key, ledger.uuid_v7(), 'transfer.created', s.transfer_id, s.res
        from src s
       where s.status = 'ok'
       order by s.ordinality
    ), req as (
      insert into ledger.requests (request_id, fingerprint, transfer_result)
      select s.request_id, s.fp, s.res
        from src s
       order by s.request_id
          on conflict (request_id) do nothing
      returning 1
    )
    select count(*) into v_stored from req;
    perform ledger.notify_events();
  elsif v_expect > 0 then
    with req as (
      insert into ledger.requests (request_id, fingerprint, transfer_result)
      select r.request_id, m_fp[r.ordinality], v_res[r.ordinality]
        from unnest(v_res) with ordinality as r
       where o_store[r.ordinality]
       order by r.request_id
          on conflict (request_id) do nothing
      returning 1
    )
    select count(*) into v_stored from req;
  end if;
  if v_stored < v_expect then
    raise exception 'a request of this batch was recorded concurrently; retry'
      using errcode = 'serialization_failure';
  end if;

  return query select * from unnest(v_res);
end
$fn$;

-- One transfer: the same rules, checks in the same order, the same
-- fingerprint and the same result as an unlinked batch of one (a request
-- recorded by either replays through the other), on a short path: the lock
-- is held only for the record lookup, the checks, two account updates and
-- four inserts. The record is looked up after the account locks, so a
-- concurrent duplicate waits for the first and replays its outcome.
-- p_timeout_ms applies to pending transfers (NULL or 0: no timeout).
create function ledger.create_transfer(
  p_request_id        uuid,
  p_id                uuid,
  p_debit_account_id  uuid,
  p_credit_account_id uuid,
  p_amount            bigint,
  p_currency          text,
  p_pending           boolean default false,
  p_timeout_ms        bigint default null,
  p_metadata          jsonb default null,
  p_owner_scope       uuid default null,
  p_actor             uuid default null)
returns ledger.transfer_result
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $fn$
declare
  c_max  constant bigint := 9223372036854775807;
  c_min  constant bigint := -9223372036854775807 - 1;
  c_max_timeout_ms constant bigint := 315576000000;
  c_id_skew constant interval := interval '10 minutes';
  v_pend boolean := coalesce(p_pending, false);
  v_fp   bytea := sha256(convert_to(row('create_transfers', false, p_debit_account_id, p_credit_account_id,
                                        p_amount, p_currency, coalesce(p_pending, false), p_timeout_ms,
                                        p_metadata, p_owner_scope, p_actor)::text, 'UTF8'));
  v_req  ledger.requests;
  d      ledger.accounts;
  c      ledger.accounts;
  v_res  ledger.transfer_result;
  v_ts   timestamptz;
  v_key  bigint;
  v_avail bigint;
begin
  if p_request_id is null then
    raise exception 'request_id is required' using errcode = 'invalid_parameter_value';
  end if;

  v_res := row(p_request_id, null, null, null, null, p_debit_account_id, p_credit_account_id, p_currency,
               p_amount, 0, null, null, null, null, null, null, null, false)::ledger.transfer_result;

  if p_id is not null and (substr(p_id::text, 15, 1) <> '7'
       or ledger.uuid_v7_time(p_id) not between clock_timestamp() - c_id_skew and clock_timestamp() + c_id_skew) then
    v_res.status := 'invalid_id';
  elsif p_amount is null or p_amount <= 0 then
    v_res.status := 'invalid_amount';
  elsif v_pend and p_timeout_ms is not null and (p_timeout_ms < 0 or p_timeout_ms > c_max_timeout_ms) then
    v_res.status := 'invalid_timeout';
  elsif p_debit_account_id = p_credit_account_id then
    v_res.status := 'same_account';
  else
    if p_debit_account_id < p_credit_account_id then
      select * into d from ledger.accounts where id = p_debit_account_id for update;
      select * into c from ledger.accounts where id = p_credit_account_id for update;
    else
      select * into c from ledger.accounts where id = p_credit_account_id for update;
      select * into d from ledger.accounts where id = p_debit_account_id for update;
    end if;
    -- Recorded? Read after the locks: a concurrent duplicate held them until
    -- it committed its record, so it is visible now and we replay it.
    select * into v_req from ledger.requests where request_id = p_request_id;
    if found then
      return ledger.replay_transfer(p_request_id, v_req.fingerprint, v_req.transfer_result, v_fp);
    end if;
    v_res.currency := coalesce(p_currency, d.currency);
    v_avail := d.balance - d.pending_debits;

    if p_owner_scope is not null and (d.id is null or d.owner_id is distinct from p_owner_scope) then
      v_res.status := 'permission_denied';
      v_res.failed_account_id := p_debit_account_id;
    elsif d.id is null then
      v_res.status := 'account_not_found';
      v_res.failed_account_id := p_debit_account_id;
    elsif c.id is null then
      v_res.status := 'account_not_found';
      v_res.failed_account_id := p_credit_account_id;
    elsif d.status <> 'active' then
      v_res.status := 'account_' || d.status;
      v_res.failed_account_id := d.id;
    elsif c.status <> 'active' then
      v_res.status := 'account_' || c.status;
      v_res.failed_account_id := c.id;
    elsif d.currency <> c.currency or v_res.currency <> d.currency then
      v_res.status := 'currency_mismatch';
    elsif d.kind = 'customer' and v_avail < p_amount - d.overdraft_limit then
      v_res.status := 'insufficient_funds';
      v_res.failed_account_id := d.id;
      v_res.debit_balance := d.balance;
      v_res.debit_available := v_avail;
    elsif v_avail < c_min + p_amount or (v_pend and d.pending_debits > c_max - p_amount) then
      v_res.status := 'amount_overflow';
      v_res.failed_account_id := d.id;
    elsif (v_pend and c.pending_credits > c_max - p_amount) or (not v_pend and c.balance > c_max - p_amount) then
      v_res.status := 'amount_overflow';
      v_res.failed_account_id := c.id;
    else
      v_ts := greatest(clock_timestamp(), d.updated_at, c.updated_at);
      v_key := ledger.order_key(greatest(d.last_order_key, c.last_order_key));
      if v_pend then
        update ledger.accounts
           set pending_debits = pending_debits + p_amount, version = version + 1,
               last_order_key = v_key, updated_at = v_ts
         where id = d.id
        returning * into d;
        update ledger.accounts
           set pending_credits = pending_credits + p_amount, version = version + 1,
               last_order_key = v_key, updated_at = v_ts
         where id = c.id
        returning * into c;
      else
        update ledger.accounts
           set balance = balance - p_amount, version = version + 1, last_order_key = v_key, updated_at = v_ts
         where id = d.id
        returning * into d;
        update ledger.accounts
           set balance = balance + p_amount, version = version + 1, last_order_key = v_key, updated_at = v_ts
         where id = c.id
        returning * into c;
      end if;

      v_res := row(p_request_id, 'ok', null, coalesce(p_id, ledger.uuid_v7()),
                   case when v_pend then 'pending' else 'posted' end,
                   d.id, c.id, d.currency, p_amount, case when v_pend then 0 else p_amount end,
                   case when v_pend and p_timeout_ms > 0 then v_ts + p_timeout_ms * interval '1 millisecond' end,
                   v_ts, v_ts, d.balance, d.balance - d.pending_debits, c.balance, c.balance - c.pending_debits,
                   false)::ledger.transfer_result;
      insert into ledger.transfers (id, debit_account_id, credit_account_id, currency, amount, posted_amount,
                                    status, expires_at, created_at, updated_at, actor, metadata)
      values (v_res.transfer_id, d.id, c.id, d.currency, p_amount, v_res.posted_amount,
              v_res.transfer_status, v_res.expires_at, v_ts, v_ts, p_actor, p_metadata);
      if not v_pend then
        insert into ledger.entries (account_id, created_at, seq, amount, balance_after, transfer_id)
        values (d.id, v_ts, d.version, -p_amount, d.balance, v_res.transfer_id),
               (c.id, v_ts, c.version, p_amount, c.balance, v_res.transfer_id);
      end if;
      insert into ledger.events (order_key, id, type, aggregate_id, transfer)
      values (v_key, ledger.uuid_v7(), 'transfer.created', v_res.transfer_id, v_res);
      perform ledger.notify_events();
      perform ledger.record_request(p_request_id, v_fp, v_res, null);
      return v_res;
    end if;
  end if;

  -- Refused. A request refused before any lock was taken may be a replay.
  if v_res.status in ('invalid_id', 'invalid_amount', 'invalid_timeout', 'same_account') then
    select * into v_req from ledger.requests where request_id = p_request_id;
    if found then
      return ledger.replay_transfer(p_request_id, v_req.fingerprint, v_req.transfer_result, v_fp);
    end if;
  end if;
  perform ledger.record_request(p_request_id, v_fp, v_res, null);
  return v_res;
end
$fn$;

-- ---------------------------------------------------------------------------
-- post_pending / void_pending
-- ---------------------------------------------------------------------------

-- Posts (p_action = 'post', p_amount NULL = the full held amount, else a
-- partial amount 1..held; the remainder is released) or voids (p_action =
-- 'void') a pending transfer. Reasons: permission_denied (p_owner_scope set
-- and the debit account is not theirs, checked before existence),
-- transfer_not_found, transfer_not_pending (transfer_status says what it is),
-- transfer_expired (past its timeout, awaiting the sweep), invalid_amount,
-- amount_exceeds_pending, account_frozen / account_closed (post only: a void
-- releases a hold even on a frozen account), amount_overflow,
-- request_id_reused.
create function ledger.resolve_pending(
  p_action      text,
  p_request_id  uuid,
  p_transfer_id uuid,
  p_amount      bigint,
  p_owner_scope uuid,
  p_actor       uuid)
returns ledger.transfer_result
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $fn$
declare
  c_max constant bigint := 9223372036854775807;
  c_min constant bigint := -9223372036854775807 - 1;
  v_fp  bytea := sha256(convert_to(
                   row(p_action || '_pending', p_transfer_id, p_amount, p_owner_scope, p_actor)::text, 'UTF8'));
  v_req ledger.requests;
  t     ledger.transfers;
  d     ledger.accounts;
  c     ledger.accounts;
  v_found boolean;
  v_post  bigint;
  v_ts    timestamptz;
  v_key   bigint;
  v_res   ledger.transfer_result;
begin
  if p_request_id is null then
    raise exception 'request_id is required' using errcode = 'invalid_parameter_value';
  end if;
  if p_action is null or p_action not in ('post', 'void') then
    raise exception 'unknown action %', p_action using errcode = 'invalid_parameter_value';
  end if;

  -- Transfer row first, then both accounts in id order.
  select * into t from ledger.transfers where id = p_transfer_id for update;
  v_found := found;
  if v_found then
    if t.debit_account_id < t.credit_account_id then
      select * into d from ledger.accounts where id = t.debit_account_id for update;
      select * into c from ledger.accounts where id = t.credit_account_id for update;
    else
      select * into c from ledger.accounts where id = t.credit_account_id for update;
      select * into d from ledger.accounts where id = t.debit_account_id for update;
    end if;
  end if;

  select * into v_req from ledger.requests where request_id = p_request_id;
  if found then
    return ledger.replay_transfer(p_request_id, v_req.fingerprint, v_req.transfer_result, v_fp);
  end if;

  v_ts := greatest(clock_timestamp(), d.updated_at, c.updated_at);
  v_res := row(p_request_id, null, null, p_transfer_id, t.status, t.debit_account_id, t.credit_account_id,
               t.currency, t.amount, t.posted_amount, t.expires_at, t.created_at, t.updated_at,
               d.balance, d.balance - d.pending_debits, c.balance, c.balance - c.pending_debits,
               false)::ledger.transfer_result;
  v_post := coalesce(p_amount, t.amount);

  if p_owner_scope is not null and (not v_found or d.owner_id is distinct from p_owner_scope) then
    v_res := row(p_request_id, 'permission_denied', null, p_transfer_id, null, null, null, null, null, null,
                 null, null, null, null, null, null, null, false)::ledger.transfer_result;
  elsif not v_found then
    v_res.status := 'transfer_not_found';
  elsif t.status <> 'pending' then
    v_res.status := 'transfer_not_pending';
  elsif t.expires_at <= v_ts then
    v_res.status := 'transfer_expired';
  elsif p_action = 'post' and v_post <= 0 then
    v_res.status := 'invalid_amount';
  elsif p_action = 'post' and v_post > t.amount then
    v_res.status := 'amount_exceeds_pending';
  elsif p_action = 'post' and d.status <> 'active' then
    v_res.status := 'account_' || d.status;
    v_res.failed_account_id := d.id;
  elsif p_action = 'post' and c.status <> 'active' then
    v_res.status := 'account_' || c.status;
    v_res.failed_account_id := c.id;
  elsif p_action = 'post' and d.balance < c_min + v_post then
    v_res.status := 'amount_overflow';
    v_res.failed_account_id := d.id;
  elsif p_action = 'post' and c.balance > c_max - v_post then
    v_res.status := 'amount_overflow';
    v_res.failed_account_id := c.id;
  else
    if p_action = 'void' then
      v_post := 0;
    end if;
    v_key := ledger.order_key(greatest(d.last_order_key, c.last_order_key));
    update ledger.accounts
       set balance = balance - v_post,
           pending_debits = pending_debits - t.amount,
           version = version + 1,
           last_order_key = v_key,
           updated_at = v_ts
     where id = d.id
    returning * into d;
    update ledger.accounts
       set balance = balance + v_post,
           pending_credits = pending_credits - t.amount,
           version = version + 1,
           last_order_key = v_key,
           updated_at = v_ts
     where id = c.id
    returning * into c;
    update ledger.transfers
       set status = case when p_action = 'post' then 'posted' else 'voided' end,
           posted_amount = v_post,
           updated_at = v_ts
     where id = p_transfer_id
    returning * into t;
    if v_post > 0 then
      insert into ledger.entries (account_id, created_at, seq, amount, balance_after, transfer_id)
      values (d.id, v_ts, d.version, -v_post, d.balance, t.id),
             (c.id, v_ts, c.version, v_post, c.balance, t.id);
    end if;
    v_res := row(p_request_id, 'ok', null, t.id, t.status, t.debit_account_id, t.credit_account_id,
                 t.currency, t.amount, t.posted_amount, t.expires_at, t.created_at, t.updated_at,
                 d.balance, d.balance - d.pending_debits, c.balance, c.balance - c.pending_debits,
                 false)::ledger.transfer_result;
    insert into ledger.events (order_key, id, type, aggregate_id, transfer)
    values (v_key, ledger.uuid_v7(), 'transfer.' || t.status, t.id, v_res);
    perform ledger.notify_events();
  end if;

  perform ledger.record_request(p_request_id, v_fp, v_res, null);
  return v_res;
end
$fn$;

create function ledger.post_pending(p_request_id uuid, p_transfer_id uuid, p_amount bigint default null,
                                    p_owner_scope uuid default null, p_actor uuid default null)
returns ledger.transfer_result
language sql
return ledger.resolve_pending('post', p_request_id, p_transfer_id, p_amount, p_owner_scope, p_actor);

create function ledger.void_pending(p_request_id uuid, p_transfer_id uuid,
                                    p_owner_scope uuid default null, p_actor uuid default null)
returns ledger.transfer_result
language sql
return ledger.resolve_pending('void', p_request_id, p_transfer_id, null, p_owner_scope, p_actor);

-- ---------------------------------------------------------------------------
-- expire_pending
-- ---------------------------------------------------------------------------

-- Expires up to p_limit pending transfers whose timeout has passed, releasing
-- their holds; returns how many it expired. Safe with any number of
-- concurrent sweepers: each claims rows with FOR UPDATE SKIP LOCKED and a row
-- changed meanwhile (posted, voided, expired) is re-checked and skipped, so
-- every hold is released exactly once. Call it in a loop until it returns < p_limit.
create function ledger.expire_pending(p_limit integer default 1000)
returns integer
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_ids uuid[];
  v_d   uuid[];
  v_c   uuid[];
  v_amt bigint[];
  v_prev bigint;
  v_upd  timestamptz;
  v_ts  timestamptz;
  v_key bigint;
  v_now timestamptz := clock_timestamp();
begin
  select array_agg(s.id), array_agg(s.debit_account_id), array_agg(s.credit_account_id), array_agg(s.amount)
    into v_ids, v_d, v_c, v_amt
    from (select t.id, t.debit_account_id, t.credit_account_id, t.amount
            from ledger.transfers t
           where t.status = 'pending' and t.expires_at <= v_now
             and t.id < ledger.uuid_v7_floor(now() + interval '1 hour')  -- prunes the empty future partitions
           order by t.expires_at
           limit greatest(coalesce(p_limit, 1000), 1)
             for update skip locked) s;
  if v_ids is null then
    return 0;
  end if;

  select max(s.last_order_key), max(s.updated_at) into v_prev, v_upd
    from (select a.last_order_key, a.updated_at
            from ledger.accounts a
           where a.id = any (v_d) or a.id = any (v_c)
           order by a.id
             for update) s;
  v_ts := greatest(clock_timestamp(), v_upd);
  v_key := ledger.order_key(v_prev);

  with per as (
    select x.id, sum(x.pd) as pd, sum(x.pc) as pc, count(*) as n
      from (select u.id, u.amt as pd, 0::bigint as pc from unnest(v_d, v_amt) as u (id, amt)
            union all
            select u.id, 0::bigint, u.amt from unnest(v_c, v_amt) as u (id, amt)) x
     group by x.id
  ), acc as (
    update ledger.accounts a
       set pending_debits = a.pending_debits - per.pd,
           pending_credits = a.pending_credits - per.pc,
           version = a.version + per.n,
           last_order_key = v_key,
           updated_at = v_ts
      from per
     where a.id = per.id
    returning a.id, a.balance, a.pending_debits
  ), tr as (
    update ledger.transfers t
       set status = 'expired', updated_at = v_ts
     where t.id = any (v_ids)
    returning t.*
  )
  insert into ledger.events (order_key, id, type, aggregate_id, transfer)
  select v_key, ledger.uuid_v7(), 'transfer.expired', tr.id,
         row(null, 'ok', null, tr.id, tr.status, tr.debit_account_id, tr.credit_account_id,
             tr.currency, tr.amount, tr.posted_amount, tr.expires_at, tr.created_at, tr.updated_at,
             da.balance, da.balance - da.pending_debits, ca.balance, ca.balance - ca.pending_debits,
             false)::ledger.transfer_result
    from tr
    join acc da on da.id = tr.debit_account_id
    join acc ca on ca.id = tr.credit_account_id
   order by tr.expires_at, tr.id;

  perform ledger.notify_events();
  return cardinality(v_ids);
end
$fn$;
