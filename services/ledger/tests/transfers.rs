//! Transfers through gRPC against a real Postgres: idempotent replays, holds, batches,
//! refusals that leave balances untouched, and the reads that show the journal.

mod common;

use common::{TestLedger, create, info, reason, spec};
use ferrobank_proto::ledger::{self as pb, transfer_batch_result::Outcome};
use tonic::Code;
use uuid::Uuid;

/// The same CreateTransfer sent 20 times at once yields one transfer and 20 identical
/// responses.
#[tokio::test]
async fn concurrent_replays_make_one_transfer() {
    let ledger = TestLedger::spawn().await;
    let from = ledger.open(Uuid::now_v7()).await;
    let to = ledger.open(Uuid::now_v7()).await;
    ledger.fund(&from, 1_000).await;
    let before = ledger.count("transfers").await;

    let request = create(spec(&from, &to, 300));
    let calls = (0..20).map(|_| {
        let mut client = ledger.admin();
        let request = request.clone();
        tokio::spawn(async move {
            client
                .create_transfer(request)
                .await
                .map(|r| r.into_inner())
        })
    });
    let responses: Vec<pb::CreateTransferResponse> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();

    let first = responses[0].transfer.clone().unwrap();
    for r in &responses {
        assert_eq!(r.transfer.as_ref(), Some(&first));
        assert_eq!(r.ledger_time, responses[0].ledger_time);
        assert!(!r.consistency_token.is_empty());
    }
    assert_eq!(ledger.count("transfers").await, before + 1);
    assert_eq!(ledger.balance(&from).await, 700);
    assert_eq!(ledger.balance(&to).await, 300);
    ledger.assert_invariants().await;
}

/// A request_id reused with another payload is INVALID_ARGUMENT REQUEST_ID_REUSED and
/// changes nothing.
#[tokio::test]
async fn reused_request_id_is_refused() {
    let ledger = TestLedger::spawn().await;
    let from = ledger.open(Uuid::now_v7()).await;
    let to = ledger.open(Uuid::now_v7()).await;
    ledger.fund(&from, 1_000).await;
    let mut admin = ledger.admin();
    let mut request = create(spec(&from, &to, 100));
    admin.create_transfer(request.clone()).await.unwrap();
    request.transfer.as_mut().unwrap().amount = 200;

    let status = admin.create_transfer(request).await.unwrap_err();

    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(reason(&status), "ERROR_REASON_REQUEST_ID_REUSED");
    assert_eq!(ledger.balance(&from).await, 900);
}

/// A hold reserves funds; a partial post moves part and releases the rest; a second
/// hold is voided and releases everything; a resolved hold cannot be resolved again.
#[tokio::test]
async fn holds_post_partially_and_void() {
    let ledger = TestLedger::spawn().await;
    let from = ledger.open(Uuid::now_v7()).await;
    let to = ledger.open(Uuid::now_v7()).await;
    ledger.fund(&from, 1_000).await;
    let mut admin = ledger.admin();
    let mut hold_spec = spec(&from, &to, 400);
    hold_spec.pending = true;
    hold_spec.timeout = Some(prost_types::Duration {
        seconds: 3600,
        nanos: 0,
    });

    let hold = admin
        .create_transfer(create(hold_spec.clone()))
        .await
        .unwrap()
        .into_inner();
    let held = hold.transfer.unwrap();
    assert_eq!(held.status, pb::TransferStatus::Pending as i32);
    assert_eq!(held.kind, pb::TransferKind::Hold as i32);
    assert!(held.expire_time.is_some() && hold.ledger_time.is_some());
    let a = ledger.account(&from).await;
    assert_eq!(
        (a.posted_balance, a.pending_debits, a.available_balance),
        (1_000, 400, 600)
    );

    let posted = admin
        .post_pending_transfer(pb::PostPendingTransferRequest {
            request_id: Uuid::new_v4().to_string(),
            pending_id: held.id.clone(),
            amount: 150,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(posted.transfer.unwrap().amount, 150);
    let after = posted.pending_transfer.unwrap();
    assert_eq!(
        (after.status, after.posted_amount),
        (pb::TransferStatus::Posted as i32, 150)
    );
    let a = ledger.account(&from).await;
    assert_eq!(
        (a.posted_balance, a.pending_debits, a.available_balance),
        (850, 0, 850)
    );
    assert_eq!(ledger.balance(&to).await, 150);

    let again = admin
        .void_pending_transfer(pb::VoidPendingTransferRequest {
            request_id: Uuid::new_v4().to_string(),
            pending_id: held.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(reason(&again), "ERROR_REASON_TRANSFER_NOT_PENDING");

    let second = admin
        .create_transfer(create(hold_spec))
        .await
        .unwrap()
        .into_inner();
    let voided = admin
        .void_pending_transfer(pb::VoidPendingTransferRequest {
            request_id: Uuid::new_v4().to_string(),
            pending_id: second.transfer.unwrap().id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        voided.pending_transfer.unwrap().status,
        pb::TransferStatus::Voided as i32
    );
    let a = ledger.account(&from).await;
    assert_eq!((a.posted_balance, a.pending_debits), (850, 0));

    let too_much = admin
        .create_transfer(create({
            let mut s = spec(&from, &to, 100);
            s.pending = true;
            s.timeout = Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            });
            s
        }))
        .await
        .unwrap()
        .into_inner();
    let status = admin
        .post_pending_transfer(pb::PostPendingTransferRequest {
            request_id: Uuid::new_v4().to_string(),
            pending_id: too_much.transfer.unwrap().id,
            amount: 101,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "ERROR_REASON_AMOUNT_EXCEEDS_PENDING");
    ledger.assert_invariants().await;
}

/// A linked batch with one failing member applies nothing; the failing member carries
/// its own reason and the others BATCH_MEMBER_FAILED.
#[tokio::test]
async fn linked_batch_is_all_or_nothing() {
    let ledger = TestLedger::spawn().await;
    let a = ledger.open(Uuid::now_v7()).await;
    let b = ledger.open(Uuid::now_v7()).await;
    ledger.fund(&a, 100).await;
    let transfers_before = ledger.count("transfers").await;
    let entries_before = ledger.count("entries").await;

    let response = ledger
        .admin()
        .create_transfer_batch(pb::CreateTransferBatchRequest {
            request_id: Uuid::new_v4().to_string(),
            transfers: vec![spec(&a, &b, 60), spec(&a, &b, 60), spec(&b, &a, 10)],
            linked: true,
        })
        .await
        .unwrap()
        .into_inner();

    let reasons: Vec<i32> = response
        .results
        .iter()
        .map(|r| match r.outcome.as_ref().unwrap() {
            Outcome::Error(e) => e.reason,
            Outcome::Transfer(_) => 0,
        })
        .collect();
    use ferrobank_proto::common::ErrorReason as R;
    assert_eq!(
        reasons,
        vec![
            R::BatchMemberFailed as i32,
            R::InsufficientFunds as i32,
            R::BatchMemberFailed as i32
        ]
    );
    assert!(response.consistency_token.is_empty());
    assert_eq!(ledger.count("transfers").await, transfers_before);
    assert_eq!(ledger.count("entries").await, entries_before);
    assert_eq!(ledger.balance(&a).await, 100);
    assert_eq!(ledger.balance(&b).await, 0);
}

/// An unlinked batch applies each member on its own and reports each outcome, in one
/// call; replaying the batch replays every member.
#[tokio::test]
async fn unlinked_batch_reports_per_member() {
    let ledger = TestLedger::spawn().await;
    let a = ledger.open(Uuid::now_v7()).await;
    let b = ledger.open(Uuid::now_v7()).await;
    ledger.fund(&a, 100).await;
    let request = pb::CreateTransferBatchRequest {
        request_id: Uuid::new_v4().to_string(),
        transfers: vec![
            spec(&a, &b, 60),
            spec(&a, &b, 60),
            spec(&b, &a, 10),
            spec(&a, "not-a-uuid", 1),
        ],
        linked: false,
    };
    let mut admin = ledger.admin();
    let response = admin
        .create_transfer_batch(request.clone())
        .await
        .unwrap()
        .into_inner();

    let outcomes: Vec<&Outcome> = response
        .results
        .iter()
        .map(|r| r.outcome.as_ref().unwrap())
        .collect();
    assert!(matches!(outcomes[0], Outcome::Transfer(t) if t.amount == 60));
    assert!(
        matches!(outcomes[1], Outcome::Error(e) if e.reason == ferrobank_proto::common::ErrorReason::InsufficientFunds as i32)
    );
    assert!(matches!(outcomes[2], Outcome::Transfer(t) if t.amount == 10));
    assert!(matches!(outcomes[3], Outcome::Error(e) if e.field == "credit_account_id"));
    assert!(!response.consistency_token.is_empty());
    assert_eq!(ledger.balance(&a).await, 50);
    assert_eq!(ledger.balance(&b).await, 50);

    let replay = admin
        .create_transfer_batch(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay.results, response.results);
    assert_eq!(ledger.balance(&a).await, 50);
    ledger.assert_invariants().await;
}

/// Overdrafts are refused with FAILED_PRECONDITION INSUFFICIENT_FUNDS and the available
/// amount, balances stay untouched, and a replay after funds arrive is still refused.
#[tokio::test]
async fn insufficient_funds_is_refused_and_stays_refused() {
    let ledger = TestLedger::spawn().await;
    let owner = Uuid::now_v7();
    let from = ledger.open_with_limit(owner, "USD", 5).await;
    let to = ledger.open(Uuid::now_v7()).await;
    ledger.fund(&from, 10).await;
    let mut customer = ledger.client("customer", owner);
    let request = create(spec(&from, &to, 25));

    let status = customer.create_transfer(request.clone()).await.unwrap_err();

    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "ERROR_REASON_INSUFFICIENT_FUNDS");
    assert_eq!(info(&status, "account_id"), from);
    assert_eq!(info(&status, "available"), "15");
    assert_eq!(info(&status, "requested"), "25");
    assert_eq!(ledger.balance(&from).await, 10);

    ledger.fund(&from, 100).await;
    let replay = customer.create_transfer(request).await.unwrap_err();
    assert_eq!(reason(&replay), "ERROR_REASON_INSUFFICIENT_FUNDS");
    assert_eq!(ledger.balance(&from).await, 110);
    assert_eq!(ledger.balance(&to).await, 0);

    // Within the overdraft it goes through, down to -limit.
    customer
        .create_transfer(create(spec(&from, &to, 115)))
        .await
        .unwrap();
    assert_eq!(ledger.balance(&from).await, -5);
    ledger.assert_invariants().await;
}

/// A frozen account refuses movement naming the account; unfrozen it moves again; an
/// account closes only at zero.
#[tokio::test]
async fn frozen_and_closed_accounts_refuse_movement() {
    let ledger = TestLedger::spawn().await;
    let owner = Uuid::now_v7();
    let a = ledger.open(owner).await;
    let b = ledger.open(Uuid::now_v7()).await;
    ledger.fund(&a, 100).await;
    let mut operator = ledger.client("operator", Uuid::now_v7());
    let mut customer = ledger.client("customer", owner);
    let freeze = pb::FreezeAccountRequest {
        request_id: Uuid::new_v4().to_string(),
        account_id: b.clone(),
        reason: "fraud check".into(),
    };
    let frozen = operator.freeze_account(freeze).await.unwrap().into_inner();
    assert_eq!(
        frozen.account.unwrap().status,
        pb::AccountStatus::Frozen as i32
    );

    let status = customer
        .create_transfer(create(spec(&a, &b, 10)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "ERROR_REASON_ACCOUNT_FROZEN");
    assert_eq!(info(&status, "account_id"), b);
    assert!(status.message().contains(&b));

    operator
        .unfreeze_account(pb::UnfreezeAccountRequest {
            request_id: Uuid::new_v4().to_string(),
            account_id: b.clone(),
            reason: "cleared".into(),
        })
        .await
        .unwrap();
    customer
        .create_transfer(create(spec(&a, &b, 10)))
        .await
        .unwrap();

    let close = |id: &str| pb::CloseAccountRequest {
        request_id: Uuid::new_v4().to_string(),
        account_id: id.to_owned(),
        reason: String::new(),
    };
    let status = customer.close_account(close(&a)).await.unwrap_err();
    assert_eq!(reason(&status), "ERROR_REASON_ACCOUNT_NOT_EMPTY");
    let empty = ledger.open(owner).await;
    let closed = customer
        .close_account(close(&empty))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        closed.account.unwrap().status,
        pb::AccountStatus::Closed as i32
    );
    let status = ledger
        .admin()
        .create_transfer(create(spec(&a, &empty, 1)))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "ERROR_REASON_ACCOUNT_CLOSED");
    assert_eq!(info(&status, "account_id"), empty);
}

/// Transfers, entries (with balance after each) and balances as of a past instant read
/// back what was written, page by page.
#[tokio::test]
async fn history_reads_page_through_the_journal() {
    let ledger = TestLedger::spawn().await;
    let owner = Uuid::now_v7();
    let a = ledger.open(owner).await;
    let b = ledger.open(Uuid::now_v7()).await;
    ledger.fund(&a, 1_000).await;
    let mut admin = ledger.admin();
    let mut midway = None;
    for i in 1..=7 {
        let r = admin
            .create_transfer(create(spec(&a, &b, i)))
            .await
            .unwrap()
            .into_inner();
        if i == 3 {
            midway = r.ledger_time;
        }
    }
    let mut customer = ledger.client("customer", owner);

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = customer
            .list_entries(pb::ListEntriesRequest {
                account_id: a.clone(),
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.entries);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 8);
    assert_eq!(seen[0].balance_after, 1_000 - 28);
    assert_eq!(seen[0].amount, -7);
    assert_eq!(seen[0].counterparty_account_id, b);
    assert_eq!(seen[7].amount, 1_000);
    for pair in seen.windows(2) {
        assert_eq!(
            pair[0].balance_after - pair[0].amount,
            pair[1].balance_after
        );
    }

    let page = customer
        .list_transfers(pb::ListTransfersRequest {
            account_id: a.clone(),
            page_size: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.transfers.len(), 5);
    assert_eq!(page.transfers[0].amount, 7);
    let rest = customer
        .list_transfers(pb::ListTransfersRequest {
            account_id: a.clone(),
            page_size: 5,
            page_token: page.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.transfers.len(), 3);
    assert!(rest.next_page_token.is_empty());

    // A token is bound to its query.
    let status = customer
        .list_transfers(pb::ListTransfersRequest {
            account_id: a.clone(),
            status: pb::TransferStatus::Pending as i32,
            page_token: page.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "ERROR_REASON_INVALID_PAGE_TOKEN");

    let then = customer
        .get_balance(pb::GetBalanceRequest {
            account_id: a.clone(),
            as_of_time: midway,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(then.posted_balance, 1_000 - 6);
    let now = customer
        .get_balance(pb::GetBalanceRequest {
            account_id: a.clone(),
            as_of_time: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.posted_balance, 1_000 - 28);

    let currencies = customer
        .list_currencies(pb::ListCurrenciesRequest {
            page_size: 4,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(currencies.currencies.len(), 4);
    assert!(!currencies.next_page_token.is_empty());
}
