//! Every SQL string the ledger runs. Functions are called as `select * from f(…)`
//! (never `select (f(…)).*`, which would run them once per column); every parameter is
//! typed by the caller, so each statement runs unchanged as a cached named statement or
//! as one unnamed `query_typed` behind a transaction-mode pooler.

/// One transfer (posted or pending). See `ledger.create_transfer` in
/// `migrations/ledger/V4__transfers.sql`.
pub const CREATE_TRANSFER: &str = "
select r.*
  from ledger.create_transfer($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) r";

/// 1..1000 transfers in one call, one result per member in input order.
pub const CREATE_TRANSFERS: &str = "
select r.*
  from ledger.create_transfers($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) r";

/// Posts a hold, fully (`$3` NULL) or in part; the remainder is released.
/// The hold's metadata (immutable since creation) is joined in for the response.
pub const POST_PENDING: &str = "
select r.*, t.metadata
  from ledger.post_pending($1, $2, $3, $4, $5) r
  left join lateral (select metadata from ledger.transfers where id = r.transfer_id) t on true";

/// Voids a hold, releasing all of it.
/// The hold's metadata is joined in for the response.
pub const VOID_PENDING: &str = "
select r.*, t.metadata
  from ledger.void_pending($1, $2, $3, $4) r
  left join lateral (select metadata from ledger.transfers where id = r.transfer_id) t on true";

/// Opens a customer account.
pub const OPEN_ACCOUNT: &str = "
select r.* from ledger.open_account($1, $2, $3, $4, $5, $6) r";

/// Freezes an account (a no-op on a frozen one).
pub const FREEZE_ACCOUNT: &str = "
select r.* from ledger.freeze_account($1, $2, $3, $4) r";

/// Makes a frozen account active again (a no-op on an active one).
pub const UNFREEZE_ACCOUNT: &str = "
select r.* from ledger.unfreeze_account($1, $2, $3, $4) r";

/// Closes an account at zero balance and no holds (a no-op on a closed one).
pub const CLOSE_ACCOUNT: &str = "
select r.* from ledger.close_account($1, $2, $3, $4) r";

/// The WAL insert position. Sent pipelined right after a mutation on the same
/// connection: the mutation's implicit transaction has committed when this runs, so
/// the position is at or after its commit record (the consistency token).
pub const WAL_INSERT_LSN: &str = "select pg_current_wal_insert_lsn()::text";

/// The columns of an account read.
macro_rules! account_columns {
    () => {
        "id, owner_id, currency, kind, system_role, status, overdraft_limit, balance,
         pending_debits, pending_credits, balance - pending_debits as available, version,
         created_at, updated_at"
    };
}

/// One account, with the database clock at the read.
pub const GET_ACCOUNT: &str = concat!(
    "select ",
    account_columns!(),
    ", clock_timestamp() as read_at from ledger.accounts where id = $1"
);

/// Accounts of one owner, keyset on id (`accounts_owner_idx`). `$2` status, `$3`
/// currency, `$4` kind, `$5` system role: NULL = any. `$6` the last id seen (the nil
/// UUID on the first page), `$7` the limit.
pub const LIST_ACCOUNTS_BY_OWNER: &str = concat!(
    "select ",
    account_columns!(),
    ", clock_timestamp() as read_at from ledger.accounts
  where owner_id = $1
    and ($2::text is null or status = $2)
    and ($3::text is null or currency = $3)
    and ($4::text is null or kind = $4)
    and ($5::text is null or system_role = $5)
    and id > $6
  order by id
  limit $7"
);

/// Accounts with one status across owners (`accounts_status_idx`); parameters as
/// above with `$1` the status.
pub const LIST_ACCOUNTS_BY_STATUS: &str = concat!(
    "select ",
    account_columns!(),
    ", clock_timestamp() as read_at from ledger.accounts
  where status = $1
    and ($2::text is null or currency = $2)
    and ($3::text is null or kind = $3)
    and ($4::text is null or system_role = $4)
    and id > $5
  order by id
  limit $6"
);

/// Every account, keyset on the primary key; optional filters as above.
pub const LIST_ACCOUNTS_ALL: &str = concat!(
    "select ",
    account_columns!(),
    ", clock_timestamp() as read_at from ledger.accounts
  where ($1::text is null or currency = $1)
    and ($2::text is null or kind = $2)
    and ($3::text is null or system_role = $3)
    and id > $4
  order by id
  limit $5"
);

/// The reference data: every currency (the cache the service validates codes
/// against). System accounts are created with their currency, in the same transaction
/// (`ledger.add_currency`), so one read of both is consistent.
pub const LIST_ALL_CURRENCIES: &str =
    "select code, minor_units, name from ledger.currencies order by code";

/// System accounts: the bank's own, created by migrations only.
pub const LIST_SYSTEM_ACCOUNTS: &str =
    "select id, currency, system_role from ledger.accounts where kind = 'system'";

/// A page of currencies by code, after `$1` (empty string on the first page).
pub const LIST_CURRENCIES: &str = "
select code, minor_units, name from ledger.currencies where code > $1 order by code limit $2";

/// The columns of a transfer read, with the owners of both accounts (authorization).
macro_rules! transfer_columns {
    () => {
        "t.id, t.debit_account_id, t.credit_account_id, t.currency, t.amount, t.posted_amount,
         t.status, t.expires_at, t.created_at, t.updated_at, t.metadata"
    };
}

/// One transfer (prunes to one partition) with the owners of its accounts.
pub const GET_TRANSFER: &str = concat!(
    "select ",
    transfer_columns!(),
    ", d.owner_id as debit_owner, c.owner_id as credit_owner
   from ledger.transfers t
   left join ledger.accounts d on d.id = t.debit_account_id
   left join ledger.accounts c on c.id = t.credit_account_id
  where t.id = $1"
);

/// Transfers of one account, newest first, keyset on id: the union of the debit and
/// credit indexes. `$2` / `$3`: id bounds [lower, upper) (the upper bound is the last
/// id seen, or a bound just past now, which prunes future partitions); `$4` / `$5`:
/// created_at bounds (NULL = open); `$6` status (NULL = any); `$7` limit.
pub const LIST_TRANSFERS_OF_ACCOUNT: &str = concat!(
    "select * from (
  (select ",
    transfer_columns!(),
    " from ledger.transfers t
    where t.debit_account_id = $1 and t.id >= $2 and t.id < $3
      and ($4::timestamptz is null or t.created_at >= $4)
      and ($5::timestamptz is null or t.created_at < $5)
      and ($6::text is null or t.status = $6)
    order by t.id desc limit $7)
  union all
  (select ",
    transfer_columns!(),
    " from ledger.transfers t
    where t.credit_account_id = $1 and t.id >= $2 and t.id < $3
      and ($4::timestamptz is null or t.created_at >= $4)
      and ($5::timestamptz is null or t.created_at < $5)
      and ($6::text is null or t.status = $6)
    order by t.id desc limit $7)) x
  order by x.id desc
  limit $7"
);

/// Every transfer, newest first (operators); parameters as above without `$1`.
pub const LIST_TRANSFERS_ALL: &str = concat!(
    "select ",
    transfer_columns!(),
    " from ledger.transfers t
  where t.id >= $1 and t.id < $2
    and ($3::timestamptz is null or t.created_at >= $3)
    and ($4::timestamptz is null or t.created_at < $4)
    and ($5::text is null or t.status = $5)
  order by t.id desc
  limit $6"
);

/// An account's journal, newest first, keyset on (created_at, seq) (`entries_pkey`),
/// with the counterparty from the transfer. `$2` / `$3`: created_at bounds [from, to);
/// `$4` / `$5`: the cursor (created_at, seq) of the last entry seen; `$6` limit.
pub const LIST_ENTRIES: &str = "
select e.account_id, e.created_at, e.seq, e.amount, e.balance_after, e.transfer_id,
       case when t.debit_account_id = e.account_id then t.credit_account_id
            else t.debit_account_id end as counterparty,
       t.currency
  from (select * from ledger.entries
         where account_id = $1
           and created_at >= $2 and created_at < $3
           and (created_at, seq) < ($4, $5)
         order by created_at desc, seq desc
         limit $6) e
  left join ledger.transfers t on t.id = e.transfer_id
 order by e.created_at desc, e.seq desc";

/// Balances of an account as of `$2`: the posted balance of its last entry at or
/// before it (0 before the first), and the holds that were open then (created at or
/// before it, and still pending or resolved after it). A direct transfer has
/// `updated_at = created_at`, so it never counts as open.
pub const BALANCE_AS_OF: &str = "
select coalesce((select balance_after from ledger.entries
                  where account_id = $1 and created_at <= $2
                  order by created_at desc, seq desc limit 1), 0)::bigint as posted,
       coalesce((select sum(amount) from ledger.transfers
                  where debit_account_id = $1 and id < $3 and created_at <= $2
                    and (status = 'pending' or updated_at > $2)), 0)::bigint as pending_debits,
       coalesce((select sum(amount) from ledger.transfers
                  where credit_account_id = $1 and id < $3 and created_at <= $2
                    and (status = 'pending' or updated_at > $2)), 0)::bigint as pending_credits";

/// The reading server's clock and replay position, sent on a reporting connection just
/// before a report's query: everything the replica had replayed by then (commit time
/// `replayed_at`) is in the report, which is how fresh the report says it is.
/// `replayed_at` is NULL on a primary, or on a standby that has replayed nothing yet.
pub const READ_CLOCK: &str = "
select pg_is_in_recovery() as in_recovery,
       pg_last_xact_replay_timestamp() as replayed_at,
       clock_timestamp() as read_at";

/// A statement of account `$1` for the period [`$2`, `$3`), in one statement so that
/// balances, totals and lines come from one snapshot (also on a hot standby):
/// - the opening balance: balance_after of the last entry before `$2` (0 if none), one
///   backward probe of `entries_pkey`;
/// - the totals over the whole period (a range scan of `entries_pkey`), as numeric so
///   they cannot overflow here; NULL when one does not fit a bigint;
/// - one page of lines, oldest first, after the cursor (`$4`, `$5`): (`$2`, min bigint)
///   on the first page; `$6` is the limit. The lower bound `created_at >= $4` prunes the
///   partitions before the cursor; the end of the period is written as a row comparison
///   (`(created_at, seq) < ($3, min bigint)`, i.e. `created_at < $3`) so the planner
///   does not pair it with the lower bound into a tiny range estimate, which makes the
///   cached generic plan sort the whole period instead of reading the first rows of
///   the index in order;
/// - per line, the counterparty and the description from the transfer (one primary key
///   probe each, pruned to its partition at run time).
///
/// With no line on the page it returns one row whose line columns are NULL.
pub const STATEMENT: &str = "
select s.opening_balance,
       case when s.debits <= 9223372036854775807 then s.debits::bigint end as total_debits,
       case when s.credits <= 9223372036854775807 then s.credits::bigint end as total_credits,
       l.created_at, l.seq, l.amount, l.balance_after, l.transfer_id, l.counterparty,
       l.description
  from (select coalesce((select balance_after from ledger.entries
                          where account_id = $1 and created_at < $2
                          order by created_at desc, seq desc
                          limit 1), 0)::bigint as opening_balance,
               -coalesce(sum(amount) filter (where amount < 0), 0) as debits,
               coalesce(sum(amount) filter (where amount > 0), 0) as credits
          from ledger.entries
         where account_id = $1 and created_at >= $2 and created_at < $3) s
  left join lateral (
        select e.created_at, e.seq, e.amount, e.balance_after, e.transfer_id,
               case when t.debit_account_id = e.account_id then t.credit_account_id
                    else t.debit_account_id end as counterparty,
               t.metadata ->> 'description' as description
          from (select * from ledger.entries
                 where account_id = $1
                   and created_at >= $4
                   and (created_at, seq) > ($4, $5)
                   and (created_at, seq) < ($3, (-9223372036854775807 - 1)::bigint)
                 order by created_at, seq
                 limit $6) e
          left join ledger.transfers t on t.id = e.transfer_id) l on true
 order by l.created_at, l.seq";
