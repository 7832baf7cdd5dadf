-- Shared internals (outbox clock, throttled NOTIFY, replay decoding), currency
-- and system-account seeding, and the account functions: open_account,
-- set_account_status (+ freeze_account / unfreeze_account / close_account).
--
-- Conventions for every mutating function (docs/ledger-sql.md):
--  * business failures are returned as a result row with status = '<reason>',
--    never raised; status = 'ok' on success;
--  * the request is recorded in ledger.requests in the same transaction, with
--    a fingerprint of the payload computed here, and replayed verbatim;
--  * the only error a caller should ever see is SQLSTATE 40001 when a
--    request_id was recorded by a concurrent call that did not wait on the
--    same locks (a concurrent reuse with another payload, a duplicate racing
--    its original into a batch or open_account): retry, and the retry returns
--    the stored outcome or 'request_id_reused'; 22023 for a call the service
--    should never make (NULL request_id, arrays of unequal length); and
--    infrastructure errors.

-- Outbox ordering key for the current transaction: a Lamport clock over top
-- level xids. p_prev is the largest last_order_key of the accounts the
-- transaction has locked. Assigns the xid if none yet.
create function ledger.order_key(p_prev bigint) returns bigint
language sql volatile
return greatest(pg_current_xact_id()::text::bigint, coalesce(p_prev, 0));

-- NOTIFY ledger_events, at most once per 50 ms bucket across all sessions.
-- NOTIFY serialises committing transactions on a global lock held through the
-- commit's WAL flush; doing it in every transaction caps throughput, so
-- listeners also poll (docs: "Event order").
create function ledger.notify_events() returns void
language plpgsql
as $fn$
declare
  v_bucket bigint := floor(extract(epoch from clock_timestamp()) * 20)::bigint;
begin
  if v_bucket > (select last_value from ledger.notify_bucket) then
    perform setval('ledger.notify_bucket', v_bucket);
    perform pg_notify('ledger_events', '');
  end if;
end
$fn$;

-- The outcome to return for a request_id that is already recorded: the
-- stored row with replayed = true if the payload matches, else
-- 'request_id_reused'. p_stored is NULL when the request_id was recorded by
-- another kind of operation (its fingerprint then differs too).
create function ledger.replay_transfer(p_request_id uuid, p_stored_fp bytea, p_stored ledger.transfer_result,
                                       p_fp bytea)
returns ledger.transfer_result
language plpgsql
immutable
as $fn$
declare
  r ledger.transfer_result;
begin
  if p_stored_fp = p_fp and p_stored.request_id is not null then
    r := p_stored;
    r.replayed := true;
  else
    r.request_id := p_request_id;
    r.status := 'request_id_reused';
    r.replayed := false;
  end if;
  return r;
end
$fn$;

create function ledger.replay_account(p_request_id uuid, p_stored_fp bytea, p_stored ledger.account_result,
                                      p_fp bytea)
returns ledger.account_result
language plpgsql
immutable
as $fn$
declare
  r ledger.account_result;
begin
  if p_stored_fp = p_fp and p_stored.request_id is not null then
    r := p_stored;
    r.replayed := true;
  else
    r.request_id := p_request_id;
    r.status := 'request_id_reused';
    r.replayed := false;
  end if;
  return r;
end
$fn$;

create function ledger.to_account_result(p_request_id uuid, p_status text, a ledger.accounts)
returns ledger.account_result
language sql immutable
return row(p_request_id, p_status, a.id, a.owner_id, a.currency, a.kind, a.system_role, a.status,
           a.overdraft_limit, a.balance, a.pending_debits, a.pending_credits,
           a.balance - a.pending_debits, a.version, a.created_at, a.updated_at, false)::ledger.account_result;

-- Records a request's outcome (exactly one of p_transfer / p_account). A
-- concurrent transaction that recorded the same request_id first (possible
-- only when the two calls did not wait for each other on an account lock:
-- a reuse with another payload, or a duplicate that raced the first one past
-- the initial lookup) makes this one fail with 40001; the caller's retry then
-- returns the stored outcome or 'request_id_reused'.
create function ledger.record_request(p_request_id uuid, p_fp bytea,
                                      p_transfer ledger.transfer_result, p_account ledger.account_result)
returns void
language plpgsql
as $fn$
begin
  insert into ledger.requests (request_id, fingerprint, transfer_result, account_result)
  values (p_request_id, p_fp, p_transfer, p_account)
  on conflict (request_id) do nothing;
  if not found then
    raise exception 'request % was recorded concurrently; retry', p_request_id
      using errcode = 'serialization_failure';
  end if;
end
$fn$;

-- ---------------------------------------------------------------------------
-- Currencies and their system accounts (cash vault, external clearing, fees).
-- ---------------------------------------------------------------------------

-- Adds a currency with its three system accounts; a no-op for parts that
-- already exist. Used by migrations (system accounts are never opened by RPC).
create function ledger.add_currency(p_code text, p_minor_units smallint, p_name text)
returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_role text;
  v_acc  ledger.accounts;
  v_now  timestamptz := clock_timestamp();
  v_key  bigint := ledger.order_key(0);
begin
  insert into ledger.currencies (code, minor_units, name)
  values (p_code, p_minor_units, p_name)
  on conflict (code) do nothing;

  foreach v_role in array array['cash_vault', 'external_clearing', 'fees'] loop
    insert into ledger.accounts (id, owner_id, currency, kind, system_role, last_order_key, created_at, updated_at)
    values (ledger.uuid_v7(), null, p_code, 'system', v_role, v_key, v_now, v_now)
    on conflict (currency, system_role) where system_role is not null do nothing
    returning * into v_acc;
    if found then
      insert into ledger.events (order_key, id, type, aggregate_id, account)
      values (v_key, ledger.uuid_v7(), 'account.opened', v_acc.id, ledger.to_account_result(null, 'ok', v_acc));
    end if;
  end loop;
end
$fn$;

select ledger.add_currency(c.code, c.minor_units, c.name)
from (values ('USD', 2::smallint, 'US Dollar'),
             ('EUR', 2::smallint, 'Euro'),
             ('GBP', 2::smallint, 'Pound Sterling'),
             ('JPY', 0::smallint, 'Yen'),
             ('IDR', 2::smallint, 'Rupiah'),
             ('CHF', 2::smallint, 'Swiss Franc')) as c (code, minor_units, name);

-- ---------------------------------------------------------------------------
-- open_account
-- ---------------------------------------------------------------------------

-- Opens a customer account. p_id: the UUIDv7 chosen by the service (NULL: one
-- is generated here). Reasons: invalid_owner, invalid_overdraft_limit,
-- currency_not_found, invalid_id, account_exists, request_id_reused.
create function ledger.open_account(
  p_request_id      uuid,
  p_id              uuid,
  p_owner_id        uuid,
  p_currency        text,
  p_overdraft_limit bigint default 0,
  p_actor           uuid default null)
returns ledger.account_result
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_fp  bytea := sha256(convert_to(
                   row('open_account', p_owner_id, p_currency, p_overdraft_limit, p_actor)::text, 'UTF8'));
  v_req ledger.requests;
  v_acc ledger.accounts;
  v_res ledger.account_result;
  v_now timestamptz;
  v_key bigint;
begin
  if p_request_id is null then
    raise exception 'request_id is required' using errcode = 'invalid_parameter_value';
  end if;

  select * into v_req from ledger.requests where request_id = p_request_id;
  if found then
    return ledger.replay_account(p_request_id, v_req.fingerprint, v_req.account_result, v_fp);
  end if;

  v_res := row(p_request_id, null, p_id, p_owner_id, p_currency, 'customer', null, null,
               p_overdraft_limit, null, null, null, null, null, null, null, false)::ledger.account_result;
  if p_owner_id is null then
    v_res.status := 'invalid_owner';
  elsif p_overdraft_limit is null or p_overdraft_limit < 0 then
    v_res.status := 'invalid_overdraft_limit';
  elsif p_currency is null or not exists (select 1 from ledger.currencies where code = p_currency) then
    v_res.status := 'currency_not_found';
  elsif p_id is not null and substr(p_id::text, 15, 1) <> '7' then
    v_res.status := 'invalid_id';
  else
    v_key := ledger.order_key(0);
    v_now := clock_timestamp();
    insert into ledger.accounts (id, owner_id, currency, kind, overdraft_limit, last_order_key, created_at, updated_at)
    values (coalesce(p_id, ledger.uuid_v7()), p_owner_id, p_currency, 'customer', p_overdraft_limit, v_key, v_now, v_now)
    on conflict (id) do nothing
    returning * into v_acc;
    if not found then
      v_res.status := 'account_exists';
    else
      v_res := ledger.to_account_result(p_request_id, 'ok', v_acc);
      insert into ledger.events (order_key, id, type, aggregate_id, account)
      values (v_key, ledger.uuid_v7(), 'account.opened', v_acc.id, v_res);
      perform ledger.notify_events();
    end if;
  end if;

  perform ledger.record_request(p_request_id, v_fp, null, v_res);
  return v_res;
end
$fn$;

-- ---------------------------------------------------------------------------
-- set_account_status: active <-> frozen, active|frozen -> closed.
-- ---------------------------------------------------------------------------

-- Reasons: invalid_status, permission_denied (p_owner_scope set and the
-- account is not theirs, checked before existence), account_not_found,
-- account_closed, system_account (system accounts cannot be closed),
-- account_not_empty (closing needs balance and pending amounts at 0),
-- request_id_reused. Setting the current status again is 'ok' and changes
-- nothing.
create function ledger.set_account_status(
  p_request_id  uuid,
  p_account_id  uuid,
  p_status      text,
  p_owner_scope uuid default null,
  p_actor       uuid default null)
returns ledger.account_result
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_fp    bytea := sha256(convert_to(
                     row('set_account_status', p_account_id, p_status, p_owner_scope, p_actor)::text, 'UTF8'));
  v_req   ledger.requests;
  v_acc   ledger.accounts;
  v_res   ledger.account_result;
  v_found boolean;
  v_key   bigint;
  v_type  text;
begin
  if p_request_id is null then
    raise exception 'request_id is required' using errcode = 'invalid_parameter_value';
  end if;

  -- Lock first: a concurrent duplicate waits here and then sees the record.
  select * into v_acc from ledger.accounts where id = p_account_id for update;
  v_found := found;

  select * into v_req from ledger.requests where request_id = p_request_id;
  if found then
    return ledger.replay_account(p_request_id, v_req.fingerprint, v_req.account_result, v_fp);
  end if;

  if v_found then
    v_res := ledger.to_account_result(p_request_id, null, v_acc);
  else
    v_res := row(p_request_id, null, p_account_id, null, null, null, null, null,
                 null, null, null, null, null, null, null, null, false)::ledger.account_result;
  end if;

  if p_status is null or p_status not in ('active', 'frozen', 'closed') then
    v_res.status := 'invalid_status';
  elsif p_owner_scope is not null and (not v_found or v_acc.owner_id is distinct from p_owner_scope) then
    v_res := row(p_request_id, 'permission_denied', p_account_id, null, null, null, null, null,
                 null, null, null, null, null, null, null, null, false)::ledger.account_result;
  elsif not v_found then
    v_res.status := 'account_not_found';
  elsif v_acc.status = 'closed' then
    v_res.status := 'account_closed';
  elsif v_acc.status = p_status then
    v_res.status := 'ok';
  elsif p_status = 'closed' and v_acc.kind = 'system' then
    v_res.status := 'system_account';
  elsif p_status = 'closed' and (v_acc.balance <> 0 or v_acc.pending_debits <> 0 or v_acc.pending_credits <> 0) then
    v_res.status := 'account_not_empty';
  else
    v_key := ledger.order_key(v_acc.last_order_key);
    update ledger.accounts
       set status = p_status,
           version = version + 1,
           last_order_key = v_key,
           updated_at = greatest(clock_timestamp(), updated_at)
     where id = p_account_id
    returning * into v_acc;
    v_res := ledger.to_account_result(p_request_id, 'ok', v_acc);
    v_type := case p_status when 'frozen' then 'account.frozen'
                            when 'active' then 'account.unfrozen'
                            else 'account.closed' end;
    insert into ledger.events (order_key, id, type, aggregate_id, account)
    values (v_key, ledger.uuid_v7(), v_type, v_acc.id, v_res);
    perform ledger.notify_events();
  end if;

  perform ledger.record_request(p_request_id, v_fp, null, v_res);
  return v_res;
end
$fn$;

create function ledger.freeze_account(p_request_id uuid, p_account_id uuid,
                                      p_owner_scope uuid default null, p_actor uuid default null)
returns ledger.account_result
language sql
return ledger.set_account_status(p_request_id, p_account_id, 'frozen', p_owner_scope, p_actor);

create function ledger.unfreeze_account(p_request_id uuid, p_account_id uuid,
                                        p_owner_scope uuid default null, p_actor uuid default null)
returns ledger.account_result
language sql
return ledger.set_account_status(p_request_id, p_account_id, 'active', p_owner_scope, p_actor);

create function ledger.close_account(p_request_id uuid, p_account_id uuid,
                                     p_owner_scope uuid default null, p_actor uuid default null)
returns ledger.account_result
language sql
return ledger.set_account_status(p_request_id, p_account_id, 'closed', p_owner_scope, p_actor);
