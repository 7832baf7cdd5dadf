//! Bad input through gRPC: each malformed field is refused with the right code and a
//! reason, naming the field, before anything is written.

mod common;

use common::{TestLedger, create, info, reason, spec};
use ferrobank_proto::ledger as pb;
use tonic::Code;
use uuid::Uuid;

/// Every bad CreateTransfer field gets its own precise refusal and nothing moves.
#[tokio::test]
async fn bad_transfer_fields_are_named() {
    let ledger = TestLedger::spawn().await;
    let a = ledger.open(Uuid::now_v7()).await;
    let b = ledger.open(Uuid::now_v7()).await;
    let eur = ledger.open_with_limit(Uuid::now_v7(), "EUR", 0).await;
    ledger.fund(&a, 100).await;
    let transfers_before = ledger.count("transfers").await;
    let mut admin = ledger.admin();

    let with = |f: &dyn Fn(&mut pb::TransferSpec)| {
        let mut s = spec(&a, &b, 10);
        f(&mut s);
        create(s)
    };
    let cases: Vec<(&str, pb::CreateTransferRequest, Code, &str, &str)> = vec![
        (
            "missing debit",
            with(&|s| s.debit_account_id.clear()),
            Code::InvalidArgument,
            "ERROR_REASON_INVALID_FIELD",
            "transfer.debit_account_id",
        ),
        (
            "garbled credit",
            with(&|s| s.credit_account_id = "xyz".into()),
            Code::InvalidArgument,
            "ERROR_REASON_INVALID_FIELD",
            "transfer.credit_account_id",
        ),
        (
            "zero amount",
            with(&|s| s.amount = 0),
            Code::InvalidArgument,
            "ERROR_REASON_INVALID_FIELD",
            "transfer.amount",
        ),
        (
            "negative amount",
            with(&|s| s.amount = -5),
            Code::InvalidArgument,
            "ERROR_REASON_INVALID_FIELD",
            "transfer.amount",
        ),
        (
            "lowercase currency",
            with(&|s| s.currency_code = "usd".into()),
            Code::InvalidArgument,
            "ERROR_REASON_INVALID_FIELD",
            "transfer.currency_code",
        ),
        (
            "missing currency",
            with(&|s| s.currency_code.clear()),
            Code::InvalidArgument,
            "ERROR_REASON_INVALID_FIELD",
            "transfer.currency_code",
        ),
        (
            "unknown currency",
            with(&|s| s.currency_code = "XYZ".into()),
            Code::InvalidArgument,
            "ERROR_REASON_UNKNOWN_CURRENCY",
            "transfer.currency_code",
        ),
        (
            "same account",
            with(&|s| s.credit_account_id = s.debit_account_id.clone()),
            Code::InvalidArgument,
            "ERROR_REASON_SAME_ACCOUNT",
            "transfer.credit_account_id",
        ),
        (
            "hold without timeout",
            with(&|s| s.pending = true),
            Code::InvalidArgument,
            "ERROR_REASON_INVALID_FIELD",
            "transfer.timeout",
        ),
        (
            "negative timeout",
            with(&|s| {
                s.pending = true;
                s.timeout = Some(prost_types::Duration {
                    seconds: -1,
                    nanos: 0,
                });
            }),
            Code::InvalidArgument,
            "ERROR_REASON_INVALID_FIELD",
            "transfer.timeout",
        ),
        (
            "bad metadata key",
            with(&|s| {
                s.metadata.insert("Bad Key".into(), "v".into());
            }),
            Code::InvalidArgument,
            "ERROR_REASON_INVALID_FIELD",
            "transfer.metadata[Bad Key]",
        ),
        (
            "long description",
            with(&|s| s.description = "x".repeat(300)),
            Code::InvalidArgument,
            "ERROR_REASON_INVALID_FIELD",
            "transfer.description",
        ),
        (
            "currency mismatch",
            with(&|s| s.credit_account_id = eur.clone()),
            Code::FailedPrecondition,
            "ERROR_REASON_CURRENCY_MISMATCH",
            "",
        ),
        (
            "wrong currency for both",
            with(&|s| s.currency_code = "EUR".into()),
            Code::FailedPrecondition,
            "ERROR_REASON_CURRENCY_MISMATCH",
            "",
        ),
        (
            "missing credit account",
            with(&|s| s.credit_account_id = Uuid::now_v7().to_string()),
            Code::NotFound,
            "ERROR_REASON_ACCOUNT_NOT_FOUND",
            "",
        ),
        (
            "bad request id",
            pb::CreateTransferRequest {
                request_id: "nope".into(),
                transfer: Some(spec(&a, &b, 1)),
            },
            Code::InvalidArgument,
            "ERROR_REASON_INVALID_FIELD",
            "request_id",
        ),
        (
            "no transfer",
            pb::CreateTransferRequest {
                request_id: Uuid::new_v4().to_string(),
                transfer: None,
            },
            Code::InvalidArgument,
            "ERROR_REASON_INVALID_FIELD",
            "transfer",
        ),
    ];
    for (name, request, code, want_reason, field) in cases {
        let status = admin.create_transfer(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{name}: {status:?}");
        assert_eq!(reason(&status), want_reason, "{name}");
        assert_eq!(info(&status, "field"), field, "{name}");
    }
    assert_eq!(ledger.count("transfers").await, transfers_before);
    assert_eq!(ledger.balance(&a).await, 100);
}

/// Bad list and account inputs: page sizes, page tokens, ids, enums, batch sizes.
#[tokio::test]
async fn bad_list_and_account_inputs_are_named() {
    let ledger = TestLedger::spawn().await;
    let a = ledger.open(Uuid::now_v7()).await;
    let mut admin = ledger.admin();

    let status = admin
        .list_accounts(pb::ListAccountsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), info(&status, "field")),
        (Code::InvalidArgument, "page_size".into())
    );
    for token in ["garbage!", "eyJ2IjoxfQ", "AAAA"] {
        let status = admin
            .list_accounts(pb::ListAccountsRequest {
                page_token: token.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            reason(&status),
            "ERROR_REASON_INVALID_PAGE_TOKEN",
            "{token}"
        );
    }
    // A token from one filter does not work for another.
    let page = admin
        .list_accounts(pb::ListAccountsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!page.next_page_token.is_empty());
    let status = admin
        .list_accounts(pb::ListAccountsRequest {
            page_size: 1,
            page_token: page.next_page_token,
            currency_code: "USD".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "ERROR_REASON_INVALID_PAGE_TOKEN");

    let status = admin
        .list_accounts(pb::ListAccountsRequest {
            status: 42,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(info(&status, "field"), "status");
    let status = admin
        .get_account(pb::GetAccountRequest {
            account_id: "1234".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(info(&status, "field"), "account_id");
    let status = admin
        .open_account(pb::OpenAccountRequest {
            request_id: Uuid::new_v4().to_string(),
            currency_code: "QQQ".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "ERROR_REASON_UNKNOWN_CURRENCY");
    let status = admin
        .open_account(pb::OpenAccountRequest {
            request_id: Uuid::new_v4().to_string(),
            currency_code: "USD".into(),
            overdraft_limit: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(info(&status, "field"), "overdraft_limit");
    let status = admin
        .freeze_account(pb::FreezeAccountRequest {
            request_id: Uuid::new_v4().to_string(),
            account_id: a.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(info(&status, "field"), "reason");
    let status = admin
        .post_pending_transfer(pb::PostPendingTransferRequest {
            request_id: Uuid::new_v4().to_string(),
            pending_id: Uuid::now_v7().to_string(),
            amount: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(info(&status, "field"), "amount");
    let status = admin
        .post_pending_transfer(pb::PostPendingTransferRequest {
            request_id: Uuid::new_v4().to_string(),
            pending_id: Uuid::now_v7().to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "ERROR_REASON_TRANSFER_NOT_FOUND");
    for n in [0usize, 1001] {
        let status = admin
            .create_transfer_batch(pb::CreateTransferBatchRequest {
                request_id: Uuid::new_v4().to_string(),
                transfers: vec![spec(&a, &a, 1); n],
                linked: false,
            })
            .await
            .unwrap_err();
        assert_eq!(info(&status, "field"), "transfers", "{n} members");
    }
    let status = admin
        .get_balance(pb::GetBalanceRequest {
            account_id: a.clone(),
            as_of_time: Some(prost_types::Timestamp {
                seconds: 4_102_444_800,
                nanos: 0,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(info(&status, "field"), "as_of_time");
    let status = admin
        .list_transfers(pb::ListTransfersRequest {
            start_time: Some(prost_types::Timestamp {
                seconds: 10,
                nanos: 0,
            }),
            end_time: Some(prost_types::Timestamp {
                seconds: 5,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(info(&status, "field"), "end_time");
}
