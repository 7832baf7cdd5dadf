//! One trace runs client → gateway → service → SQL: a call through the gateway of
//! `ferrobank all`, started under a client's `traceparent`, exports the gateway's span,
//! the ledger's span for the call and its SQL statement's span, each the child of the
//! one before, all in the client's trace — with the gateway calling the services in
//! process and over the network. (Its own process: it installs the global
//! subscriber with an in-memory OpenTelemetry exporter.)

use std::time::{Duration, Instant};

mod common;

use common::bearer;
use ferrobank_config::GatewayUpstreams;
use opentelemetry::trace::{SpanId, SpanKind};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};

const CLIENT_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_gateway_service_and_sql() {
    let exporter = ferrobank_testkit::export_spans_in_memory();

    for (upstreams, trace_id) in [
        (
            GatewayUpstreams::InProcess,
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        (
            GatewayUpstreams::Network,
            "0af7651916cd43dd8448eb211c80319c",
        ),
    ] {
        get_balance_under(upstreams, trace_id).await;
        let spans = finished_spans(&exporter, trace_id).await;
        let path = "/ferrobank.ledger.v1.LedgerService/GetBalance";
        let gateway = one(&spans, |s| {
            s.name == path && s.parent_span_id.to_string() == CLIENT_SPAN
        });
        let service = one(&spans, |s| {
            s.name == path && s.parent_span_id == gateway.span_context.span_id()
        });
        assert_eq!(service.span_kind, SpanKind::Server, "{upstreams:?}");
        let sql = spans
            .iter()
            .filter(|s| s.name == "sql" && s.parent_span_id == service.span_context.span_id())
            .count();
        assert!(
            sql >= 1,
            "{upstreams:?}: no SQL span under the service's: {spans:#?}"
        );
        exporter.reset();
    }
}

/// Signs a customer up, opens an account and reads its balance through the gateway of
/// a fresh platform reaching the services as `upstreams` says, the read as the child of
/// span [`CLIENT_SPAN`] in `trace_id`.
async fn get_balance_under(upstreams: GatewayUpstreams, trace_id: &str) {
    use ferrobank_proto::ledger::ledger_service_client::LedgerServiceClient;
    use ferrobank_proto::ledger::{GetBalanceRequest, OpenAccountRequest};

    let (platform, _dbs) = common::start_with_redis_over(upstreams).await;
    let channel = common::connect(platform.gateway_addr).await;
    let running = common::run(platform);

    let (user, token) = common::customer(channel.clone(), "grace").await;
    let mut ledger = LedgerServiceClient::new(channel);
    let account = ledger
        .open_account(bearer(
            OpenAccountRequest {
                request_id: uuid::Uuid::new_v4().to_string(),
                owner_id: user.id,
                currency_code: "USD".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();

    let mut read = bearer(
        GetBalanceRequest {
            account_id: account.id,
            ..Default::default()
        },
        &token,
    );
    read.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{CLIENT_SPAN}-01").parse().unwrap(),
    );
    ledger.get_balance(read).await.expect("balance");

    running.stop().await;
}

/// The exported spans of `trace_id` once the SQL span is among them (spans are
/// exported as they end; the service's and the gateway's end last).
async fn finished_spans(exporter: &InMemorySpanExporter, trace_id: &str) -> Vec<SpanData> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let spans: Vec<SpanData> = exporter
            .get_finished_spans()
            .expect("spans")
            .into_iter()
            .filter(|s| s.span_context.trace_id().to_string() == trace_id)
            .collect();
        let gateway_done = spans
            .iter()
            .any(|s| s.parent_span_id.to_string() == CLIENT_SPAN);
        if gateway_done && spans.iter().any(|s| s.name == "sql") || Instant::now() > deadline {
            return spans;
        }
        tokio::task::yield_now().await;
    }
}

fn one(spans: &[SpanData], pick: impl Fn(&SpanData) -> bool) -> &SpanData {
    let picked: Vec<_> = spans.iter().filter(|s| pick(s)).collect();
    assert_eq!(picked.len(), 1, "expected one such span in {spans:#?}");
    assert_ne!(picked[0].span_context.span_id(), SpanId::INVALID);
    picked[0]
}
