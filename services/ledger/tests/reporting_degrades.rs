//! With the replica down (a proxy in front of it cut, as if the server stopped), the
//! ledger process starts and serves; reporting degrades as configured — to the primary,
//! or UNAVAILABLE with reason REPLICA_UNAVAILABLE — and recovers when the replica is back.

use std::time::Duration;

mod common;

use ferrobank_config::ReportingFallback;
use ferrobank_proto::reporting::reporting_service_client::ReportingServiceClient;
use ferrobank_proto::reporting::{DataSource, GetReportingStatusRequest};
use ferrobank_proto::status::reason;
use ferrobank_testkit::{TcpProxy, TestDb, env};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn serve(settings: &ferrobank_config::DatabaseSettings) -> common::Served {
    common::serve(
        ferrobank_ledger::Ledger::new(
            settings,
            std::sync::Arc::new(ferrobank_auth::DevHeaderAuthenticator),
        )
        .unwrap(),
    )
    .await
}

async fn status(
    channel: &Channel,
) -> Result<ferrobank_proto::reporting::GetReportingStatusResponse, tonic::Status> {
    ReportingServiceClient::new(channel.clone())
        .get_reporting_status({
            let mut request = tonic::Request::new(GetReportingStatusRequest::default());
            let principal = format!("admin:{}", uuid::Uuid::nil());
            request.metadata_mut().insert(
                ferrobank_auth::DEV_PRINCIPAL_HEADER,
                principal.parse().unwrap(),
            );
            request
        })
        .await
        .map(tonic::Response::into_inner)
}

fn source(resp: &ferrobank_proto::reporting::GetReportingStatusResponse) -> DataSource {
    DataSource::try_from(resp.freshness.as_ref().unwrap().data_source).unwrap()
}

/// Waits (bounded) on the health Watch stream until `service` reports `want`.
async fn wait_health(channel: &Channel, service: &str, want: ServingStatus) {
    let mut stream = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let reached = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(update) = stream.message().await.unwrap() {
            if update.status == want as i32 {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(reached, Ok(true), "{service} never reached {want:?}");
}

async fn replica_proxy() -> (TestDb, TcpProxy) {
    let env = env().await;
    let db = TestDb::new("ledger", ferrobank_ledger::migrations)
        .await
        .unwrap();
    env.wait_for_replica().await.unwrap();
    let proxy = TcpProxy::start(env.replica_addr().expect("stack has a replica"))
        .await
        .unwrap();
    (db, proxy)
}

/// Fallback = primary: started with the replica down, the process serves, reports come
/// from the primary and say so; once the replica is back they come from it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_down_falls_back_to_primary() {
    let (db, proxy) = replica_proxy().await;
    proxy.cut();
    let settings = db
        .settings_with_reporting_at(proxy.addr, ReportingFallback::Primary)
        .unwrap();
    let running = serve(&settings).await;

    wait_health(
        &running.channel,
        ferrobank_ledger::LEDGER_SERVICE,
        ServingStatus::Serving,
    )
    .await;
    wait_health(
        &running.channel,
        ferrobank_ledger::REPORTING_SERVICE,
        ServingStatus::Serving,
    )
    .await;
    let down = status(&running.channel).await.unwrap();
    assert_eq!(source(&down), DataSource::Primary);
    assert!(!down.replica_reachable);
    assert!(down.primary_fallback_enabled);

    proxy.restore();
    let up = status(&running.channel).await.unwrap();
    assert_eq!(source(&up), DataSource::Replica);
    assert!(up.replica_reachable);
    assert!(up.replica_in_recovery, "reporting pool is not on a standby");

    let _ = running.stop.send(());
    running.task.await.unwrap().unwrap();
}

/// Fallback = unavailable: reports answer UNAVAILABLE with REPLICA_UNAVAILABLE and
/// reporting health turns NOT_SERVING while the ledger itself keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_down_answers_unavailable_when_configured() {
    let (db, proxy) = replica_proxy().await;
    let settings = db
        .settings_with_reporting_at(proxy.addr, ReportingFallback::Unavailable)
        .unwrap();
    let running = serve(&settings).await;

    let up = status(&running.channel).await.unwrap();
    assert_eq!(source(&up), DataSource::Replica);

    proxy.cut();
    let err = status(&running.channel).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(
        reason(&err).as_deref(),
        Some("ERROR_REASON_REPLICA_UNAVAILABLE")
    );
    wait_health(
        &running.channel,
        ferrobank_ledger::REPORTING_SERVICE,
        ServingStatus::NotServing,
    )
    .await;
    wait_health(
        &running.channel,
        ferrobank_ledger::LEDGER_SERVICE,
        ServingStatus::Serving,
    )
    .await;

    let _ = running.stop.send(());
    running.task.await.unwrap().unwrap();
}
