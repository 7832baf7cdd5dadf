-- Outbox readers, outbox retention, the invariant checker, and privileges.

-- Events after the cursor (p_after_order_key, p_after_seq), in delivery
-- order. Only events with order_key below the xmin of the statement's
-- snapshot are returned: every transaction that could still add an event
-- below that bound has finished, so a reader that resumes from the last
-- (order_key, seq) it saw never misses one. Start from (-1, -1) for
-- everything, or from ledger.events_head() for "from now on".
create function ledger.read_events(p_after_order_key bigint, p_after_seq bigint, p_limit integer default 500)
returns table (order_key bigint, seq bigint, id uuid, type text, aggregate_id uuid, payload jsonb,
               created_at timestamptz)
language sql
stable
as $fn$
  select e.order_key, e.seq, e.id, e.type, e.aggregate_id,
         coalesce(to_jsonb(e.transfer), to_jsonb(e.account)), e.created_at
    from ledger.events e
   where (e.order_key, e.seq) > (coalesce(p_after_order_key, -1), coalesce(p_after_seq, -1))
     and e.order_key < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
   order by e.order_key, e.seq
   limit least(greatest(coalesce(p_limit, 500), 1), 10000)
$fn$;

-- The cursor of the newest deliverable event ((-1, -1) when there is none):
-- where a stream that wants only future events starts.
create function ledger.events_head(out order_key bigint, out seq bigint)
language sql
stable
as $fn$
  select coalesce(max(h.order_key), -1), coalesce(max(h.seq), -1)
    from (select e.order_key, e.seq
            from ledger.events e
           where e.order_key < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
           order by e.order_key desc, e.seq desc
           limit 1) h
$fn$;

-- Deletes up to p_limit of the oldest events created before p_before;
-- returns how many. Outbox retention: a consumer must resume within it.
create function ledger.prune_events(p_before timestamptz, p_limit integer default 10000)
returns integer
language sql
security definer
set search_path = pg_catalog, pg_temp
as $fn$
  with victims as (
    select e.order_key, e.seq
      from ledger.events e
     where e.created_at < p_before
     order by e.order_key, e.seq
     limit greatest(coalesce(p_limit, 10000), 1)
  ), gone as (
    delete from ledger.events e
     using victims v
     where e.order_key = v.order_key and e.seq = v.seq
    returning 1
  )
  select count(*)::integer from gone
$fn$;

-- Full-scan consistency check for tests and operations (expensive on a large
-- ledger: run it on a replica or a restored backup). One row per check;
-- violations = 0 means the invariant holds.
create function ledger.verify_invariants()
returns table (check_name text, violations bigint, sample text)
language sql
stable
as $fn$
  -- Sum of balances per currency is zero.
  select 'currency_sum_zero', count(*), min(x.currency || ' sum=' || x.s)
    from (select a.currency, sum(a.balance) as s from ledger.accounts a group by a.currency) x
   where x.s <> 0
  union all
  -- Each account's balance is the sum of its entries.
  select 'balance_is_sum_of_entries', count(*), min(x.id::text)
    from (select a.id
            from ledger.accounts a
            left join (select e.account_id, sum(e.amount) as s from ledger.entries e group by e.account_id) e
              on e.account_id = a.id
           where a.balance <> coalesce(e.s, 0)) x
  union all
  -- Each entry's balance_after chains from the previous one, in (created_at, seq) order.
  select 'entry_chain', count(*), min(x.account_id::text || ' seq=' || x.seq)
    from (select e.account_id, e.seq, e.balance_after,
                 coalesce(lag(e.balance_after) over w, 0) + e.amount as expected,
                 lag(e.seq) over w as prev_seq
            from ledger.entries e
          window w as (partition by e.account_id order by e.created_at, e.seq)) x
   where x.balance_after <> x.expected or x.prev_seq >= x.seq
  union all
  -- The newest entry's balance_after is the account's balance.
  select 'last_entry_is_balance', count(*), min(x.id::text)
    from (select distinct on (e.account_id) e.account_id as id, e.balance_after
            from ledger.entries e
           order by e.account_id, e.created_at desc, e.seq desc) x
    join ledger.accounts a on a.id = x.id
   where a.balance <> x.balance_after
  union all
  -- Pending columns equal the sums of pending transfers.
  select 'pending_matches_transfers', count(*), min(x.id::text)
    from (select a.id
            from ledger.accounts a
            left join (select t.debit_account_id as id, sum(t.amount) as s from ledger.transfers t
                        where t.status = 'pending' group by 1) pd on pd.id = a.id
            left join (select t.credit_account_id as id, sum(t.amount) as s from ledger.transfers t
                        where t.status = 'pending' group by 1) pc on pc.id = a.id
           where a.pending_debits <> coalesce(pd.s, 0) or a.pending_credits <> coalesce(pc.s, 0)) x
  union all
  -- Customers never below -overdraft_limit (available).
  select 'customer_floor', count(*), min(a.id::text)
    from ledger.accounts a
   where a.kind = 'customer' and a.balance - a.pending_debits < -a.overdraft_limit
  union all
  -- Posted transfers have exactly two entries: -posted on the debit, +posted on the credit;
  -- other transfers have none.
  select 'transfer_entries', count(*), min(x.id::text)
    from (select t.id
            from ledger.transfers t
            left join ledger.entries e on e.transfer_id = t.id
           group by t.id, t.status, t.posted_amount, t.debit_account_id, t.credit_account_id
          having (t.status = 'posted' and not (
                    count(e.transfer_id) = 2
                    and count(*) filter (where e.account_id = t.debit_account_id and e.amount = -t.posted_amount) = 1
                    and count(*) filter (where e.account_id = t.credit_account_id and e.amount = t.posted_amount) = 1))
              or (t.status <> 'posted' and count(e.transfer_id) <> 0)) x
  union all
  -- Every entry belongs to a transfer.
  select 'entry_has_transfer', count(*), min(e.transfer_id::text)
    from ledger.entries e
   where not exists (select 1 from ledger.transfers t where t.id = e.transfer_id)
  union all
  -- Transfers name existing accounts of the transfer's currency (what foreign keys would check).
  select 'transfer_accounts', count(*), min(t.id::text)
    from ledger.transfers t
    left join ledger.accounts d on d.id = t.debit_account_id
    left join ledger.accounts c on c.id = t.credit_account_id
   where d.id is null or c.id is null or d.currency <> t.currency or c.currency <> t.currency
  union all
  -- Account versions are ahead of their entries.
  select 'version_ahead_of_entries', count(*), min(a.id::text)
    from ledger.accounts a
    join (select e.account_id, max(e.seq) as m from ledger.entries e group by e.account_id) e
      on e.account_id = a.id
   where a.version < e.m
  union all
  -- Nothing lands in the default partitions while partitions exist ahead.
  select 'default_partitions_empty',
         (select count(*) from ledger.transfers_default) + (select count(*) from ledger.entries_default),
         null
$fn$;

-- The functions are the only writers: nobody but the owner may call them
-- unless granted (see docs/ledger-sql.md, "Privileges").
revoke execute on all functions in schema ledger from public;
alter default privileges in schema ledger revoke execute on functions from public;
