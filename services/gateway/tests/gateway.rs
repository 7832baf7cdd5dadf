//! The gateway's tower stack against real Redis and an in-process upstream: shared rate
//! limits across replicas (batched admissions included), idempotency (replay, concurrent duplicate, mismatched body),
//! one trace across gateway and service, the Redis fallback when Redis is cut, and the
//! refusals for bad input, deadlines and per-caller floods.

mod support;

use std::time::{Duration, Instant};

use ferrobank_gateway::{Batching, REPLAY_HEADER, Rate};
use ferrobank_testkit::TcpProxy;
use support::{Gateway, HOLD_AMOUNT, Upstream, config, create_transfer, get_account, reason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic_types::StatusExt;
use uuid::Uuid;

/// `request` as a child of span 00f067aa0ba902b7 in trace `trace_id` (W3C traceparent).
fn with_traceparent<T>(mut request: tonic::Request<T>, trace_id: &str) -> tonic::Request<T> {
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .expect("ascii"),
    );
    request
}

/// The upstream saw a minted request id (echoed to the client too), `user`'s
/// credentials and the default deadline.
fn assert_forwarded<T>(response: &tonic::Response<T>, user: Uuid) {
    let minted = header(response, "x-request-id");
    assert_eq!(minted.len(), 36);
    assert_eq!(header(response, "echo-x-request-id"), minted);
    assert_eq!(
        header(response, "echo-x-ferrobank-dev-principal"),
        format!("customer:{user}")
    );
    assert_eq!(header(response, "echo-grpc-timeout"), "10000m");
}

fn header<T>(response: &tonic::Response<T>, name: &str) -> String {
    response
        .metadata()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Two gateways sharing one Redis enforce one read limit together: the burst is spent
/// across both, the next call is RESOURCE_EXHAUSTED with RATE_LIMITED and a retry
/// delay, `x-ratelimit-*` metadata rides on every answer, and another principal is
/// unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_shared_by_gateway_replicas() {
    let upstream = Upstream::start().await;
    let mut cfg = config(upstream.addr).await;
    // One call a minute sustained: nothing refills while the test runs.
    cfg.rates[0] = Rate::new(1, 3);
    let one = Gateway::start(cfg.clone()).await;
    let two = Gateway::start(cfg).await;
    let (mut c1, mut c2) = (one.ledger().await, two.ledger().await);
    let alice = Uuid::new_v4();

    let mut remaining = Vec::new();
    for i in 0..3 {
        let client = if i % 2 == 0 { &mut c1 } else { &mut c2 };
        let response = client
            .get_account(get_account(alice))
            .await
            .expect("within the burst");
        assert_eq!(header(&response, "x-ratelimit-limit"), "3");
        remaining.push(header(&response, "x-ratelimit-remaining"));
    }
    assert_eq!(remaining, ["2", "1", "0"]);

    let refused = c2
        .get_account(get_account(alice))
        .await
        .expect_err("over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(reason(&refused), "ERROR_REASON_RATE_LIMITED");
    let retry = refused
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo");
    assert!(retry > Duration::from_secs(50), "{retry:?}");
    assert_eq!(
        refused
            .metadata()
            .get("x-ratelimit-remaining")
            .map(|v| v.to_str().ok()),
        Some(Some("0"))
    );

    let bob = Uuid::new_v4();
    let response = c1
        .get_account(get_account(bob))
        .await
        .expect("bob has his own bucket");
    assert_eq!(header(&response, "x-ratelimit-remaining"), "2");
}

/// A busy caller's admissions, granted in batches, stay charged to the one shared
/// bucket: one replica's calls count `x-ratelimit-remaining` down one by one, the
/// other replica's next call sees what the first still holds as spent, and spending
/// the rest from both admits exactly the burst, not a call more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_admissions_stay_within_the_shared_limit() {
    let upstream = Upstream::start().await;
    let mut cfg = config(upstream.addr).await;
    // One call a minute sustained: nothing refills while the test runs. Batches of up
    // to 8 (an eighth of the burst), held far longer than the test takes.
    cfg.rates[0] = Rate::new(1, 64);
    cfg.rate_batching = Batching {
        max: 8,
        hold: Duration::from_secs(600),
    };
    let one = Gateway::start(cfg.clone()).await;
    let two = Gateway::start(cfg).await;
    let (mut c1, mut c2) = (one.ledger().await, two.ledger().await);
    let alice = Uuid::new_v4();

    let mut remaining = Vec::new();
    for _ in 0..30 {
        let response = c1
            .get_account(get_account(alice))
            .await
            .expect("within the burst");
        remaining.push(header(&response, "x-ratelimit-remaining"));
    }
    let expected: Vec<String> = (34..64).rev().map(|n: u32| n.to_string()).collect();
    assert_eq!(remaining, expected);
    // Replica one was granted 1, 2, 4, 8, 8 and 8 admissions and holds the last one;
    // asking every call, replica two would see 33 left.
    let response = c2
        .get_account(get_account(alice))
        .await
        .expect("within the burst");
    assert_eq!(header(&response, "x-ratelimit-remaining"), "32");

    // A replica is refused only once it holds nothing, so when both have been, every
    // admission granted was used.
    let mut admitted = 31;
    let mut refused = [false, false];
    for i in 0.. {
        let client = if i % 2 == 0 { &mut c1 } else { &mut c2 };
        match client.get_account(get_account(alice)).await {
            Ok(_) => admitted += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                refused[i % 2] = true;
                if refused == [true, true] {
                    break;
                }
            }
        }
        assert!(i < 200, "never refused; {admitted} admitted");
    }
    assert_eq!(admitted, 64);
}

/// A replayed idempotent mutation returns the stored response (same transfer id,
/// marked as a replay) without reaching the service again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_replay_returns_stored_response() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(config(upstream.addr).await).await;
    let mut client = gateway.ledger().await;
    let user = Uuid::new_v4();

    let first = client
        .create_transfer(create_transfer(user, 100, Some("key-1")))
        .await
        .expect("first call");
    let replay = client
        .create_transfer(create_transfer(user, 100, Some("key-1")))
        .await
        .expect("replay");

    assert_eq!(replay.get_ref(), first.get_ref());
    assert_eq!(header(&replay, REPLAY_HEADER), "true");
    assert_eq!(header(&first, REPLAY_HEADER), "");
    assert_eq!(upstream.transfers(), 1);

    // Another principal's identical key is a different scope.
    client
        .create_transfer(create_transfer(Uuid::new_v4(), 100, Some("key-1")))
        .await
        .expect("other principal");
    assert_eq!(upstream.transfers(), 2);
}

/// While the first call with a key is in flight, a duplicate is ABORTED with
/// IDEMPOTENCY_IN_PROGRESS; once the first finishes, the duplicate replays it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicate_is_aborted_in_progress() {
    let mut upstream = Upstream::start().await;
    let gateway = Gateway::start(config(upstream.addr).await).await;
    let mut client = gateway.ledger().await;
    let user = Uuid::new_v4();

    let first = tokio::spawn({
        let mut client = client.clone();
        async move {
            client
                .create_transfer(create_transfer(user, HOLD_AMOUNT, Some("dup")))
                .await
        }
    });
    tokio::time::timeout(Duration::from_secs(5), upstream.entered.recv())
        .await
        .expect("the first call reaches the service");

    let duplicate = client
        .create_transfer(create_transfer(user, HOLD_AMOUNT, Some("dup")))
        .await
        .expect_err("in progress");
    assert_eq!(duplicate.code(), Code::Aborted);
    assert_eq!(reason(&duplicate), "ERROR_REASON_IDEMPOTENCY_IN_PROGRESS");

    upstream.release(1);
    let first = first.await.expect("join").expect("first call succeeds");
    let replay = client
        .create_transfer(create_transfer(user, HOLD_AMOUNT, Some("dup")))
        .await
        .expect("replay after completion");
    assert_eq!(replay.get_ref(), first.get_ref());
    assert_eq!(upstream.transfers(), 1);
}

/// The same key with a different request body is INVALID_ARGUMENT
/// (IDEMPOTENCY_KEY_REUSED) and never reaches the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_with_another_body_is_invalid_argument() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(config(upstream.addr).await).await;
    let mut client = gateway.ledger().await;
    let user = Uuid::new_v4();

    client
        .create_transfer(create_transfer(user, 100, Some("k")))
        .await
        .expect("first call");
    let status = client
        .create_transfer(create_transfer(user, 200, Some("k")))
        .await
        .expect_err("another body");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(reason(&status), "ERROR_REASON_IDEMPOTENCY_KEY_REUSED");
    assert_eq!(upstream.transfers(), 1);
}

/// With Redis cut mid-test the gateway keeps serving per its default fallback: reads
/// are limited by the in-process limiter (answering quickly, and still refusing past
/// the burst), and keyed mutations go through without gateway idempotency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cut_falls_back_to_local_limits() {
    let upstream = Upstream::start().await;
    let redis_url =
        url::Url::parse(ferrobank_testkit::env().await.redis_url().expose()).expect("redis url");
    let target = format!(
        "{}:{}",
        redis_url.host_str().expect("host"),
        redis_url.port().unwrap_or(6379)
    );
    let target = tokio::net::lookup_host(target)
        .await
        .expect("resolve redis")
        .next()
        .expect("an address");
    let proxy = TcpProxy::start(target).await.expect("proxy");
    let mut proxied = redis_url.clone();
    proxied.set_host(Some("127.0.0.1")).expect("host");
    proxied.set_port(Some(proxy.addr.port())).expect("port");

    let mut cfg = config(upstream.addr).await;
    cfg.redis_url = Some(proxied.as_str().parse().expect("redis url"));
    cfg.rates[0] = Rate::new(1, 3);
    let gateway = Gateway::start(cfg).await;
    let mut client = gateway.ledger().await;
    let user = Uuid::new_v4();

    let response = client
        .get_account(get_account(user))
        .await
        .expect("via redis");
    assert_eq!(header(&response, "x-ratelimit-remaining"), "2");

    proxy.cut();
    let started = Instant::now();
    // The local limiter starts with a full bucket of its own.
    for _ in 0..3 {
        client
            .get_account(get_account(user))
            .await
            .expect("local limiter admits");
    }
    let refused = client
        .get_account(get_account(user))
        .await
        .expect_err("local limit");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    client
        .create_transfer(create_transfer(user, 100, Some("while-down")))
        .await
        .expect("mutation passes without idempotency");
}

/// One request yields a gateway span and a service span in the same trace — the trace
/// the client started with its `traceparent`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_gateway_and_service() {
    let exporter = ferrobank_testkit::export_spans_in_memory();

    let upstream = Upstream::start().await;
    let gateway = Gateway::start(config(upstream.addr).await).await;
    let mut client = gateway.ledger().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let request = with_traceparent(get_account(Uuid::new_v4()), trace_id);
    let response = client.get_account(request).await.expect("call");
    let forwarded = header(&response, "echo-traceparent");
    assert!(forwarded.contains(trace_id), "{forwarded}");
    assert!(
        !forwarded.contains("00f067aa0ba902b7"),
        "the gateway's own span is the parent"
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    let spans = loop {
        let spans = exporter.get_finished_spans().expect("spans");
        if spans.len() >= 2 || Instant::now() > deadline {
            break spans;
        }
        tokio::task::yield_now().await;
    };
    let gateway_span = spans
        .iter()
        .find(|s| s.name == "/ferrobank.ledger.v1.LedgerService/GetAccount")
        .expect("a gateway span");
    let service_span = spans
        .iter()
        .find(|s| s.name == "ledger.GetAccount")
        .expect("a service span");
    assert_eq!(gateway_span.span_context.trace_id().to_string(), trace_id);
    assert_eq!(service_span.span_context.trace_id().to_string(), trace_id);
    let code = gateway_span
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == "rpc.grpc.status_code")
        .map(|kv| kv.value.clone());
    assert_eq!(
        code,
        Some(opentelemetry::Value::I64(0)),
        "the gateway span carries the call's gRPC code"
    );
    assert_eq!(
        service_span.parent_span_id,
        gateway_span.span_context.span_id()
    );
}

/// Verifies a bearer token with a real `JwtAuthenticator` (its keys in process, no
/// revocation store, failing open) when the call has one, else trusts the dev header.
struct TokenOrDev {
    jwt: ferrobank_auth::JwtAuthenticator,
    key: ferrobank_auth::keys::PrivateKey,
}

impl TokenOrDev {
    fn new() -> Self {
        let key = ferrobank_auth::keys::PrivateKey::generate();
        let jwt = ferrobank_auth::JwtAuthenticator::new(
            ferrobank_auth::jwt::Validation {
                issuer: "iss".into(),
                audience: "aud".into(),
                leeway_secs: 5,
            },
            std::sync::Arc::new(ferrobank_auth::key_source::LocalKeys::new(vec![
                key.public(),
            ])),
            None,
            ferrobank_config::RevocationFallback::Open,
        );
        Self { jwt, key }
    }

    /// A valid token for `user`.
    fn token(&self, user: Uuid) -> String {
        let now = ferrobank_auth::unix_now();
        ferrobank_auth::jwt::sign(
            &ferrobank_auth::jwt::Claims {
                iss: "iss".into(),
                aud: "aud".into(),
                sub: user.to_string(),
                role: "customer".into(),
                sid: Some(Uuid::new_v4().to_string()),
                jti: Uuid::new_v4().to_string(),
                iat: now,
                nbf: Some(now),
                exp: now + 600,
            },
            &self.key,
        )
    }
}

#[tonic::async_trait]
impl ferrobank_auth::Authenticator for TokenOrDev {
    async fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<ferrobank_auth::Principal, tonic::Status> {
        Ok(self.authenticate_split(metadata).await?.principal)
    }

    async fn authenticate_split(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<ferrobank_auth::Authentication, tonic::Status> {
        if metadata.get("authorization").is_some() {
            self.jwt.authenticate_split(metadata).await
        } else {
            ferrobank_auth::DevHeaderAuthenticator
                .authenticate_split(metadata)
                .await
        }
    }
}

/// A gateway calling its upstream in process (as in `ferrobank all`) forwards what a
/// network hop would — request id, credentials, deadline, trace context — and none of
/// its own request state but its verifier's vouch for the caller's token; every layer
/// still applies (an idempotent replay does not
/// reach the service again), and a method the service does not have is UNIMPLEMENTED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_upstream_gets_what_the_wire_would_carry() {
    let upstream = Upstream::start().await;
    let mut cfg = config(upstream.addr).await;
    let auth = std::sync::Arc::new(TokenOrDev::new());
    cfg.auth = auth.clone();
    let routes = upstream.routes();
    cfg.in_process = Some(ferrobank_gateway::InProcess {
        identity: routes.clone(),
        ledger: routes.clone(),
        payments: routes,
        services: Vec::new(),
    });
    // Unreachable URIs: every call must go in process.
    let nowhere: ferrobank_config::http_uri::Uri = "http://127.0.0.1:9".parse().expect("uri");
    cfg.ledger = vec![nowhere.clone()];
    cfg.identity = vec![nowhere.clone()];
    cfg.payments = vec![nowhere];
    let unchecked = Gateway::start(ferrobank_gateway::GatewayConfig {
        auth: std::sync::Arc::new(ferrobank_auth::DevHeaderAuthenticator),
        ..cfg.clone()
    })
    .await;
    let gateway = Gateway::start(cfg).await;
    let mut client = gateway.ledger().await;
    let user = Uuid::new_v4();

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let request = with_traceparent(get_account(user), trace_id);
    let response = client.get_account(request).await.expect("call");
    assert_forwarded(&response, user);
    assert!(header(&response, "echo-traceparent").contains(trace_id));
    assert_eq!(header(&response, "echo-gateway-state"), "");
    assert_eq!(header(&response, "x-ratelimit-limit"), "200");
    // No token, nothing vouched; with one, the verifier's vouch is handed on for
    // exactly that token.
    assert_eq!(header(&response, "echo-vouched"), "");
    let token = auth.token(user);
    let with_token = || {
        let mut request = get_account(user);
        request
            .metadata_mut()
            .remove(ferrobank_auth::DEV_PRINCIPAL_HEADER);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
        request
    };
    let response = client.get_account(with_token()).await.expect("call");
    assert_eq!(header(&response, "echo-vouched"), "vouched");
    // An authenticator that verifies no tokens vouches for nothing.
    let response = unchecked
        .ledger()
        .await
        .get_account(get_account(user))
        .await
        .expect("call");
    assert_eq!(header(&response, "echo-vouched"), "");

    let key = Uuid::new_v4().to_string();
    let first = client
        .create_transfer(create_transfer(user, 5, Some(&key)))
        .await
        .expect("first");
    let replay = client
        .create_transfer(create_transfer(user, 5, Some(&key)))
        .await
        .expect("replay");
    assert_eq!(header(&replay, REPLAY_HEADER), "true");
    assert_eq!(
        first.get_ref().transfer.as_ref().map(|t| t.id.clone()),
        replay.get_ref().transfer.as_ref().map(|t| t.id.clone())
    );
    assert_eq!(upstream.transfers(), 1);

    let mut grpc = tonic::client::Grpc::new(gateway.channel().await);
    grpc.ready().await.expect("ready");
    let status = grpc
        .unary::<_, (), _>(
            support::as_user(user, ()),
            "/ferrobank.ledger.v1.LedgerService/NoSuchMethod"
                .parse()
                .expect("path"),
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await
        .expect_err("no such method");
    assert_eq!(status.code(), Code::Unimplemented);
}

/// Signs every caller in locally but fails the remote (revocation) check, as for a
/// revoked token.
struct RevokedEverywhere;

#[tonic::async_trait]
impl ferrobank_auth::Authenticator for RevokedEverywhere {
    async fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<ferrobank_auth::Principal, tonic::Status> {
        let split = self.authenticate_split(metadata).await?;
        split.pending.run().await?;
        unreachable!("the check always fails")
    }

    async fn authenticate_split(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<ferrobank_auth::Authentication, tonic::Status> {
        let principal = ferrobank_auth::DevHeaderAuthenticator
            .authenticate(metadata)
            .await?;
        let revoked = Box::pin(async { Err(tonic::Status::unauthenticated("revoked")) });
        Ok(ferrobank_auth::Authentication {
            principal,
            pending: ferrobank_auth::PendingCheck::Other(revoked),
            vouch: None,
        })
    }
}

/// The revocation lookup and the rate-limit decision run together, but a call whose
/// token fails the lookup never reaches the service; its attempt still counts against
/// the caller's limit (once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_even_though_its_rate_limit_ran_alongside() {
    let upstream = Upstream::start().await;
    let mut cfg = config(upstream.addr).await;
    cfg.rates[1] = Rate::new(1, 3);
    let limiter = cfg.clone();
    cfg.auth = std::sync::Arc::new(RevokedEverywhere);
    let revoked = Gateway::start(cfg).await;
    let open = Gateway::start(limiter).await;
    let user = Uuid::new_v4();

    let refused = revoked
        .ledger()
        .await
        .create_transfer(create_transfer(user, 5, None))
        .await
        .expect_err("revoked");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(refused.message(), "revoked");
    assert_eq!(upstream.transfers(), 0);

    // Same Redis, same caller: the refused attempt took one of the three.
    let admitted = open
        .ledger()
        .await
        .create_transfer(create_transfer(user, 5, None))
        .await
        .expect("within the limit");
    assert_eq!(header(&admitted, "x-ratelimit-remaining"), "1");
    assert_eq!(upstream.transfers(), 1);
}

/// A gateway verifying real tokens against a real revocation store in its own Redis,
/// beside its rate limits: the lookup and the decision go in one pipeline. A live token
/// is admitted and counted once — also after Redis lost its scripts (as after a
/// restart), which a pipeline does not reload by itself; after its session is revoked,
/// its calls are TOKEN_REVOKED and never reach the service (each attempt still counted
/// once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_is_refused_by_the_gateway_itself() {
    let upstream = Upstream::start().await;
    let cfg = config(upstream.addr).await;
    let redis_url = cfg.redis_url.clone().expect("test Redis");
    let mut redis = redis::Client::open(redis_url.expose())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async::<()>(&mut redis)
        .await
        .expect("script flush");
    revoked_session_scenario(upstream, cfg, redis_url).await;
}

/// The same with the revocation store named by another URL (here the same server and
/// database, spelled differently): the gateway cannot know it is its own Redis, so the
/// lookup goes on the store's connection, alongside the decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_is_refused_with_the_store_on_another_connection() {
    let upstream = Upstream::start().await;
    let cfg = config(upstream.addr).await;
    let redis_url = cfg.redis_url.clone().expect("test Redis");
    let mut other = url::Url::parse(redis_url.expose()).expect("redis url");
    other.set_path("/0");
    assert_ne!(other.as_str(), redis_url.expose());
    revoked_session_scenario(upstream, cfg, other.as_str().parse().expect("redis url")).await;
}

async fn revoked_session_scenario(
    upstream: Upstream,
    mut cfg: ferrobank_gateway::GatewayConfig,
    revocation_url: ferrobank_config::RedisUrl,
) {
    use ferrobank_auth::jwt::{Claims, Validation, sign};
    use ferrobank_auth::key_source::LocalKeys;
    use ferrobank_auth::keys::PrivateKey;
    use ferrobank_auth::revocation::Revocations;

    cfg.rates[1] = Rate::new(1, 5);
    let prefix = cfg.redis_prefix.clone();
    let revocations = Revocations::new(
        &revocation_url,
        &ferrobank_testkit::redis_prefix(),
        Duration::from_secs(1),
    )
    .expect("revocation store");
    let key = PrivateKey::generate();
    let validation = Validation {
        issuer: "iss".into(),
        audience: "aud".into(),
        leeway_secs: 5,
    };
    cfg.auth = std::sync::Arc::new(ferrobank_auth::JwtAuthenticator::new(
        validation,
        std::sync::Arc::new(LocalKeys::new(vec![key.public()])),
        Some(revocations.clone()),
        ferrobank_config::RevocationFallback::Closed,
    ));
    let gateway = Gateway::start(cfg).await;
    let mut client = gateway.ledger().await;

    let user = Uuid::now_v7();
    let now = ferrobank_auth::unix_now();
    let token = |sid: Uuid| {
        sign(
            &Claims {
                iss: "iss".into(),
                aud: "aud".into(),
                sub: user.to_string(),
                role: "customer".into(),
                sid: Some(sid.to_string()),
                jti: Uuid::new_v4().to_string(),
                iat: now,
                nbf: Some(now),
                exp: now + 600,
            },
            &key,
        )
    };
    let call = |token: &str| {
        let mut request = create_transfer(user, 5, None);
        request
            .metadata_mut()
            .remove(ferrobank_auth::DEV_PRINCIPAL_HEADER);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
        request
    };
    let (doomed_sid, other_sid) = (Uuid::new_v4(), Uuid::new_v4());
    let (doomed, other) = (token(doomed_sid), token(other_sid));

    let admitted = client.create_transfer(call(&doomed)).await.expect("live");
    assert_eq!(header(&admitted, "x-ratelimit-remaining"), "4");
    assert_eq!(upstream.transfers(), 1);
    // Counted in Redis, not by the in-process fallback.
    let bucket = format!("{prefix}rl:write:u:{user}");
    let mut redis = redis::Client::open(revocation_url.expose())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let counted: bool = redis::cmd("EXISTS")
        .arg(&bucket)
        .query_async(&mut redis)
        .await
        .expect("exists");
    assert!(counted, "no Redis bucket {bucket}");

    revocations
        .revoke_sessions(&[doomed_sid], Duration::from_secs(600))
        .await
        .expect("revoke");
    for _ in 0..2 {
        let refused = client
            .create_transfer(call(&doomed))
            .await
            .expect_err("revoked");
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert_eq!(reason(&refused), "ERROR_REASON_TOKEN_REVOKED");
    }
    assert_eq!(upstream.transfers(), 1);

    // Same caller, another session: one unit per attempt, refused ones included.
    let admitted = client.create_transfer(call(&other)).await.expect("live");
    assert_eq!(header(&admitted, "x-ratelimit-remaining"), "1");
    assert_eq!(upstream.transfers(), 2);
}

/// What is logged while a call runs — in the layers below the call's span, here the
/// auth layer's refusal, and the call's own last line — carries the call's span with
/// its method and request id: a call scope, as with production's JSON logs when no
/// spans are exported...
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_logged_during_a_call_carry_its_request_id() {
    lines_logged_during_a_call_scenario(true).await;
}

/// ... or a real span, as with pretty logs or span export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_logged_during_a_call_carry_its_span() {
    lines_logged_during_a_call_scenario(false).await;
}

async fn lines_logged_during_a_call_scenario(call_scopes: bool) {
    let logs = ferrobank_testkit::capture_json_logs(call_scopes);
    assert_eq!(ferrobank_telemetry::call_scopes(), call_scopes);
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(config(upstream.addr).await).await;
    let mut request = tonic::Request::new(ferrobank_proto::ledger::GetAccountRequest::default());
    request
        .metadata_mut()
        .insert("x-request-id", "log-me-7".parse().expect("ascii"));
    let status = gateway
        .ledger()
        .await
        .get_account(request)
        .await
        .expect_err("no credentials");
    assert_eq!(status.code(), Code::Unauthenticated);

    let lines = logs.lines();
    let logged = |message: &str| {
        lines
            .iter()
            .find(|line| line["message"] == message)
            .unwrap_or_else(|| panic!("no line {message:?} in {lines:#?}"))
            .clone()
    };
    for line in [
        logged("request refused: unauthenticated"),
        logged("call finished"),
    ] {
        let span = &line["span"];
        assert_eq!(span["name"], "grpc", "{line}");
        assert_eq!(span["request_id"], "log-me-7", "{line}");
        assert_eq!(
            span["rpc.method"], "/ferrobank.ledger.v1.LedgerService/GetAccount",
            "{line}"
        );
    }
    assert_eq!(logged("call finished")["code"], "UNAUTHENTICATED");
}

/// Identity and plumbing at the door: request ids are minted or echoed and reach the
/// service, credentials are forwarded unchanged, a call without them is
/// UNAUTHENTICATED, an unknown service UNIMPLEMENTED, and the default deadline goes
/// upstream as `grpc-timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_credentials_and_unknown_services() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(config(upstream.addr).await).await;
    let mut client = gateway.ledger().await;
    let user = Uuid::new_v4();

    let response = client.get_account(get_account(user)).await.expect("call");
    assert_forwarded(&response, user);

    let mut request = get_account(user);
    request
        .metadata_mut()
        .insert("x-request-id", "client-id-7".parse().expect("ascii"));
    request
        .metadata_mut()
        .insert("authorization", "Bearer opaque".parse().expect("ascii"));
    let response = client.get_account(request).await.expect("call");
    assert_eq!(header(&response, "x-request-id"), "client-id-7");
    assert_eq!(header(&response, "echo-x-request-id"), "client-id-7");
    assert_eq!(header(&response, "echo-authorization"), "Bearer opaque");
    // Over the network the gateway cannot vouch for anything.
    assert_eq!(header(&response, "echo-vouched"), "");

    let anonymous = client
        .get_account(ferrobank_proto::ledger::GetAccountRequest::default())
        .await
        .expect_err("no credentials");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    assert_eq!(reason(&anonymous), "ERROR_REASON_UNAUTHENTICATED");
    assert!(anonymous.metadata().get("x-request-id").is_some());

    let mut grpc = tonic::client::Grpc::new(gateway.channel().await);
    grpc.ready().await.expect("ready");
    let status = grpc
        .unary::<_, (), _>(
            tonic::Request::new(()),
            "/ferrobank.nope.v1.NopeService/Call".parse().expect("path"),
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await
        .expect_err("unknown service");
    assert_eq!(status.code(), Code::Unimplemented);
}

/// Bad input never panics: a message over the configured maximum is
/// RESOURCE_EXHAUSTED, a client deadline above the cap is cut to the cap and answered
/// DEADLINE_EXCEEDED by the gateway, and a plain HTTP/1.1 request gets a gRPC error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_late_and_non_grpc_requests_get_grpc_errors() {
    let upstream = Upstream::start().await;
    let mut cfg = config(upstream.addr).await;
    cfg.max_message_bytes = 1024;
    cfg.max_timeout = Duration::from_millis(300);
    let gateway = Gateway::start(cfg).await;
    let mut client = gateway.ledger().await;
    let user = Uuid::new_v4();

    let mut big = get_account(user);
    big.get_mut().account_id = "x".repeat(4096);
    let status = client.get_account(big).await.expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted);
    // The refusal leaves the upstream connection healthy for the next call.
    client
        .get_account(get_account(user))
        .await
        .expect("next call");

    let mut late = create_transfer(user, HOLD_AMOUNT, None);
    late.set_timeout(Duration::from_secs(30));
    let started = Instant::now();
    let status = client
        .create_transfer(late)
        .await
        .expect_err("held past the cap");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(reason(&status), "ERROR_REASON_DEADLINE_EXCEEDED");
    upstream.release(1);

    let mut tcp = tokio::net::TcpStream::connect(gateway.addr)
        .await
        .expect("connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
        .await
        .expect("answered")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.contains("grpc-status: 3"), "{answer}");
}

/// A principal flooding the gateway fills only its own in-flight share: its next call
/// is refused at once, while another principal's call goes straight through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_principal_does_not_starve_another() {
    let mut upstream = Upstream::start().await;
    let mut cfg = config(upstream.addr).await;
    cfg.max_in_flight_per_caller = 2;
    let gateway = Gateway::start(cfg).await;
    let client = gateway.ledger().await;
    let flooder = Uuid::new_v4();

    let held: Vec<_> = (0..2)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                client
                    .create_transfer(create_transfer(flooder, HOLD_AMOUNT, None))
                    .await
            })
        })
        .collect();
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(5), upstream.entered.recv())
            .await
            .expect("held call in flight");
    }

    let status = client
        .clone()
        .get_account(get_account(flooder))
        .await
        .expect_err("over its share");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(reason(&status), "ERROR_REASON_RATE_LIMITED");

    let started = Instant::now();
    client
        .clone()
        .get_account(get_account(Uuid::new_v4()))
        .await
        .expect("another principal is served");
    assert!(started.elapsed() < Duration::from_secs(1));

    upstream.release(2);
    for call in held {
        call.await.expect("join").expect("held call finishes");
    }
}

/// A browser's gRPC-Web call (HTTP/1.1, `application/grpc-web`) is served: health
/// answers through the gateway with the status in the body's trailer frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_calls_are_served() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(config(upstream.addr).await).await;

    // An empty HealthCheckRequest: one uncompressed frame of length 0.
    let request = b"POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: gateway\r\n\
content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\ncontent-length: 5\r\n\
Connection: close\r\n\r\n\0\0\0\0\0";
    let answer = http1(&gateway, request).await;
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains("application/grpc-web"), "{answer}");
    assert!(answer.contains("grpc-status:0"), "{answer}");
}

/// The value of the first sample of `name` whose labels include every `label`
/// (`key="value"`) in Prometheus text output.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `/metrics` counts what happened: requests by method and code, their latency,
/// rate-limit refusals by class, idempotent replays by method, and unreachable
/// upstreams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_refusals_replays_and_upstream_errors() {
    let metrics = ferrobank_telemetry::install_metrics_recorder().expect("recorder");
    let upstream = Upstream::start().await;
    let mut cfg = config(upstream.addr).await;
    cfg.rates[0] = Rate::new(1, 1);
    let gateway = Gateway::start(cfg).await;
    let mut client = gateway.ledger().await;
    let user = Uuid::new_v4();

    client
        .get_account(get_account(user))
        .await
        .expect("within the burst");
    let refused = client
        .get_account(get_account(user))
        .await
        .expect_err("over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    for _ in 0..2 {
        client
            .create_transfer(create_transfer(user, 100, Some("metrics-key")))
            .await
            .expect("first call, then its replay");
    }

    // An upstream that is not listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let down = closed.local_addr().expect("addr");
    drop(closed);
    let dead = Gateway::start(config(down).await).await;
    let status = dead
        .ledger()
        .await
        .get_account(get_account(Uuid::new_v4()))
        .await
        .expect_err("upstream down");
    assert_eq!(status.code(), Code::Unavailable);

    let text = metrics.render();
    let get = r#"method="/ferrobank.ledger.v1.LedgerService/GetAccount""#;
    let create = r#"method="/ferrobank.ledger.v1.LedgerService/CreateTransfer""#;
    assert_eq!(
        sample(&text, "gateway_requests_total", &[get, r#"code="OK""#]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "gateway_requests_total",
            &[get, r#"code="RESOURCE_EXHAUSTED""#]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "gateway_requests_total",
            &[get, r#"code="UNAVAILABLE""#]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "gateway_requests_total", &[create, r#"code="OK""#]),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "gateway_rate_limited_total", &[r#"class="read""#]),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "gateway_idempotent_replays_total", &[create]),
        Some(1.0)
    );
    assert!(sample(&text, "gateway_upstream_errors_total", &[]) >= Some(1.0));
    assert_eq!(
        sample(&text, "gateway_request_duration_seconds_count", &[get]),
        Some(3.0)
    );
    assert!(sample(&text, "gateway_request_duration_seconds_sum", &[create]) > Some(0.0));
}

/// Sends one raw HTTP/1.1 request to the gateway and returns the lowercased answer.
async fn http1(gateway: &Gateway, request: &[u8]) -> String {
    let mut tcp = tokio::net::TcpStream::connect(gateway.addr)
        .await
        .expect("connect");
    tcp.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
        .await
        .expect("answered")
        .expect("read");
    String::from_utf8_lossy(&answer).to_lowercase()
}

/// With an allowed origin configured, a browser on that origin gets its CORS
/// preflight answered and may read a gRPC-Web answer's status; another origin gets
/// no CORS grant. Without configured origins a preflight is refused like any other
/// non-gRPC request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_from_an_allowed_origin_passes_cors() {
    let upstream = Upstream::start().await;
    let mut cfg = config(upstream.addr).await;
    cfg.cors_origins = vec![http::HeaderValue::from_static("https://app.example")];
    let gateway = Gateway::start(cfg).await;
    let preflight = |origin: &str| {
        format!(
            "OPTIONS /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: gateway\r\n\
Origin: {origin}\r\nAccess-Control-Request-Method: POST\r\n\
Access-Control-Request-Headers: content-type,x-grpc-web,authorization\r\n\
Connection: close\r\n\r\n"
        )
    };

    let answer = http1(&gateway, preflight("https://app.example").as_bytes()).await;
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(
        answer.contains("access-control-allow-origin: https://app.example"),
        "{answer}"
    );
    assert!(answer.contains("authorization"), "{answer}");
    assert!(
        answer.contains("access-control-allow-methods: post"),
        "{answer}"
    );

    let answer = http1(&gateway, preflight("https://evil.example").as_bytes()).await;
    assert!(!answer.contains("access-control-allow-origin"), "{answer}");

    let call = b"POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: gateway\r\n\
Origin: https://app.example\r\ncontent-type: application/grpc-web+proto\r\n\
x-grpc-web: 1\r\ncontent-length: 5\r\nConnection: close\r\n\r\n\0\0\0\0\0";
    let answer = http1(&gateway, call).await;
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains("grpc-status:0"), "{answer}");
    assert!(
        answer.contains("access-control-allow-origin: https://app.example"),
        "{answer}"
    );
    assert!(
        answer.contains("access-control-expose-headers") && answer.contains("grpc-status,"),
        "{answer}"
    );

    // No origins configured: CORS is off and the preflight is not gRPC.
    let plain = Gateway::start(config(upstream.addr).await).await;
    let answer = http1(&plain, preflight("https://app.example").as_bytes()).await;
    assert!(!answer.contains("access-control-allow-origin"), "{answer}");
    assert!(answer.contains("grpc-status"), "{answer}");
}
