//! GetStatement through gRPC against real Postgres with a streaming replica: exact
//! balances, totals and lines; paging; bad input; authorization; read-your-writes
//! through the consistency token, and what happens when the replica is behind it.

mod common;

use std::time::SystemTime;

use common::{Reporting, TestLedger, create, info, reason, spec};
use ferrobank_config::ReportingFallback;
use ferrobank_proto::ledger as pb;
use ferrobank_proto::reporting::{DataSource, GetStatementRequest, GetStatementResponse};
use prost_types::Timestamp;
use tonic::Code;
use tonic_types::StatusExt;
use uuid::Uuid;

/// Moves `amount` from `from` to `to` as an admin, with a description; returns the
/// transfer id and its consistency token.
async fn pay(
    ledger: &TestLedger,
    from: &str,
    to: &str,
    amount: i64,
    what: &str,
) -> (String, String) {
    let mut transfer = spec(from, to, amount);
    transfer.description = what.to_owned();
    let r = ledger
        .admin()
        .create_transfer(create(transfer))
        .await
        .unwrap()
        .into_inner();
    (r.transfer.unwrap().id, r.consistency_token)
}

/// The account's journal as ListEntries returns it, oldest first.
async fn journal(ledger: &TestLedger, account: &str) -> Vec<pb::Entry> {
    let mut entries = ledger
        .admin()
        .list_entries(pb::ListEntriesRequest {
            account_id: account.to_owned(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    entries.reverse();
    entries
}

async fn statement(
    client: &Reporting,
    request: GetStatementRequest,
) -> Result<GetStatementResponse, tonic::Status> {
    client
        .clone()
        .get_statement(request)
        .await
        .map(tonic::Response::into_inner)
}

fn source(s: &GetStatementResponse) -> DataSource {
    DataSource::try_from(s.freshness.as_ref().unwrap().data_source).unwrap()
}

fn time(t: &Option<Timestamp>) -> SystemTime {
    SystemTime::try_from(t.unwrap()).unwrap()
}

/// Opening and closing balances, totals and every field of every line are exact for a
/// period with entries before, inside and after it; the period includes its start and
/// excludes its end; entry ids are the ones ListEntries gives the same entries.
#[tokio::test]
async fn statement_is_exact_for_a_period() {
    let ledger = TestLedger::spawn_with_replica(ReportingFallback::Primary).await;
    let owner = Uuid::now_v7();
    let account = ledger.open(owner).await;
    let other = ledger.open(Uuid::now_v7()).await;
    let vault = ledger.vault().await;

    // Before the period.
    pay(&ledger, &vault, &account, 1_000, "salary").await;
    pay(&ledger, &account, &other, 100, "rent").await;
    // Inside.
    pay(&ledger, &other, &account, 50, "refund").await;
    pay(&ledger, &account, &other, 200, "groceries").await;
    pay(&ledger, &account, &vault, 30, "cash out").await;
    // After (its entry's instant is the period's exclusive end).
    let (_, token) = pay(&ledger, &vault, &account, 5, "interest").await;

    let entries = journal(&ledger, &account).await;
    assert_eq!(entries.len(), 6);
    let request = GetStatementRequest {
        account_id: account.clone(),
        start_time: entries[2].create_time,
        end_time: entries[5].create_time,
        consistency_token: token.clone(),
        ..Default::default()
    };
    let customer = ledger.reporting("customer", owner);
    let s = statement(&customer, request.clone()).await.unwrap();

    assert_eq!(s.account_id, account);
    assert_eq!(s.currency_code, "USD");
    assert_eq!(s.start_time, entries[2].create_time);
    assert_eq!(s.end_time, entries[5].create_time);
    assert_eq!(s.opening_balance, 900);
    assert_eq!(s.total_debits, 230);
    assert_eq!(s.total_credits, 50);
    assert_eq!(s.closing_balance, 720);
    assert!(s.next_page_token.is_empty());

    let got: Vec<_> = s
        .lines
        .iter()
        .map(|l| {
            (
                l.amount,
                l.running_balance,
                l.counterparty_account_id.as_str(),
                l.description.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (50, 950, other.as_str(), "refund"),
            (-200, 750, other.as_str(), "groceries"),
            (-30, 720, vault.as_str(), "cash out"),
        ]
    );
    for (line, entry) in s.lines.iter().zip(&entries[2..5]) {
        assert_eq!(line.entry_id, entry.id);
        assert_eq!(line.transfer_id, entry.transfer_id);
        assert_eq!(line.running_balance, entry.balance_after);
        assert_eq!(line.create_time, entry.create_time);
    }

    // Unset end_time means now: the last entry is in, and the resolved end is after it.
    let open_ended = statement(
        &customer,
        GetStatementRequest {
            end_time: None,
            ..request
        },
    )
    .await
    .unwrap();
    assert_eq!(open_ended.lines.len(), 4);
    assert_eq!(open_ended.lines[3].entry_id, entries[5].id);
    assert_eq!(open_ended.lines[3].description, "interest");
    assert_eq!(
        (open_ended.opening_balance, open_ended.closing_balance),
        (900, 725)
    );
    assert_eq!(
        (open_ended.total_debits, open_ended.total_credits),
        (230, 55)
    );
    assert!(time(&open_ended.end_time) > time(&entries[5].create_time));
}

/// Five lines in pages of two: three pages, in order, without gaps or duplicates, with
/// the same balances, totals and resolved end on every page. A page token is refused
/// (INVALID_ARGUMENT naming page_token) with another account or start time.
#[tokio::test]
async fn statement_pages_cover_the_period_once() {
    let ledger = TestLedger::spawn_with_replica(ReportingFallback::Primary).await;
    let account = ledger.open(Uuid::now_v7()).await;
    let other = ledger.open(Uuid::now_v7()).await;
    let vault = ledger.vault().await;
    pay(&ledger, &vault, &account, 1_000, "one").await;
    pay(&ledger, &account, &other, 10, "two").await;
    pay(&ledger, &account, &other, 20, "three").await;
    pay(&ledger, &other, &account, 5, "four").await;
    let (_, token) = pay(&ledger, &account, &vault, 40, "five").await;
    let entries = journal(&ledger, &account).await;
    assert_eq!(entries.len(), 5);

    let admin = ledger.reporting("admin", Uuid::nil());
    let first = GetStatementRequest {
        account_id: account.clone(),
        start_time: Some(Timestamp {
            seconds: 1,
            nanos: 0,
        }),
        page_size: 2,
        consistency_token: token,
        ..Default::default()
    };
    let mut pages = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = statement(
            &admin,
            GetStatementRequest {
                page_token: page_token.clone(),
                ..first.clone()
            },
        )
        .await
        .unwrap();
        page_token = page.next_page_token.clone();
        pages.push(page);
        if page_token.is_empty() {
            break;
        }
        assert!(pages.len() < 10, "paging does not end");
    }
    assert_eq!(
        pages.iter().map(|p| p.lines.len()).collect::<Vec<_>>(),
        [2, 2, 1]
    );
    for page in &pages {
        assert_eq!(page.opening_balance, 0);
        assert_eq!(page.total_debits, 70);
        assert_eq!(page.total_credits, 1_005);
        assert_eq!(page.closing_balance, 935);
        assert_eq!(page.end_time, pages[0].end_time);
    }
    let ids: Vec<&str> = pages
        .iter()
        .flat_map(|p| &p.lines)
        .map(|l| l.entry_id.as_str())
        .collect();
    let expected: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, expected);

    let token = pages[0].next_page_token.clone();
    let refused = [
        GetStatementRequest {
            account_id: other.clone(),
            page_token: token.clone(),
            ..first.clone()
        },
        GetStatementRequest {
            start_time: Some(Timestamp {
                seconds: 2,
                nanos: 0,
            }),
            page_token: token.clone(),
            ..first.clone()
        },
        GetStatementRequest {
            end_time: pages[0].end_time,
            page_token: token,
            ..first.clone()
        },
        GetStatementRequest {
            page_token: "not-a-token".into(),
            ..first
        },
    ];
    for request in refused {
        let status = statement(&admin, request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(reason(&status), "ERROR_REASON_INVALID_PAGE_TOKEN");
        assert_eq!(info(&status, "field"), "page_token");
    }
}

/// Each malformed field is INVALID_ARGUMENT with ErrorInfo and a BadRequest violation
/// naming it.
#[tokio::test]
async fn statement_refuses_bad_input_naming_the_field() {
    let ledger = TestLedger::spawn_with_replica(ReportingFallback::Primary).await;
    let account = ledger.open(Uuid::now_v7()).await;
    let admin = ledger.reporting("admin", Uuid::nil());
    let at = |seconds| Some(Timestamp { seconds, nanos: 0 });
    let good = GetStatementRequest {
        account_id: account.clone(),
        start_time: at(1_000),
        end_time: at(2_000),
        ..Default::default()
    };
    statement(&admin, good.clone()).await.unwrap();

    let far_future = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 86_400;
    let cases = [
        (
            "account_id",
            GetStatementRequest {
                account_id: String::new(),
                ..good.clone()
            },
        ),
        (
            "account_id",
            GetStatementRequest {
                account_id: "not-a-uuid".into(),
                ..good.clone()
            },
        ),
        (
            "start_time",
            GetStatementRequest {
                start_time: None,
                ..good.clone()
            },
        ),
        (
            "start_time",
            GetStatementRequest {
                start_time: Some(Timestamp {
                    seconds: 1_000,
                    nanos: -1,
                }),
                ..good.clone()
            },
        ),
        (
            "start_time",
            GetStatementRequest {
                start_time: at(i64::try_from(far_future).unwrap()),
                end_time: None,
                ..good.clone()
            },
        ),
        (
            "end_time",
            GetStatementRequest {
                end_time: at(1_000),
                ..good.clone()
            },
        ),
        (
            "end_time",
            GetStatementRequest {
                end_time: at(999),
                ..good.clone()
            },
        ),
        (
            "page_size",
            GetStatementRequest {
                page_size: -1,
                ..good.clone()
            },
        ),
        (
            "consistency_token",
            GetStatementRequest {
                consistency_token: "garbage".into(),
                ..good.clone()
            },
        ),
        (
            "consistency_token",
            GetStatementRequest {
                consistency_token: "0/1; select 1".into(),
                ..good.clone()
            },
        ),
    ];
    for (field, request) in cases {
        let status = statement(&admin, request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert_eq!(reason(&status), "ERROR_REASON_INVALID_FIELD", "{field}");
        assert_eq!(info(&status, "field"), field);
        let violations = status
            .get_details_bad_request()
            .map(|b| b.field_violations)
            .unwrap_or_default();
        assert_eq!(violations.len(), 1, "{field}");
        assert_eq!(violations[0].field, field);
    }

    // Larger pages than 500 are not an error.
    statement(
        &admin,
        GetStatementRequest {
            page_size: 100_000,
            ..good
        },
    )
    .await
    .unwrap();
}

/// A customer reads statements of their own accounts only; someone else's account is
/// refused exactly as ListEntries refuses it, and exactly like a missing account. Staff
/// read any account.
#[tokio::test]
async fn statement_of_someone_elses_account_is_refused_like_list_entries() {
    let ledger = TestLedger::spawn_with_replica(ReportingFallback::Primary).await;
    let alice = Uuid::now_v7();
    let bob = Uuid::now_v7();
    let alices = ledger.open(alice).await;
    let bobs = ledger.open(bob).await;
    ledger.fund(&bobs, 500).await;
    let missing = Uuid::now_v7().to_string();
    let start = Some(Timestamp {
        seconds: 1,
        nanos: 0,
    });
    let request = |account: &str| GetStatementRequest {
        account_id: account.to_owned(),
        start_time: start,
        ..Default::default()
    };
    let shape = |status: &tonic::Status, id: &str| {
        (
            status.code(),
            reason(status),
            status.message().replace(id, "<id>"),
            info(status, "account_id").replace(id, "<id>"),
        )
    };

    let as_alice = ledger.reporting("customer", alice);
    let other = statement(&as_alice, request(&bobs)).await.unwrap_err();
    let absent = statement(&as_alice, request(&missing)).await.unwrap_err();
    let listed = ledger
        .client("customer", alice)
        .list_entries(pb::ListEntriesRequest {
            account_id: bobs.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied);
    assert_eq!(reason(&other), "ERROR_REASON_PERMISSION_DENIED");
    assert_eq!(shape(&other, &bobs), shape(&listed, &bobs));
    assert_eq!(shape(&other, &bobs), shape(&absent, &missing));

    let own = statement(&as_alice, request(&alices)).await.unwrap();
    assert_eq!(own.account_id, alices);
    for role in ["operator", "admin"] {
        let s = statement(&ledger.reporting(role, Uuid::now_v7()), request(&bobs))
            .await
            .unwrap();
        assert_eq!(s.account_id, bobs);
    }
}

/// Read-your-writes: right after each transfer, a statement carrying the transfer's
/// consistency token is read from the replica and already has the transfer, and its
/// freshness says so.
#[tokio::test]
async fn statement_with_consistency_token_sees_the_write_on_the_replica() {
    let ledger = TestLedger::spawn_with_replica(ReportingFallback::Unavailable).await;
    let owner = Uuid::now_v7();
    let account = ledger.open(owner).await;
    let vault = ledger.vault().await;
    let customer = ledger.reporting("customer", owner);
    let start = Some(Timestamp {
        seconds: 1,
        nanos: 0,
    });

    for n in 1..=5 {
        let (transfer, token) = pay(&ledger, &vault, &account, n, "deposit").await;
        let s = statement(
            &customer,
            GetStatementRequest {
                account_id: account.clone(),
                start_time: start,
                consistency_token: token,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(source(&s), DataSource::Replica);
        let last = s.lines.last().expect("the transfer's line");
        assert_eq!(last.transfer_id, transfer);
        assert_eq!(s.closing_balance, n * (n + 1) / 2);
        // The replica had replayed a commit at or after the entry was written.
        let freshness = s.freshness.as_ref().unwrap();
        assert!(time(&freshness.as_of_time) >= time(&last.create_time));
        assert!(freshness.staleness.is_some());
    }
}

/// A consistency token the replica cannot have replayed: after the bounded wait the
/// statement comes from the primary (fallback Primary) and says so, or fails
/// UNAVAILABLE with REPLICA_LAGGING (fallback Unavailable).
#[tokio::test]
async fn statement_behind_the_replica_falls_back_or_fails_lagging() {
    // Far past anything the cluster has written.
    let ahead = "FFFFFFFF/0".to_owned();

    let ledger = TestLedger::spawn_with_replica(ReportingFallback::Primary).await;
    let owner = Uuid::now_v7();
    let account = ledger.open(owner).await;
    ledger.fund(&account, 70).await;
    let request = GetStatementRequest {
        account_id: account.clone(),
        start_time: Some(Timestamp {
            seconds: 1,
            nanos: 0,
        }),
        consistency_token: ahead.clone(),
        ..Default::default()
    };
    let s = statement(&ledger.reporting("customer", owner), request.clone())
        .await
        .unwrap();
    assert_eq!(source(&s), DataSource::Primary);
    assert_eq!(s.closing_balance, 70);
    let freshness = s.freshness.unwrap();
    assert_eq!(freshness.staleness, Some(prost_types::Duration::default()));

    let strict = TestLedger::spawn_with_replica(ReportingFallback::Unavailable).await;
    let account = strict.open(owner).await;
    let status = statement(
        &strict.reporting("customer", owner),
        GetStatementRequest {
            account_id: account,
            ..request
        },
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(reason(&status), "ERROR_REASON_REPLICA_LAGGING");
    assert_eq!(info(&status, "consistency_token"), ahead);
}
