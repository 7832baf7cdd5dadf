//! Authorization through gRPC: customers see and move only their own money and cannot
//! tell someone else's account from a missing one; staff and services get only what
//! their role allows.

mod common;

use common::{TestLedger, create, reason, spec};
use ferrobank_proto::ledger as pb;
use tonic::Code;
use uuid::Uuid;

/// Strips the id from a status message so two refusals can be compared.
fn shape(status: &tonic::Status, id: &str) -> (Code, String, String) {
    (
        status.code(),
        reason(status),
        status.message().replace(id, "<id>"),
    )
}

/// A customer cannot read or debit another customer's account, and the refusal is
/// identical to the one for an account that does not exist.
#[tokio::test]
async fn customer_cannot_see_or_move_others_money() {
    let ledger = TestLedger::spawn().await;
    let alice = Uuid::now_v7();
    let bob = Uuid::now_v7();
    let alices = ledger.open(alice).await;
    let bobs = ledger.open(bob).await;
    ledger.fund(&bobs, 500).await;
    let missing = Uuid::now_v7().to_string();
    let mut mallory = ledger.client("customer", alice);

    let get = |id: &str| pb::GetAccountRequest {
        account_id: id.to_owned(),
    };
    let other = mallory.get_account(get(&bobs)).await.unwrap_err();
    let absent = mallory.get_account(get(&missing)).await.unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied);
    assert_eq!(reason(&other), "ERROR_REASON_PERMISSION_DENIED");
    assert_eq!(shape(&other, &bobs), shape(&absent, &missing));

    for rpc in ["balance", "entries", "transfers"] {
        let call = |id: String| {
            let mut c = mallory.clone();
            async move {
                match rpc {
                    "balance" => c
                        .get_balance(pb::GetBalanceRequest {
                            account_id: id,
                            as_of_time: None,
                        })
                        .await
                        .map(drop),
                    "entries" => c
                        .list_entries(pb::ListEntriesRequest {
                            account_id: id,
                            ..Default::default()
                        })
                        .await
                        .map(drop),
                    _ => c
                        .list_transfers(pb::ListTransfersRequest {
                            account_id: id,
                            ..Default::default()
                        })
                        .await
                        .map(drop),
                }
            }
        };
        let other = call(bobs.clone()).await.unwrap_err();
        let absent = call(missing.clone()).await.unwrap_err();
        assert_eq!(other.code(), Code::PermissionDenied, "{rpc}");
        assert_eq!(shape(&other, &bobs), shape(&absent, &missing), "{rpc}");
    }

    // Debiting someone else's account, or a missing one: the same refusal.
    let theft = mallory
        .create_transfer(create(spec(&bobs, &alices, 100)))
        .await
        .unwrap_err();
    let ghost = mallory
        .create_transfer(create(spec(&missing, &alices, 100)))
        .await
        .unwrap_err();
    assert_eq!(theft.code(), Code::PermissionDenied);
    assert_eq!(shape(&theft, &bobs), shape(&ghost, &missing));
    assert_eq!(ledger.balance(&bobs).await, 500);

    // Listing someone else's accounts is refused; their own list has only theirs.
    let status = mallory
        .list_accounts(pb::ListAccountsRequest {
            owner_id: bob.to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let own = mallory
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        own.accounts
            .iter()
            .map(|a| a.id.clone())
            .collect::<Vec<_>>(),
        vec![alices.clone()]
    );

    // A transfer between two others is invisible; so is a missing one.
    let t = ledger
        .admin()
        .create_transfer(create(spec(&bobs, &ledger.open(bob).await, 1)))
        .await
        .unwrap();
    let tid = t.into_inner().transfer.unwrap().id;
    let other = mallory
        .get_transfer(pb::GetTransferRequest {
            transfer_id: tid.clone(),
        })
        .await
        .unwrap_err();
    let fake = Uuid::now_v7().to_string();
    let absent = mallory
        .get_transfer(pb::GetTransferRequest {
            transfer_id: fake.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(shape(&other, &tid), shape(&absent, &fake));
}

/// A customer may pay into another customer's account (credit side) but not into or
/// out of the bank's system accounts, may open accounts only for themselves without
/// overdraft, and may not freeze or resolve holds.
#[tokio::test]
async fn customer_limits() {
    let ledger = TestLedger::spawn().await;
    let alice = Uuid::now_v7();
    let alices = ledger.open(alice).await;
    let bobs = ledger.open(Uuid::now_v7()).await;
    ledger.fund(&alices, 100).await;
    let vault = ledger.vault().await;
    let mut customer = ledger.client("customer", alice);

    customer
        .create_transfer(create(spec(&alices, &bobs, 10)))
        .await
        .unwrap();
    assert_eq!(ledger.balance(&bobs).await, 10);
    for (d, c) in [(&alices, &vault), (&vault, &alices)] {
        let status = customer
            .create_transfer(create(spec(d, c, 1)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    let open = |owner: String, overdraft: i64| pb::OpenAccountRequest {
        request_id: Uuid::new_v4().to_string(),
        owner_id: owner,
        currency_code: "EUR".into(),
        overdraft_limit: overdraft,
        ..Default::default()
    };
    let mine = customer
        .open_account(open(String::new(), 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.account.unwrap().owner_id, alice.to_string());
    assert!(!mine.consistency_token.is_empty());
    let status = customer
        .open_account(open(Uuid::now_v7().to_string(), 0))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = customer
        .open_account(open(String::new(), 100))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = customer
        .freeze_account(pb::FreezeAccountRequest {
            request_id: Uuid::new_v4().to_string(),
            account_id: alices.clone(),
            reason: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

/// Operators read anything and book cash in/out against system accounts only;
/// services create holds but not posted transfers.
#[tokio::test]
async fn operator_and_service_limits() {
    let ledger = TestLedger::spawn().await;
    let a = ledger.open(Uuid::now_v7()).await;
    let b = ledger.open(Uuid::now_v7()).await;
    let vault = ledger.vault().await;
    let mut operator = ledger.client("operator", Uuid::now_v7());
    operator
        .create_transfer(create(spec(&vault, &a, 100)))
        .await
        .unwrap();
    operator
        .create_transfer(create(spec(&a, &vault, 10)))
        .await
        .unwrap();
    let status = operator
        .create_transfer(create(spec(&a, &b, 10)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    operator
        .get_account(pb::GetAccountRequest {
            account_id: a.clone(),
        })
        .await
        .unwrap();
    let missing = Uuid::now_v7().to_string();
    let status = operator
        .get_account(pb::GetAccountRequest {
            account_id: missing,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status), "ERROR_REASON_ACCOUNT_NOT_FOUND");

    let mut service = ledger.client("service", Uuid::now_v7());
    let status = service
        .create_transfer(create(spec(&a, &b, 10)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let mut hold = spec(&a, &b, 10);
    hold.pending = true;
    hold.timeout = Some(prost_types::Duration {
        seconds: 60,
        nanos: 0,
    });
    let held = service
        .create_transfer(create(hold))
        .await
        .unwrap()
        .into_inner();
    service
        .post_pending_transfer(pb::PostPendingTransferRequest {
            request_id: Uuid::new_v4().to_string(),
            pending_id: held.transfer.unwrap().id,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ledger.balance(&b).await, 10);
    ledger.assert_invariants().await;
}
