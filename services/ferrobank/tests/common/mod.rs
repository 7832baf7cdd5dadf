//! Shared harness for the end-to-end tests: the three service databases and the whole
//! platform in process on port 0 (identity with the given keys and Redis, ledger,
//! payments, gateway), and bearer metadata.

// Each test binary uses a different subset.
#![allow(dead_code)]

use std::net::SocketAddr;

use ferrobank::{Platform, PlatformConfig};
use ferrobank_auth::keys::{KeyRing, PrivateKey};
use ferrobank_config::{GatewayUpstreams, ListenArgs};
use ferrobank_proto::identity as idpb;
use ferrobank_proto::identity::identity_service_client::IdentityServiceClient;
use ferrobank_testkit::TestDb;

/// Every listener on 127.0.0.1 port 0.
pub fn port_zero() -> ListenArgs {
    let any = "127.0.0.1:0".parse().unwrap();
    ListenArgs {
        gateway_addr: any,
        identity_addr: any,
        ledger_addr: any,
        payments_addr: any,
        gateway_upstreams: GatewayUpstreams::InProcess,
    }
}

/// Fresh migrated databases: identity, ledger, payments (in that order).
pub async fn databases() -> Vec<TestDb> {
    vec![
        TestDb::new("identity", ferrobank_identity::migrations)
            .await
            .unwrap(),
        TestDb::new("ledger", ferrobank_ledger::migrations)
            .await
            .unwrap(),
        TestDb::new("payments", ferrobank_payments::migrations)
            .await
            .unwrap(),
    ]
}

/// The platform on `dbs` (from [`databases`]), identity signing with `keys`,
/// revocations and throttling in the test Redis under a fresh prefix.
pub async fn start(dbs: &[TestDb], keys: KeyRing) -> Platform {
    start_with_upstreams(dbs, keys, GatewayUpstreams::InProcess).await
}

/// [`start`] with the gateway reaching the services as `upstreams` says.
pub async fn start_with_upstreams(
    dbs: &[TestDb],
    keys: KeyRing,
    upstreams: GatewayUpstreams,
) -> Platform {
    let identity_config = ferrobank_identity::IdentityConfig::with_keys(
        keys,
        Some(ferrobank_testkit::env().await.redis_url()),
        &ferrobank_testkit::redis_prefix(),
    );
    Platform::start_with_identity(
        PlatformConfig {
            listen: ListenArgs {
                gateway_upstreams: upstreams,
                ..port_zero()
            },
            identity: dbs[0].settings.clone(),
            ledger: dbs[1].settings.clone(),
            payments: dbs[2].settings.clone(),
            auth: ferrobank_config::AuthArgs::default(),
            gateway: None,
        },
        identity_config,
    )
    .await
    .unwrap()
}

/// Fresh databases and the platform on them with a new signing key.
pub async fn start_with_redis() -> (Platform, Vec<TestDb>) {
    start_with_redis_over(GatewayUpstreams::InProcess).await
}

/// [`start_with_redis`] with the gateway reaching the services as `upstreams` says.
pub async fn start_with_redis_over(upstreams: GatewayUpstreams) -> (Platform, Vec<TestDb>) {
    let dbs = databases().await;
    let keys = KeyRing::new(vec![PrivateKey::generate()]).unwrap();
    let platform = start_with_upstreams(&dbs, keys, upstreams).await;
    (platform, dbs)
}

/// `message` with `authorization: Bearer <token>`.
pub fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The password of every user the tests sign up.
pub const PASSWORD: &str = "correct horse battery staple";

/// Signs `username` up as a customer with [`PASSWORD`].
pub async fn sign_up(
    identity: &mut IdentityServiceClient<tonic::transport::Channel>,
    username: &str,
) -> idpb::User {
    identity
        .create_user(idpb::CreateUserRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            username: username.into(),
            email: format!("{username}@example.test"),
            display_name: username.into(),
            password: PASSWORD.into(),
            role: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
}

/// Logs `username` in with [`PASSWORD`].
pub async fn login(
    identity: &mut IdentityServiceClient<tonic::transport::Channel>,
    username: &str,
) -> idpb::LoginResponse {
    identity
        .login(idpb::LoginRequest {
            username: username.into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Signs `username` up through `channel` (the gateway) as a customer and logs in:
/// the new user and an access token.
pub async fn customer(channel: tonic::transport::Channel, username: &str) -> (idpb::User, String) {
    let mut identity = IdentityServiceClient::new(channel);
    let user = sign_up(&mut identity, username).await;
    (user, login(&mut identity, username).await.access_token)
}

/// A channel to `addr` (a port of the platform).
pub async fn connect(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A platform running in the background until [`Running::stop`].
pub struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Runs `platform` in the background.
pub fn run(platform: Platform) -> Running {
    Running {
        stop: platform.shutdown_handle(),
        task: tokio::spawn(platform.run()),
    }
}

impl Running {
    /// Stops the platform and asserts it stopped cleanly.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.task.await.unwrap().unwrap();
    }
}
