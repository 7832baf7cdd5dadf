//! WatchEvents: the transactional outbox (`ledger.events`) streamed in commit order from
//! a resumable cursor. This module is its own small store: it owns the SQL it runs
//! (`ledger.read_events`, `ledger.events_head`, an ownership check) and turns the rows'
//! JSON payloads into proto `Event`s.
//!
//! Delivery: each stream is a task that reads `read_events` in batches after its cursor
//! and forwards the events through a bounded channel. It wakes on `NOTIFY
//! ledger_events`, received by one shared `LISTEN` connection per process and database
//! (a direct connection, never a transaction-mode pooler) and fanned out through a
//! `tokio::sync::watch`. Postgres throttles that NOTIFY (at most one per 50 ms) and an
//! event only becomes readable once every older write transaction has ended, so a
//! stream also re-reads on its own: every 100 ms for a second after a notification,
//! then every 2 s — the safety net for throttled, held-back or lost notifications.
//!
//! Cursor: `v1.<order_key>.<seq>`, the event's position in `read_events` order. Resuming
//! from the last cursor a client received yields every later event exactly once.

use std::collections::HashSet;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferrobank_auth::Principal;
use ferrobank_db::{Db, StoreError, Type};
use ferrobank_proto::common::ErrorReason;
use ferrobank_proto::ledger::{
    Account, AccountKind, AccountStatus, Event, EventType, SystemRole, Transfer, TransferKind,
    TransferStatus, WatchEventsRequest, WatchEventsResponse, event,
};
use ferrobank_proto::status;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use uuid::Uuid;

/// The stream of events one WatchEvents call returns.
pub type EventStream =
    Pin<Box<dyn futures::Stream<Item = Result<WatchEventsResponse, Status>> + Send + 'static>>;

/// Events read per `read_events` call.
const BATCH: i32 = 500;
/// Events buffered between the reading task and the client; a slow client holds the
/// task back here instead of growing memory.
const BUFFER: usize = 64;
/// Re-read cadence shortly after a notification: catches commits whose NOTIFY was
/// throttled away and events held back by a transaction that was still running.
const HOT_POLL: Duration = Duration::from_millis(100);
/// How long after a notification the stream keeps re-reading at [`HOT_POLL`].
const HOT_WINDOW: Duration = Duration::from_secs(1);
/// Re-read cadence when nothing was notified lately (the safety net).
const IDLE_POLL: Duration = Duration::from_secs(2);

/// Starts a WatchEvents stream for `principal`: validates the request, checks that the
/// caller may see what it asks for, and spawns the task that feeds the stream. The task
/// ends when the client goes away (the stream is dropped) or on a database error, which
/// it sends as the stream's last item.
pub async fn watch(
    ledger: &crate::Ledger,
    principal: Principal,
    request: WatchEventsRequest,
) -> Result<EventStream, Status> {
    let filter = Filter::from_request(&request)?;
    let cursor = if request.cursor.is_empty() {
        None
    } else {
        Some(Cursor::decode(&request.cursor).ok_or_else(invalid_cursor)?)
    };
    authorize(&ledger.db, &principal, filter.account).await?;

    // Subscribe before the first read, so no notification after it is missed.
    let (hub, wake) = hub::subscribe(&ledger.direct_url);
    let start = match cursor {
        None => head(&ledger.db).await?,
        Some(cursor) => {
            if !retained(&ledger.db, cursor).await? {
                return Err(status::error(
                    Code::OutOfRange,
                    ErrorReason::CursorExpired,
                    "the cursor points before the oldest retained event; reconcile, then watch without a cursor",
                ));
            }
            cursor
        }
    };
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(pump(ledger.db.clone(), filter, start, tx, hub, wake));
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

// ---------------------------------------------------------------------------------------
// Cursor
// ---------------------------------------------------------------------------------------

/// A position in the outbox: `(order_key, seq)` of `ledger.events`, ordered as
/// `read_events` delivers them. `(-1, -1)` is before every event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Cursor {
    order_key: i64,
    seq: i64,
}

impl Cursor {
    const PREFIX: &'static str = "v1.";

    /// The opaque text clients get in `Event.cursor`.
    fn encode(self) -> String {
        format!("{}{}.{}", Self::PREFIX, self.order_key, self.seq)
    }

    /// Parses what [`Cursor::encode`] wrote; `None` for anything else. Both parts are
    /// non-negative for every event, so a negative part is garbled too.
    fn decode(text: &str) -> Option<Self> {
        let rest = text.strip_prefix(Self::PREFIX)?;
        let (key, seq) = rest.split_once('.')?;
        let number = |s: &str| -> Option<i64> {
            // `i64::from_str` accepts a leading '+'; only plain digits were ever issued.
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        Some(Self {
            order_key: number(key)?,
            seq: number(seq)?,
        })
    }
}

fn invalid_cursor() -> Status {
    let mut details = ErrorDetails::with_error_info(
        ErrorReason::InvalidCursor.as_str_name(),
        status::ERROR_DOMAIN,
        [("field".to_owned(), "cursor".to_owned())],
    );
    details.add_bad_request_violation("cursor", "not a cursor this stream issued");
    Status::with_error_details(
        Code::InvalidArgument,
        "cursor: not a cursor this stream issued",
        details,
    )
}

// ---------------------------------------------------------------------------------------
// Request validation and authorization
// ---------------------------------------------------------------------------------------

/// What a stream delivers; the cursor advances past everything else.
#[derive(Clone, Debug)]
struct Filter {
    /// Empty: every type.
    types: HashSet<i32>,
    /// Only events about this account (the account itself or a side of the transfer).
    account: Option<Uuid>,
}

impl Filter {
    fn from_request(request: &WatchEventsRequest) -> Result<Self, Status> {
        let mut types = HashSet::new();
        for &t in &request.types {
            match EventType::try_from(t) {
                Ok(EventType::Unspecified) | Err(_) => {
                    return Err(status::invalid_field(
                        "types",
                        format!("{t} is not an event type"),
                    ));
                }
                Ok(_) => {
                    types.insert(t);
                }
            }
        }
        let account = if request.account_id.is_empty() {
            None
        } else {
            Some(
                Uuid::parse_str(&request.account_id)
                    .map_err(|_| status::invalid_field("account_id", "not a UUID"))?,
            )
        };
        Ok(Self { types, account })
    }

    fn matches(&self, event: &Event) -> bool {
        if !self.types.is_empty() && !self.types.contains(&event.r#type) {
            return false;
        }
        let Some(account) = self.account else {
            return true;
        };
        // Compare as UUIDs: the payload's text is Postgres' (lowercase, hyphenated).
        let is = |id: &str| Uuid::parse_str(id).is_ok_and(|id| id == account);
        match &event.payload {
            Some(event::Payload::Account(a)) => is(&a.id),
            Some(event::Payload::Transfer(t)) => {
                is(&t.debit_account_id) || is(&t.credit_account_id)
            }
            None => false,
        }
    }
}

/// Staff may watch everything; a customer only one of their own accounts, named in
/// `account_id`. Refusals do not say whether the account exists.
async fn authorize(db: &Db, principal: &Principal, account: Option<Uuid>) -> Result<(), Status> {
    if principal.can_read_any_account() {
        return Ok(());
    }
    let denied = || {
        status::error(
            Code::PermissionDenied,
            ErrorReason::PermissionDenied,
            "customers may watch only their own accounts; set account_id to one of them",
        )
    };
    let account = account.ok_or_else(denied)?;
    let row = db
        .query_opt(
            "select owner_id from ledger.accounts where id = $1",
            &[(&account, Type::UUID)],
        )
        .await?;
    let owner: Option<Uuid> = match &row {
        Some(row) => row.try_get(0).map_err(StoreError::from)?,
        None => None,
    };
    if owner == Some(principal.user_id) {
        Ok(())
    } else {
        Err(denied())
    }
}

// ---------------------------------------------------------------------------------------
// SQL
// ---------------------------------------------------------------------------------------

/// The newest deliverable event: where a stream without a cursor starts.
async fn head(db: &Db) -> Result<Cursor, StoreError> {
    let row = db
        .query_one("select order_key, seq from ledger.events_head()", &[])
        .await?;
    Ok(Cursor {
        order_key: row.try_get(0)?,
        seq: row.try_get(1)?,
    })
}

/// Whether the event at `cursor` is still in the outbox. Retention deletes the oldest
/// events first, so when a cursor's own event is gone, later ones may be gone too:
/// resuming from it could skip events, and the caller is told so.
async fn retained(db: &Db, cursor: Cursor) -> Result<bool, StoreError> {
    let row = db
        .query_one(
            "select exists (select 1 from ledger.events where order_key = $1 and seq = $2)",
            &[(&cursor.order_key, Type::INT8), (&cursor.seq, Type::INT8)],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// One outbox row as `read_events` returns it.
struct Row {
    cursor: Cursor,
    id: Uuid,
    kind: String,
    payload: serde_json::Value,
    created_at: DateTime<Utc>,
}

async fn read_batch(db: &Db, after: Cursor) -> Result<Vec<Row>, StoreError> {
    let rows = db
        .query(
            "select order_key, seq, id, type, payload, created_at \
               from ledger.read_events($1, $2, $3)",
            &[
                (&after.order_key, Type::INT8),
                (&after.seq, Type::INT8),
                (&BATCH, Type::INT4),
            ],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Row {
                cursor: Cursor {
                    order_key: r.try_get(0)?,
                    seq: r.try_get(1)?,
                },
                id: r.try_get(2)?,
                kind: r.try_get(3)?,
                payload: r.try_get(4)?,
                created_at: r.try_get(5)?,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The stream task
// ---------------------------------------------------------------------------------------

type Item = Result<WatchEventsResponse, Status>;

/// Reads everything deliverable after `after`, sends what the filter keeps, then waits
/// for a notification or the next re-read; returns when the client is gone.
async fn pump(
    db: Db,
    filter: Filter,
    mut after: Cursor,
    tx: mpsc::Sender<Item>,
    _hub: std::sync::Arc<hub::Hub>,
    mut wake: watch::Receiver<u64>,
) {
    let mut notified_at: Option<Instant> = None;
    let mut wake_open = true;
    loop {
        match drain(&db, &filter, &mut after, &tx).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        }
        let pause = match notified_at {
            Some(at) if at.elapsed() < HOT_WINDOW => HOT_POLL,
            _ => IDLE_POLL,
        };
        tokio::select! {
            () = tx.closed() => return,
            changed = wake.changed(), if wake_open => match changed {
                Ok(()) => notified_at = Some(Instant::now()),
                // The listener is gone (shutting down): keep re-reading on the timer.
                Err(_) => wake_open = false,
            },
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Sends every deliverable event after `after` (advancing it past filtered ones too).
/// `Ok(false)`: the client is gone.
async fn drain(
    db: &Db,
    filter: &Filter,
    after: &mut Cursor,
    tx: &mpsc::Sender<Item>,
) -> Result<bool, Status> {
    loop {
        let batch = read_batch(db, *after).await?;
        let full = batch.len() >= usize::try_from(BATCH).unwrap_or(usize::MAX);
        for row in batch {
            let event = to_event(&row).map_err(|err| {
                tracing::error!(
                    event = %row.id,
                    r#type = %row.kind,
                    error = %err,
                    "outbox event cannot be converted; stream ends"
                );
                status::error(Code::Internal, ErrorReason::Internal, "internal error")
            })?;
            *after = row.cursor;
            if filter.matches(&event)
                && tx
                    .send(Ok(WatchEventsResponse { event: Some(event) }))
                    .await
                    .is_err()
            {
                return Ok(false);
            }
        }
        if !full {
            return Ok(true);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Rows → proto
// ---------------------------------------------------------------------------------------

/// Why an outbox row could not become an `Event` (a bug: SQL and this mapping drifted).
#[derive(Debug, thiserror::Error)]
enum ConvertError {
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("payload: {0}")]
    Payload(#[from] serde_json::Error),
    #[error("unknown {field} {value:?}")]
    UnknownValue { field: &'static str, value: String },
    #[error("bad timestamp {0:?}")]
    Timestamp(String),
}

/// `ledger.transfer_result` as `to_jsonb` writes it (the columns this mapping uses).
#[derive(Deserialize)]
struct TransferJson {
    request_id: Option<String>,
    transfer_id: String,
    transfer_status: String,
    debit_account_id: String,
    credit_account_id: String,
    currency: String,
    amount: i64,
    posted_amount: i64,
    expires_at: Option<String>,
    created_at: Option<String>,
    updated_at: Option<String>,
}

/// `ledger.account_result` as `to_jsonb` writes it (the columns this mapping uses).
#[derive(Deserialize)]
struct AccountJson {
    account_id: String,
    owner_id: Option<String>,
    currency: String,
    kind: String,
    system_role: Option<String>,
    account_status: String,
    overdraft_limit: i64,
    balance: i64,
    pending_debits: i64,
    pending_credits: i64,
    available: i64,
    version: i64,
    created_at: Option<String>,
    updated_at: Option<String>,
}

fn to_event(row: &Row) -> Result<Event, ConvertError> {
    let account = |t: EventType| -> Result<(EventType, event::Payload), ConvertError> {
        let json = AccountJson::deserialize(&row.payload)?;
        Ok((t, event::Payload::Account(to_account(json)?)))
    };
    let transfer = |t: Option<EventType>| -> Result<(EventType, event::Payload), ConvertError> {
        let json = TransferJson::deserialize(&row.payload)?;
        // transfer.created is a direct transfer when it posted at once, else a hold;
        // every later transfer.* event is about a hold.
        let created = t.is_none();
        let pending = json.transfer_status == "pending";
        let t = t.unwrap_or(if pending {
            EventType::TransferPending
        } else {
            EventType::TransferPosted
        });
        let kind = if created && !pending {
            TransferKind::Direct
        } else {
            TransferKind::Hold
        };
        Ok((
            t,
            event::Payload::Transfer(to_transfer(json, kind, created)?),
        ))
    };
    let (r#type, payload) = match row.kind.as_str() {
        "account.opened" => account(EventType::AccountOpened)?,
        "account.frozen" => account(EventType::AccountFrozen)?,
        "account.unfrozen" => account(EventType::AccountUnfrozen)?,
        "account.closed" => account(EventType::AccountClosed)?,
        "transfer.created" => transfer(None)?,
        "transfer.posted" => transfer(Some(EventType::TransferPosted))?,
        "transfer.voided" => transfer(Some(EventType::TransferVoided))?,
        "transfer.expired" => transfer(Some(EventType::TransferExpired))?,
        other => return Err(ConvertError::UnknownType(other.to_owned())),
    };
    Ok(Event {
        id: row.id.to_string(),
        r#type: r#type as i32,
        cursor: row.cursor.encode(),
        event_time: Some(timestamp(row.created_at)),
        payload: Some(payload),
    })
}

fn to_account(a: AccountJson) -> Result<Account, ConvertError> {
    let unknown = |field, value: &str| ConvertError::UnknownValue {
        field,
        value: value.to_owned(),
    };
    let kind = match a.kind.as_str() {
        "customer" => AccountKind::Customer,
        "system" => AccountKind::System,
        other => return Err(unknown("account kind", other)),
    };
    let system_role = match a.system_role.as_deref() {
        None => SystemRole::Unspecified,
        Some("cash_vault") => SystemRole::CashVault,
        Some("external_clearing") => SystemRole::ExternalClearing,
        Some("fees") => SystemRole::Fees,
        Some(other) => return Err(unknown("system role", other)),
    };
    let status = match a.account_status.as_str() {
        "active" => AccountStatus::Active,
        "frozen" => AccountStatus::Frozen,
        "closed" => AccountStatus::Closed,
        other => return Err(unknown("account status", other)),
    };
    Ok(Account {
        id: a.account_id,
        owner_id: a.owner_id.unwrap_or_default(),
        currency_code: a.currency,
        kind: kind as i32,
        system_role: system_role as i32,
        status: status as i32,
        // Not recorded by the SQL layer (yet).
        status_reason: String::new(),
        label: String::new(),
        overdraft_limit: a.overdraft_limit,
        posted_balance: a.balance,
        pending_debits: a.pending_debits,
        pending_credits: a.pending_credits,
        available_balance: a.available,
        version: a.version,
        create_time: json_time(a.created_at)?,
        update_time: json_time(a.updated_at)?,
    })
}

/// `created`: the payload is the creating call's result, so its `request_id` is the
/// transfer's; on post/void it is the resolving request's, which `Transfer` has no
/// field for, and on expiry it is NULL.
fn to_transfer(
    t: TransferJson,
    kind: TransferKind,
    created: bool,
) -> Result<Transfer, ConvertError> {
    let status = match t.transfer_status.as_str() {
        "pending" => TransferStatus::Pending,
        "posted" => TransferStatus::Posted,
        "voided" => TransferStatus::Voided,
        "expired" => TransferStatus::Expired,
        other => {
            return Err(ConvertError::UnknownValue {
                field: "transfer status",
                value: other.to_owned(),
            });
        }
    };
    Ok(Transfer {
        id: t.transfer_id,
        kind: kind as i32,
        status: status as i32,
        debit_account_id: t.debit_account_id,
        credit_account_id: t.credit_account_id,
        amount: t.amount,
        currency_code: t.currency,
        // Holds are posted in place (no separate posting transfer), so none names one.
        pending_id: String::new(),
        // Only a hold resolved by posting reports what was posted (proto: zero otherwise).
        posted_amount: if kind == TransferKind::Hold {
            t.posted_amount
        } else {
            0
        },
        expire_time: json_time(t.expires_at)?,
        // Description and metadata live on the transfer row, not in the event payload.
        description: String::new(),
        metadata: Default::default(),
        request_id: if created {
            t.request_id.unwrap_or_default()
        } else {
            String::new()
        },
        create_time: json_time(t.created_at)?,
        update_time: json_time(t.updated_at)?,
    })
}

/// A `timestamptz` as `to_jsonb` writes it: ISO 8601 with the session's UTC offset.
fn json_time(text: Option<String>) -> Result<Option<prost_types::Timestamp>, ConvertError> {
    text.map(|text| {
        DateTime::parse_from_rfc3339(&text)
            .map(|t| timestamp(t.with_timezone(&Utc)))
            .map_err(|_| ConvertError::Timestamp(text))
    })
    .transpose()
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

// ---------------------------------------------------------------------------------------
// The shared LISTEN connection
// ---------------------------------------------------------------------------------------

mod hub {
    //! One `LISTEN ledger_events` connection per process and database, shared by every
    //! stream through a `watch` channel whose value changes on each notification (and
    //! after each reconnect, since notifications sent while disconnected are lost). It
    //! lives while any stream holds its [`Hub`]; the last one to go stops it.

    use std::collections::HashMap;
    use std::sync::{Arc, LazyLock, Mutex, Weak};
    use std::time::Duration;

    use ferrobank_config::PgUrl;
    use futures::StreamExt;
    use tokio::sync::watch;
    use tokio::task::JoinHandle;
    use tokio::time::Instant;
    use tokio_postgres::{AsyncMessage, NoTls};

    /// Subscribes to the NOTIFY channel the SQL functions signal (`ledger.notify_events`).
    const LISTEN: &str = "LISTEN ledger_events";

    /// Live hubs by database (the URL without its password).
    static HUBS: LazyLock<Mutex<HashMap<String, Weak<Hub>>>> = LazyLock::new(Default::default);

    /// A running listener; dropping the last handle stops it.
    pub(super) struct Hub {
        wake: watch::Receiver<u64>,
        task: JoinHandle<()>,
    }

    impl Drop for Hub {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// The hub for `url` (started if none runs) and a receiver that has seen nothing yet.
    pub(super) fn subscribe(url: &PgUrl) -> (Arc<Hub>, watch::Receiver<u64>) {
        let key = url.redacted();
        let mut hubs = HUBS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let hub = match hubs.get(&key).and_then(Weak::upgrade) {
            Some(hub) => hub,
            None => {
                hubs.retain(|_, hub| hub.strong_count() > 0);
                let (tx, wake) = watch::channel(0);
                let task = tokio::spawn(listen_forever(url.config().clone(), tx));
                let hub = Arc::new(Hub { wake, task });
                hubs.insert(key, Arc::downgrade(&hub));
                hub
            }
        };
        let mut wake = hub.wake.clone();
        wake.mark_unchanged();
        (hub, wake)
    }

    /// Listens until aborted, reconnecting with a capped backoff.
    async fn listen_forever(mut config: tokio_postgres::Config, tx: watch::Sender<u64>) {
        config.application_name("ferrobank-ledger-events");
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // Notice a silently dead peer within about a minute, not hours.
        config.keepalives_idle(Duration::from_secs(30));
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = Instant::now();
            match listen(&config, &tx).await {
                Ok(()) => tracing::info!("event listener connection closed; reconnecting"),
                Err(err) => tracing::warn!(error = %err, "event listener failed; reconnecting"),
            }
            if started.elapsed() > Duration::from_secs(30) {
                backoff = Duration::from_millis(100);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// One connection's life: LISTEN, wake everyone once (anything sent while we were
    /// not listening is lost), then once per notification until the connection ends.
    async fn listen(
        config: &tokio_postgres::Config,
        tx: &watch::Sender<u64>,
    ) -> Result<(), tokio_postgres::Error> {
        let (client, mut connection) = config.connect(NoTls).await?;
        // Polling for messages is also what drives the connection.
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        let wake = |message: AsyncMessage| {
            if let AsyncMessage::Notification(_) = message {
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        };
        {
            let listen = client.batch_execute(LISTEN);
            tokio::pin!(listen);
            loop {
                tokio::select! {
                    done = &mut listen => { done?; break; }
                    message = messages.next() => match message {
                        Some(message) => wake(message?),
                        None => return Ok(()),
                    },
                }
            }
        }
        tracing::debug!("listening for ledger events");
        tx.send_modify(|n| *n = n.wrapping_add(1));
        while let Some(message) = messages.next().await {
            wake(message?);
        }
        drop(client);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cursors round-trip, and anything not issued by `encode` is refused.
    #[test]
    fn cursor_round_trips_and_refuses_garbage() {
        let c = Cursor {
            order_key: 1234,
            seq: 99,
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        for bad in [
            "",
            "v1.",
            "v1.1",
            "v1.1.",
            "v1..1",
            "v1.-1.2",
            "v1.+1.2",
            "v2.1.2",
            "v1.1.2.3",
            "v1.a.b",
            "v1.99999999999999999999.1",
            "1.2",
        ] {
            assert_eq!(Cursor::decode(bad), None, "{bad:?}");
        }
    }

    /// Payload timestamps in any session time zone become the same instant.
    #[test]
    fn json_time_honours_offsets() {
        let utc = json_time(Some("2025-03-01T10:00:00.123456+00:00".into())).unwrap();
        let cet = json_time(Some("2025-03-01T11:00:00.123456+01:00".into())).unwrap();
        assert_eq!(utc, cet);
        assert_eq!(utc.unwrap().nanos, 123_456_000);
        assert!(json_time(Some("yesterday".into())).is_err());
        assert_eq!(json_time(None).unwrap(), None);
    }
}
