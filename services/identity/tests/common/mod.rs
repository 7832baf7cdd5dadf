//! Test harness: an identity service on port 0 over a fresh database and a fresh Redis
//! key prefix, and helpers to call it.

#![allow(dead_code)]

use ferrobank_auth::keys::{KeyRing, PrivateKey};
use ferrobank_identity::{Identity, IdentityConfig};
use ferrobank_proto::identity as pb;
use ferrobank_proto::identity::identity_service_client::IdentityServiceClient;
use ferrobank_testkit::{TestDb, env, redis_prefix};
use tonic::transport::Channel;
use tonic::{Request, Status};

/// A password that passes the policy.
pub const PASSWORD: &str = "correct horse battery staple";

/// A running identity service.
pub struct Running {
    pub client: IdentityServiceClient<Channel>,
    pub channel: Channel,
    pub identity: Identity,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

/// A fresh database and Redis prefix, shared by the servers a test starts.
pub struct Fixture {
    pub db: TestDb,
    pub prefix: String,
}

impl Fixture {
    pub async fn new() -> Self {
        Self {
            db: TestDb::new("identity", ferrobank_identity::migrations)
                .await
                .unwrap(),
            prefix: redis_prefix(),
        }
    }

    /// A config with `keys` (the first signs) and this fixture's Redis prefix.
    pub async fn config(&self, keys: Vec<PrivateKey>) -> IdentityConfig {
        let ring = KeyRing::new(keys).unwrap();
        IdentityConfig::with_keys(ring, Some(env().await.redis_url()), &self.prefix)
    }

    /// Starts identity with `config` on port 0.
    pub async fn start(&self, config: IdentityConfig) -> Running {
        let identity = Identity::new(&self.db.settings, config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(identity.clone().serve(listener, async move {
            let _ = stopped.await;
        }));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Running {
            client: IdentityServiceClient::new(channel.clone()),
            channel,
            identity,
            stop: Some(stop),
            task: Some(task),
        }
    }
}

/// `msg` with `authorization: Bearer <token>`.
pub fn bearer<T>(msg: T, token: &str) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

/// The ErrorInfo reason of `status`.
pub fn reason(status: &Status) -> String {
    ferrobank_proto::status::reason(status).unwrap_or_default()
}

/// Signs up `username` with [`PASSWORD`].
pub async fn sign_up(client: &mut IdentityServiceClient<Channel>, username: &str) -> pb::User {
    client
        .create_user(pb::CreateUserRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            username: username.to_owned(),
            email: format!("{username}@example.com"),
            display_name: username.to_owned(),
            password: PASSWORD.to_owned(),
            role: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
}

/// Logs in.
pub async fn login(
    client: &mut IdentityServiceClient<Channel>,
    username: &str,
    password: &str,
) -> Result<pb::LoginResponse, Status> {
    client
        .login(pb::LoginRequest {
            username: username.to_owned(),
            password: password.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// GetUser of `id` with `token`.
pub async fn get_user(
    client: &mut IdentityServiceClient<Channel>,
    token: &str,
    id: &str,
) -> Result<pb::User, Status> {
    client
        .get_user(bearer(
            pb::GetUserRequest {
                user_id: id.to_owned(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().user.unwrap())
}
