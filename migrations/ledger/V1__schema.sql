-- Ledger schema: helpers, reference data, accounts, the partitioned journal
-- (transfers + entries), idempotency records and the transactional outbox.
-- Design note: docs/ledger-sql.md. The SQL functions in V3/V4 are the only
-- writers of these tables; there are deliberately no foreign keys from the
-- journal to accounts (see the note, "Integrity without foreign keys").

create schema if not exists ledger;

-- ---------------------------------------------------------------------------
-- UUIDv7 helpers. PostgreSQL 15 has no uuidv7(); the service generates ids and
-- passes them in, SQL only generates ids for rows it creates itself (system
-- accounts, events, a transfer whose id was passed as NULL).
-- ---------------------------------------------------------------------------

-- A random UUIDv7: 48-bit Unix milliseconds, version 7, variant 10, 74 random bits.
create function ledger.uuid_v7() returns uuid
language sql volatile parallel safe
return encode(
  set_bit(set_bit(
    overlay(uuid_send(gen_random_uuid())
            placing substring(int8send(floor(extract(epoch from clock_timestamp()) * 1000)::bigint) from 3)
            from 1 for 6),
    52, 1), 53, 1),
  'hex')::uuid;

-- The instant carried by a UUIDv7 (millisecond precision).
create function ledger.uuid_v7_time(p_id uuid) returns timestamptz
language sql immutable strict parallel safe
return to_timestamp(
  ('x' || substr(p_id::text, 1, 8) || substr(p_id::text, 10, 4))::bit(48)::bigint::double precision / 1000);

-- The smallest UUID whose UUIDv7 timestamp is >= p_at: partition bounds for
-- tables partitioned on a UUIDv7 id.
create function ledger.uuid_v7_floor(p_at timestamptz) returns uuid
language sql immutable strict parallel safe
return (lpad(to_hex(ceil(extract(epoch from p_at) * 1000)::bigint), 12, '0') || '00000000000000000000')::uuid;

-- ---------------------------------------------------------------------------
-- Reference data
-- ---------------------------------------------------------------------------

create table ledger.currencies (
  code        text     primary key check (code ~ '^[A-Z]{3}$'),  -- ISO 4217 alphabetic code
  minor_units smallint not null check (minor_units between 0 and 4),
  name        text     not null
);

-- ---------------------------------------------------------------------------
-- Accounts. One row per account; balances are bigint minor units.
-- fillfactor leaves room on each page so balance updates stay HOT (no index
-- column is ever updated by a transfer).
-- ---------------------------------------------------------------------------

create table ledger.accounts (
  id              uuid        primary key,             -- UUIDv7
  owner_id        uuid,                                -- identity user id; NULL for system accounts
  currency        text        not null references ledger.currencies (code),
  kind            text        not null check (kind in ('customer', 'system')),
  system_role     text        check (system_role in ('cash_vault', 'external_clearing', 'fees')),
  status          text        not null default 'active' check (status in ('active', 'frozen', 'closed')),
  overdraft_limit bigint      not null default 0 check (overdraft_limit >= 0),
  balance         bigint      not null default 0,      -- posted balance
  pending_debits  bigint      not null default 0 check (pending_debits >= 0),
  pending_credits bigint      not null default 0 check (pending_credits >= 0),
  version         bigint      not null default 1,      -- +1 per change; entries.seq = version after the entry
  last_order_key  bigint      not null default 0,      -- outbox ordering clock (see docs, "Event order")
  created_at      timestamptz not null,
  updated_at      timestamptz not null,                -- never decreases: entries' created_at derive from it
  constraint accounts_kind_shape check (
    (kind = 'customer' and owner_id is not null and system_role is null)
    or (kind = 'system' and owner_id is null and system_role is not null)),
  -- Backstop for the functions' own check: customers never below -overdraft_limit.
  constraint accounts_customer_floor check (kind = 'system' or balance - pending_debits >= -overdraft_limit)
) with (fillfactor = 70);

-- ListAccounts by owner (optionally filtered by status), keyset on id.
create index accounts_owner_idx on ledger.accounts (owner_id, id);
-- ListAccounts by status across owners (operators), keyset on id.
create index accounts_status_idx on ledger.accounts (status, id);
-- One system account per (currency, role); the service looks them up by this.
create unique index accounts_system_role_key on ledger.accounts (currency, system_role) where system_role is not null;

-- ---------------------------------------------------------------------------
-- Transfers: range-partitioned on the UUIDv7 id, bounds at UTC month starts
-- (ledger.uuid_v7_floor), so the primary key is global and a lookup by id
-- prunes to one partition without any helper column.
-- A pending transfer is one row whose status moves pending -> posted | voided
-- | expired; entries are written when money is posted.
-- ---------------------------------------------------------------------------

create table ledger.transfers (
  id                uuid        not null,              -- UUIDv7
  debit_account_id  uuid        not null,
  credit_account_id uuid        not null,
  currency          text        not null,
  amount            bigint      not null check (amount > 0),        -- requested / held amount
  posted_amount     bigint      not null default 0,                 -- moved on balances
  status            text        not null check (status in ('pending', 'posted', 'voided', 'expired')),
  expires_at        timestamptz,                                    -- pending only; NULL = no timeout
  created_at        timestamptz not null,
  updated_at        timestamptz not null,                           -- last status change
  actor             uuid,                                           -- principal that created it
  metadata          jsonb,
  constraint transfers_pkey primary key (id),
  constraint transfers_distinct_accounts check (debit_account_id <> credit_account_id),
  constraint transfers_posted_amount check (
    (status = 'posted' and posted_amount between 1 and amount) or (status <> 'posted' and posted_amount = 0))
) partition by range (id);

-- ListTransfers for an account, newest first, keyset on id: one index per side.
create index transfers_debit_idx on ledger.transfers (debit_account_id, id);
create index transfers_credit_idx on ledger.transfers (credit_account_id, id);
-- Expiry sweep: only pending rows with a timeout are in it.
create index transfers_pending_expiry_idx on ledger.transfers (expires_at)
  where status = 'pending' and expires_at is not null;

create table ledger.transfers_default partition of ledger.transfers default;

-- ---------------------------------------------------------------------------
-- Entries: the immutable journal, two per posted transfer, range-partitioned
-- by month on created_at. created_at is taken after the accounts are locked
-- and never decreases per account, so (created_at, seq) orders an account's
-- entries exactly as they were applied.
-- ---------------------------------------------------------------------------

create table ledger.entries (
  account_id    uuid        not null,
  created_at    timestamptz not null,
  seq           bigint      not null,   -- accounts.version after this entry: unique per account
  amount        bigint      not null check (amount <> 0),   -- signed: debit < 0, credit > 0
  balance_after bigint      not null,
  transfer_id   uuid        not null,
  -- Serves ListEntries (keyset on (created_at, seq)) and balance-as-of.
  constraint entries_pkey primary key (account_id, created_at, seq)
) partition by range (created_at);

create table ledger.entries_default partition of ledger.entries default;

-- ---------------------------------------------------------------------------
-- Result shapes (the Rust store decodes these columns by name).
-- ---------------------------------------------------------------------------

create type ledger.transfer_result as (
  request_id        uuid,
  status            text,         -- 'ok' or a failure reason (docs: "Reasons")
  failed_account_id uuid,         -- the account a failure names, else NULL
  transfer_id       uuid,
  transfer_status   text,         -- pending | posted | voided | expired, as of this outcome
  debit_account_id  uuid,
  credit_account_id uuid,
  currency          text,
  amount            bigint,
  posted_amount     bigint,
  expires_at        timestamptz,
  created_at        timestamptz,
  updated_at        timestamptz,
  debit_balance     bigint,       -- balances right after this outcome (on insufficient_funds: the
  debit_available   bigint,       --   balances that made it fail)
  credit_balance    bigint,
  credit_available  bigint,
  replayed          boolean       -- true when returned from the idempotency record
);

create type ledger.account_result as (
  request_id      uuid,
  status          text,
  account_id      uuid,
  owner_id        uuid,
  currency        text,
  kind            text,
  system_role     text,
  account_status  text,
  overdraft_limit bigint,
  balance         bigint,
  pending_debits  bigint,
  pending_credits bigint,
  available       bigint,
  version         bigint,
  created_at      timestamptz,
  updated_at      timestamptz,
  replayed        boolean
);

-- ---------------------------------------------------------------------------
-- Idempotency: one row per request_id, written in the same transaction as the
-- effect. fingerprint = sha256 of the canonical payload (computed in SQL); the
-- function's result row is stored as is (binary composite: no JSON encoding on
-- the hot path, exact round trip) and replayed verbatim with replayed = true.
-- ---------------------------------------------------------------------------

create table ledger.requests (
  request_id      uuid        primary key,
  fingerprint     bytea       not null,
  transfer_result ledger.transfer_result,    -- exactly one of the two is set
  account_result  ledger.account_result,
  created_at      timestamptz not null default now(),
  constraint requests_one_result check (num_nonnulls(transfer_result, account_result) = 1)
);

-- ---------------------------------------------------------------------------
-- Outbox. (order_key, seq) is the delivery order and the resumable cursor:
--   order_key = max(own top-level xid, last_order_key of every account the
--               transaction touched)  -- a Lamport clock over xids
--   seq       = nextval at insert, after all account locks are held.
-- A reader only returns rows with order_key < xmin of its snapshot; that set
-- can no longer grow, so the cursor never skips a late commit.
-- The sequence must stay CACHE 1 (a per-backend cache would break the order).
-- The payload is stored as the result composite (cheap to write) and turned
-- into JSON by ledger.read_events.
-- ---------------------------------------------------------------------------

create sequence ledger.events_seq as bigint cache 1;

create table ledger.events (
  order_key    bigint      not null,
  seq          bigint      not null default nextval('ledger.events_seq'),
  id           uuid        not null,                 -- UUIDv7
  type         text        not null,
  aggregate_id uuid        not null,                 -- transfer or account id
  transfer     ledger.transfer_result,               -- payload of transfer.* events
  account      ledger.account_result,                -- payload of account.* events
  created_at   timestamptz not null default clock_timestamp(),
  constraint events_pkey primary key (order_key, seq),
  constraint events_one_payload check (num_nonnulls(transfer, account) = 1)
);

alter sequence ledger.events_seq owned by ledger.events.seq;

-- NOTIFY throttle: last notified 50 ms bucket (non-transactional on purpose).
create sequence ledger.notify_bucket as bigint minvalue 0 start 0 cache 1;
