//! `ferrobank all` in process: reflection lists every service through the gateway,
//! health says SERVING for each, unbuilt RPCs answer UNIMPLEMENTED, and the gateway
//! answers UNIMPLEMENTED for services it does not know — with the gateway calling the
//! services in process and over the network.

use std::time::Duration;

mod common;

use common::bearer;
use ferrobank::Platform;
use ferrobank_config::GatewayUpstreams;
use ferrobank_proto::status::reason;
use ferrobank_testkit::TestDb;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

async fn start() -> (Platform, Vec<TestDb>) {
    common::start_with_redis().await
}

async fn list_services_v1(channel: Channel) -> Vec<String> {
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    match stream.message().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

async fn list_services_v1alpha(channel: Channel) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    match stream.message().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

/// Waits (bounded) on the health Watch stream until `service` reports SERVING.
async fn wait_serving(channel: Channel, service: &str) {
    let mut client = HealthClient::new(channel);
    let mut stream = client
        .watch(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let serving = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(update) = stream.message().await.unwrap() {
            if update.status == ServingStatus::Serving as i32 {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(serving, Ok(true), "{service} never became SERVING");
}

/// Reflection (v1 and v1alpha) through the gateway lists the four Ferrobank services,
/// health and reflection; health reports SERVING for every Ferrobank service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_lists_services_and_reports_health() {
    let (platform, _dbs) = start().await;
    let channel = common::connect(platform.gateway_addr).await;
    let running = common::run(platform);

    // Each reflection version lists itself among the services.
    for (services, reflection) in [
        (
            list_services_v1(channel.clone()).await,
            "grpc.reflection.v1.ServerReflection",
        ),
        (
            list_services_v1alpha(channel.clone()).await,
            "grpc.reflection.v1alpha.ServerReflection",
        ),
    ] {
        for expected in ferrobank_proto::SERVICE_NAMES
            .iter()
            .chain(&["grpc.health.v1.Health", reflection])
        {
            assert!(
                services.iter().any(|s| s == expected),
                "{expected} missing from {services:?}"
            );
        }
    }

    for service in ferrobank_proto::SERVICE_NAMES {
        wait_serving(channel.clone(), service).await;
    }

    running.stop().await;
}

/// Through the gateway calling the services in process (the default): sign up and log
/// in with identity, then the returned token opens an account on the ledger; the same
/// call without a token is UNAUTHENTICATED; an RPC that is not built yet answers
/// UNIMPLEMENTED to an authenticated caller, and so do a method a known service does not
/// have and a service the gateway does not know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_from_identity_is_accepted_by_the_ledger_through_the_gateway() {
    token_scenario(GatewayUpstreams::InProcess).await;
}

/// The same scenario with the gateway reaching the services over their own ports, as a
/// separate `ferrobank gateway` process would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_scenario_through_a_gateway_calling_over_the_network() {
    token_scenario(GatewayUpstreams::Network).await;
}

async fn token_scenario(upstreams: GatewayUpstreams) {
    use ferrobank_proto::ledger::OpenAccountRequest;
    use ferrobank_proto::ledger::ledger_service_client::LedgerServiceClient;

    let (platform, _dbs) = common::start_with_redis_over(upstreams).await;
    let channel = common::connect(platform.gateway_addr).await;
    let running = common::run(platform);

    let (user, token) = common::customer(channel.clone(), "ada").await;

    let open = || OpenAccountRequest {
        request_id: uuid::Uuid::new_v4().to_string(),
        owner_id: user.id.clone(),
        currency_code: "USD".into(),
        ..Default::default()
    };
    let mut ledger = LedgerServiceClient::new(channel.clone());
    let account = ledger
        .open_account(bearer(open(), &token))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(account.owner_id, user.id);
    assert_eq!(account.currency_code, "USD");

    let refused = ledger.open_account(open()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    let mut payments =
        ferrobank_proto::payments::payments_service_client::PaymentsServiceClient::new(
            channel.clone(),
        );
    let status = payments
        .get_payment(bearer(
            ferrobank_proto::payments::GetPaymentRequest::default(),
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);

    // A path no service owns.
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let status = grpc
        .unary::<_, (), _>(
            bearer((), &token),
            "/ferrobank.nope.v1.NopeService/Call".parse().unwrap(),
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);

    // A method a known service does not have: the service itself answers (in process,
    // the gateway calls it without its router).
    grpc.ready().await.unwrap();
    let status = grpc
        .unary::<_, (), _>(
            bearer((), &token),
            "/ferrobank.ledger.v1.LedgerService/NoSuchMethod"
                .parse()
                .unwrap(),
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);

    // Reporting status is real and goes through the gateway to the ledger process.
    let mut reporting =
        ferrobank_proto::reporting::reporting_service_client::ReportingServiceClient::new(
            channel.clone(),
        );
    let bad = reporting
        .get_reporting_status(bearer(
            ferrobank_proto::reporting::GetReportingStatusRequest {
                consistency_token: "zz".into(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(reason(&bad).as_deref(), Some("ERROR_REASON_INVALID_FIELD"));
    assert!(
        bad.message().contains("consistency_token"),
        "{}",
        bad.message()
    );

    running.stop().await;
}
