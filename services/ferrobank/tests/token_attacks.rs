//! The token attack table across the platform: malformed, expired, not-yet-valid,
//! tampered, wrong-audience, wrong-issuer, `alg: none`, HS256-with-the-public-key,
//! unknown-kid, kid-less and revoked tokens are refused UNAUTHENTICATED with the one
//! generic message (the reason goes to the log, not the client) by every service
//! called directly and through the gateway; the valid tokens next to them work on the
//! very same calls, so the table cannot pass by refusing everything.
//!
//! Identity's own verifier has its table in `services/identity/tests/tokens.rs`; here
//! the same attacks hit the ledger (LedgerService), reporting (ReportingService, served
//! by the ledger process), identity (IdentityService) and the gateway in front of them.
//!
//! Payments is not in the table: its RPCs are UNIMPLEMENTED stubs that do not
//! authenticate yet, so there is nothing to refuse directly. Add its calls to
//! [`call_all`] when they are built.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer, SigningKey};
mod common;

use ferrobank::Platform;
use ferrobank_auth::jwt::{self, Claims};
use ferrobank_auth::keys::{KeyRing, PrivateKey};
use ferrobank_proto::identity as idpb;
use ferrobank_proto::identity::identity_service_client::IdentityServiceClient;
use ferrobank_proto::ledger as lpb;
use ferrobank_proto::ledger::ledger_service_client::LedgerServiceClient;
use ferrobank_proto::reporting::GetReportingStatusRequest;
use ferrobank_proto::reporting::reporting_service_client::ReportingServiceClient;
use ferrobank_testkit::TestDb;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// The message of every refusal, whatever the reason.
const GENERIC: &str = "missing or invalid credentials";
/// Words that would tell a client why its token was refused.
const TELLTALES: [&str; 8] = [
    "signature",
    "audience",
    "issuer",
    "kid",
    "alg",
    "expired",
    "revoked",
    "malformed",
];
/// Must match `IdentityConfig::with_keys`.
const ISSUER: &str = "ferrobank-identity";
const AUDIENCE: &str = "ferrobank";

const UNAUTHENTICATED: &str = "ERROR_REASON_UNAUTHENTICATED";
const EXPIRED: &str = "ERROR_REASON_TOKEN_EXPIRED";
const REVOKED: &str = "ERROR_REASON_TOKEN_REVOKED";

/// An Ed25519 key whose secret the test keeps, so it can sign any header it likes.
struct Key {
    secret: [u8; 32],
    key: PrivateKey,
}

impl Key {
    fn generate() -> Self {
        let mut secret = [0u8; 32];
        secret[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        secret[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Self {
            secret,
            key: PrivateKey::from_bytes(&secret),
        }
    }

    fn kid(&self) -> &str {
        self.key.kid()
    }

    /// The header `jwt::sign` writes.
    fn header(&self) -> Value {
        json!({"alg": "EdDSA", "typ": "JWT", "kid": self.kid()})
    }

    /// `header.claims`, EdDSA-signed with this key whatever the header says.
    fn sign_raw(&self, header: &Value, claims: &Value) -> String {
        let signed = format!("{}.{}", b64_json(header), b64_json(claims));
        let signature = SigningKey::from_bytes(&self.secret).sign(signed.as_bytes());
        format!("{signed}.{}", b64(signature.to_bytes()))
    }

    /// The raw public key bytes (what a confused verifier would use as an HMAC secret).
    fn public_bytes(&self) -> Vec<u8> {
        URL_SAFE_NO_PAD
            .decode(self.key.public().to_jwk().x)
            .unwrap()
    }
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn b64_json(v: &Value) -> String {
    b64(serde_json::to_vec(v).unwrap())
}

/// HMAC-SHA256 (RFC 2104), for the HS256 confusion token.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(Sha256::digest(key).as_slice());
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|k| k ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// The whole platform in process, identity signing with `key`, revocations in Redis.
async fn start(key: &Key) -> (Platform, Vec<TestDb>) {
    let dbs = common::databases().await;
    let platform = common::start(&dbs, KeyRing::new(vec![key.key.clone()]).unwrap()).await;
    (platform, dbs)
}

/// `message` with `authorization: <auth>`, or no authorization at all.
fn with_auth<T>(message: T, auth: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(auth) = auth {
        request
            .metadata_mut()
            .insert("authorization", auth.parse().unwrap());
    }
    request
}

fn bearer<T>(message: T, token: &str) -> Request<T> {
    with_auth(message, Some(&format!("Bearer {token}")))
}

/// Where the calls go and what they ask for.
struct Targets {
    identity: Channel,
    ledger: Channel,
    gateway: Channel,
    user_id: String,
    account_id: String,
}

/// Every authenticated call of the table, directly and through the gateway, each
/// named and with its outcome; an OK answer is checked to be the caller's own data.
async fn call_all(t: &Targets, auth: Option<&str>) -> Vec<(String, Result<(), Status>)> {
    let wrong = |what: &str| Err(Status::internal(format!("OK but {what}")));
    let mut out = Vec::new();
    for (route, identity, ledger) in [
        ("direct", &t.identity, &t.ledger),
        ("gateway", &t.gateway, &t.gateway),
    ] {
        let mut client = LedgerServiceClient::new(ledger.clone());
        let listed = client
            .list_accounts(with_auth(
                lpb::ListAccountsRequest {
                    owner_id: t.user_id.clone(),
                    ..Default::default()
                },
                auth,
            ))
            .await
            .and_then(|r| {
                if r.into_inner().accounts.iter().any(|a| a.id == t.account_id) {
                    Ok(())
                } else {
                    wrong("the account is not listed")
                }
            });
        out.push((format!("ledger ListAccounts ({route})"), listed));

        let got = client
            .get_account(with_auth(
                lpb::GetAccountRequest {
                    account_id: t.account_id.clone(),
                },
                auth,
            ))
            .await
            .and_then(|r| match r.into_inner().account {
                Some(a) if a.id == t.account_id && a.owner_id == t.user_id => Ok(()),
                _ => wrong("another account"),
            });
        out.push((format!("ledger GetAccount ({route})"), got));

        let status = ReportingServiceClient::new(ledger.clone())
            .get_reporting_status(with_auth(GetReportingStatusRequest::default(), auth))
            .await
            .and_then(|r| match r.into_inner().freshness {
                Some(_) => Ok(()),
                None => wrong("no freshness"),
            });
        out.push((format!("reporting GetReportingStatus ({route})"), status));

        let user = IdentityServiceClient::new(identity.clone())
            .get_user(with_auth(
                idpb::GetUserRequest {
                    user_id: t.user_id.clone(),
                },
                auth,
            ))
            .await
            .and_then(|r| match r.into_inner().user {
                Some(u) if u.id == t.user_id => Ok(()),
                _ => wrong("another user"),
            });
        out.push((format!("identity GetUser ({route})"), user));
    }
    out
}

/// Every valid token works on every call (so refusals below are about the token).
async fn assert_valid(t: &Targets, valid: &[(&str, String)]) {
    for (name, token) in valid {
        for (call, result) in call_all(t, Some(&format!("Bearer {token}"))).await {
            if let Err(status) = result {
                panic!("valid token {name:?} refused by {call}: {status:?}");
            }
        }
    }
}

/// Every bad token of the table — no header, another scheme, empty, garbage, two and
/// four parts, bad base64, oversized, expired, not yet valid, issued in the future,
/// tampered payload and signature, wrong audience and issuer, `alg: none`, HS256 keyed
/// with the public key, unknown kid, another key claiming the real kid, no kid, bad
/// role, subject and session claims, revoked by logout — is refused by the ledger,
/// reporting and identity, each called directly and through the gateway, with
/// UNAUTHENTICATED, the expected ErrorInfo reason and the generic message only; the
/// login token, a token minted with the platform's key and one raw-signed by this
/// test's signer all succeed on the same calls before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_is_refused_by_every_service_directly_and_through_the_gateway() {
    let key = Key::generate();
    let (platform, _dbs) = start(&key).await;
    let gateway = common::connect(platform.gateway_addr).await;
    let identity_direct = common::connect(platform.identity_addr).await;
    let ledger_direct = common::connect(platform.ledger_addr).await;
    let running = common::run(platform);

    let mut identity = IdentityServiceClient::new(gateway.clone());
    common::sign_up(&mut identity, "mallory").await;
    let good = common::login(&mut identity, "mallory").await;
    let user_id = good.user.clone().unwrap().id;
    let account = LedgerServiceClient::new(gateway.clone())
        .open_account(bearer(
            lpb::OpenAccountRequest {
                request_id: uuid::Uuid::new_v4().to_string(),
                owner_id: user_id.clone(),
                currency_code: "USD".into(),
                ..Default::default()
            },
            &good.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();

    // A second session of the same user, logged out: its access token is revoked
    // (and only it: the first session's token stays valid).
    let doomed = common::login(&mut identity, "mallory").await;
    identity
        .logout(bearer(
            idpb::LogoutRequest {
                request_id: uuid::Uuid::new_v4().to_string(),
            },
            &doomed.access_token,
        ))
        .await
        .unwrap();

    let targets = Targets {
        identity: identity_direct,
        ledger: ledger_direct,
        gateway,
        user_id: user_id.clone(),
        account_id: account.id,
    };

    let now = ferrobank_auth::unix_now();
    let base = Claims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: user_id.clone(),
        role: "customer".into(),
        sid: Some(good.session_id.clone()),
        jti: uuid::Uuid::new_v4().to_string(),
        iat: now,
        nbf: Some(now),
        exp: now + 600,
    };
    let base_json = serde_json::to_value(&base).unwrap();
    let minted = |f: &dyn Fn(&mut Claims)| {
        let mut c = base.clone();
        f(&mut c);
        jwt::sign(&c, &key.key)
    };
    let raw = |f: &dyn Fn(&mut Value)| {
        let mut c = base_json.clone();
        f(&mut c);
        c
    };

    let valid: Vec<(&str, String)> = vec![
        ("from login", good.access_token.clone()),
        ("minted with the platform key", minted(&|_| {})),
        (
            "raw-signed with the platform key",
            key.sign_raw(&key.header(), &base_json),
        ),
    ];
    assert_valid(&targets, &valid).await;

    let parts: Vec<&str> = good.access_token.split('.').collect();
    let mut admin =
        serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    admin["role"] = "admin".into();
    let tampered_payload = format!("{}.{}.{}", parts[0], b64_json(&admin), parts[2]);
    let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    signature[0] ^= 1;
    let tampered_signature = format!("{}.{}.{}", parts[0], parts[1], b64(signature));
    let admin_claims = raw(&|c| c["role"] = "admin".into());
    let none = format!(
        "{}.{}.",
        b64_json(&json!({"alg": "none", "typ": "JWT", "kid": key.kid()})),
        b64_json(&admin_claims)
    );
    let hs256 = {
        let signed = format!(
            "{}.{}",
            b64_json(&json!({"alg": "HS256", "typ": "JWT", "kid": key.kid()})),
            b64_json(&admin_claims)
        );
        let mac = hmac_sha256(&key.public_bytes(), signed.as_bytes());
        format!("{signed}.{}", b64(mac))
    };
    let other = Key::generate();
    let oversized = key.sign_raw(
        &key.header(),
        &raw(&|c| c["pad"] = "x".repeat(3_200).into()),
    );
    assert!(oversized.len() > 4_096);

    let tokens: Vec<(&str, String, &str)> = vec![
        ("empty bearer", String::new(), UNAUTHENTICATED),
        ("garbage", "not-a-token".into(), UNAUTHENTICATED),
        ("two parts", "a.b".into(), UNAUTHENTICATED),
        (
            "four parts",
            format!("{}.AAAA", good.access_token),
            UNAUTHENTICATED,
        ),
        ("bad base64", "!!.!!.!!".into(), UNAUTHENTICATED),
        ("oversized, validly signed", oversized, UNAUTHENTICATED),
        (
            "expired",
            minted(&|c| {
                c.iat = now - 3_600;
                c.nbf = Some(now - 3_600);
                c.exp = now - 600;
            }),
            EXPIRED,
        ),
        (
            "expired just beyond the 30 s leeway",
            minted(&|c| {
                c.iat = now - 900;
                c.nbf = Some(now - 900);
                c.exp = now - 90;
            }),
            EXPIRED,
        ),
        (
            "not yet valid",
            minted(&|c| c.nbf = Some(now + 3_600)),
            UNAUTHENTICATED,
        ),
        (
            "issued in the future",
            minted(&|c| {
                c.iat = now + 3_600;
                c.nbf = None;
                c.exp = now + 7_200;
            }),
            UNAUTHENTICATED,
        ),
        ("tampered payload (role)", tampered_payload, UNAUTHENTICATED),
        ("tampered signature", tampered_signature, UNAUTHENTICATED),
        (
            "wrong audience",
            minted(&|c| c.aud = "someone-else".into()),
            UNAUTHENTICATED,
        ),
        (
            "wrong issuer",
            minted(&|c| c.iss = "evil".into()),
            UNAUTHENTICATED,
        ),
        ("alg none", none, UNAUTHENTICATED),
        (
            "alg HS256 keyed with the public key",
            hs256,
            UNAUTHENTICATED,
        ),
        ("unknown kid", jwt::sign(&base, &other.key), UNAUTHENTICATED),
        (
            "another key claiming the real kid",
            other.sign_raw(&key.header(), &base_json),
            UNAUTHENTICATED,
        ),
        (
            "no kid, validly signed",
            key.sign_raw(&json!({"alg": "EdDSA", "typ": "JWT"}), &base_json),
            UNAUTHENTICATED,
        ),
        (
            "bad role",
            minted(&|c| c.role = "root".into()),
            UNAUTHENTICATED,
        ),
        (
            "subject not a uuid",
            minted(&|c| c.sub = "mallory".into()),
            UNAUTHENTICATED,
        ),
        (
            "customer token without a session",
            minted(&|c| c.sid = None),
            UNAUTHENTICATED,
        ),
        ("revoked by logout", doomed.access_token.clone(), REVOKED),
    ];
    let mut table: Vec<(&str, Option<String>, &str, String)> = vec![
        ("no authorization", None, UNAUTHENTICATED, String::new()),
        (
            "basic scheme",
            Some("Basic YTpi".into()),
            UNAUTHENTICATED,
            String::new(),
        ),
    ];
    for (name, token, reason) in tokens {
        table.push((name, Some(format!("Bearer {token}")), reason, token));
    }

    let mut leaks = Vec::new();
    for (name, auth, want_reason, token) in &table {
        for (call, result) in call_all(&targets, auth.as_deref()).await {
            let status = match result {
                Ok(()) => {
                    leaks.push(format!("{name}: ACCEPTED by {call}"));
                    continue;
                }
                Err(status) => status,
            };
            let reason = ferrobank_proto::status::reason(&status).unwrap_or_default();
            let message = status.message().to_lowercase();
            let leaky = (token.len() > 3 && status.message().contains(token.as_str()))
                || TELLTALES.iter().any(|w| message.contains(w));
            if status.code() != Code::Unauthenticated
                || reason != *want_reason
                || status.message() != GENERIC
                || leaky
            {
                leaks.push(format!(
                    "{name}: {call} answered {:?} reason {reason:?} message {:?} \
                     (want Unauthenticated, {want_reason}, {GENERIC:?})",
                    status.code(),
                    status.message()
                ));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "{} problems:\n{}",
        leaks.len(),
        leaks.join("\n")
    );

    // Still valid afterwards: nothing above revoked or locked out the good session.
    assert_valid(&targets, &valid).await;

    running.stop().await;
}
