-- Monthly partitions for ledger.transfers (on the UUIDv7 id) and
-- ledger.entries (on created_at), UTC month bounds, plus the maintenance
-- function the service calls periodically: ledger.ensure_partitions(months_ahead).

-- Creates the partitions of p_parent for the UTC month starting at p_month,
-- unless one with that name already exists. If the default partition already
-- holds rows for that month (which the functions' id checks make
-- near-impossible), the rows are moved into the new partition first, because
-- Postgres refuses to create a partition whose rows sit in the default.
create function ledger.create_month_partition(p_parent text, p_month date)
returns boolean
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_from   timestamptz := p_month::timestamp at time zone 'UTC';
  v_to     timestamptz := (p_month + interval '1 month')::timestamp at time zone 'UTC';
  v_name   text := p_parent || '_p' || to_char(p_month, 'YYYYMM');
  v_col    text;
  v_lo     text;
  v_hi     text;
  v_stray  boolean;
begin
  if p_parent = 'transfers' then
    v_col := 'id';
    v_lo := quote_literal(ledger.uuid_v7_floor(v_from)::text);
    v_hi := quote_literal(ledger.uuid_v7_floor(v_to)::text);
  elsif p_parent = 'entries' then
    v_col := 'created_at';
    v_lo := quote_literal(v_from::text);
    v_hi := quote_literal(v_to::text);
  else
    raise exception 'ledger.create_month_partition: unknown parent %', p_parent
      using errcode = 'invalid_parameter_value';
  end if;

  if to_regclass(format('ledger.%I', v_name)) is not null then
    return false;
  end if;

  execute format('select exists (select 1 from ledger.%I where %I >= %s and %I < %s)',
                 p_parent || '_default', v_col, v_lo, v_col, v_hi)
    into v_stray;

  if not v_stray then
    execute format('create table ledger.%I partition of ledger.%I for values from (%s) to (%s)',
                   v_name, p_parent, v_lo, v_hi);
  else
    execute format('create table ledger.%I (like ledger.%I including defaults including constraints)',
                   v_name, p_parent);
    execute format('with moved as (delete from ledger.%I where %I >= %s and %I < %s returning *) '
                   'insert into ledger.%I select * from moved',
                   p_parent || '_default', v_col, v_lo, v_col, v_hi, v_name);
    execute format('alter table ledger.%I attach partition ledger.%I for values from (%s) to (%s)',
                   p_parent, v_name, v_lo, v_hi);
  end if;
  return true;
end
$fn$;

-- Ensures partitions exist from the current UTC month through p_months_ahead
-- months ahead, for both partitioned tables. Idempotent and cheap when there
-- is nothing to do (catalog lookups only); returns one row per partition it
-- created. Concurrent calls serialise on a transaction advisory lock.
-- lock_timeout keeps a maintenance run from queueing behind a long
-- transaction while holding up the hot path; it fails and is retried next run.
create function ledger.ensure_partitions(p_months_ahead integer default 18)
returns table (parent text, partition_month date)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
set lock_timeout = '5s'
as $fn$
declare
  v_first date := date_trunc('month', now() at time zone 'UTC')::date;
  v_month date;
  v_parent text;
begin
  if p_months_ahead is null or p_months_ahead < 0 or p_months_ahead > 120 then
    raise exception 'ledger.ensure_partitions: months_ahead must be between 0 and 120, got %', p_months_ahead
      using errcode = 'invalid_parameter_value';
  end if;
  -- Two service replicas running the maintenance at once take turns.
  perform pg_advisory_xact_lock(hashtext('ledger.ensure_partitions'));
  for i in 0 .. p_months_ahead loop
    v_month := (v_first + make_interval(months => i))::date;
    foreach v_parent in array array['transfers', 'entries'] loop
      if ledger.create_month_partition(v_parent, v_month) then
        parent := v_parent;
        partition_month := v_month;
        return next;
      end if;
    end loop;
  end loop;
end
$fn$;

select count(*) from ledger.ensure_partitions(18);
