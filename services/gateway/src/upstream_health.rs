//! Mirrors each upstream service's health into the gateway's own health service, so
//! `grpc.health.v1.Health/Check` on the public port answers for every service.

use std::time::Duration;

use ferrobank_server::{Health, Serving};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as Wire;
use tonic_health::pb::health_client::HealthClient;

use crate::proxy::Upstream;

/// Registers every upstream service as NOT_SERVING, then polls each `every` and
/// publishes what it finds.
pub async fn spawn(
    reporter: Health,
    upstreams: Vec<(&'static str, Upstream)>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    for (service, _) in &upstreams {
        reporter
            .set_service_status(*service, Serving::NotServing)
            .await;
    }
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            for (service, upstream) in &upstreams {
                let status = check(upstream.clone(), service, every).await;
                reporter.set_service_status(*service, status).await;
            }
        }
    })
}

async fn check(upstream: Upstream, service: &str, timeout: Duration) -> Serving {
    let mut client = HealthClient::new(upstream);
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    match tokio::time::timeout(timeout, client.check(request)).await {
        Ok(Ok(resp)) if resp.get_ref().status == Wire::Serving as i32 => Serving::Serving,
        _ => Serving::NotServing,
    }
}
