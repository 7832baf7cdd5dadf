//! Token verification: the attack table (every bad token is UNAUTHENTICATED with one
//! generic message) and key rotation (old tokens verify until their key is retired,
//! new ones carry the new kid; a JWKS verifier refetches on an unknown kid).

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use ferrobank_auth::JwtAuthenticator;
use ferrobank_auth::jwt::{self, Claims};
use ferrobank_auth::key_source::GrpcJwks;
use ferrobank_auth::keys::PrivateKey;
use ferrobank_auth::revocation::Revocations;
use ferrobank_config::RevocationFallback;
use ferrobank_testkit::env;
use tonic::Code;

fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// Malformed, expired, not-yet-valid, tampered, wrong-audience, wrong-issuer,
/// alg=none, HS256, unknown-kid and kid-less tokens are all refused UNAUTHENTICATED with
/// the same message; the good token next to them works.
#[tokio::test]
async fn attack_table() {
    let fx = Fixture::new().await;
    let key = PrivateKey::generate();
    let svc = fx.start(fx.config(vec![key.clone()]).await).await;
    let mut c = svc.client.clone();
    let user = sign_up(&mut c, "mallory").await;
    let good = login(&mut c, "mallory", PASSWORD).await.unwrap();
    get_user(&mut c, &good.access_token, &user.id)
        .await
        .unwrap();

    let now = ferrobank_auth::unix_now();
    let base = Claims {
        iss: "ferrobank-identity".into(),
        aud: "ferrobank".into(),
        sub: user.id.clone(),
        role: "customer".into(),
        sid: Some(good.session_id.clone()),
        jti: uuid::Uuid::new_v4().to_string(),
        iat: now,
        nbf: Some(now),
        exp: now + 600,
    };
    let with = |f: &dyn Fn(&mut Claims)| {
        let mut c = base.clone();
        f(&mut c);
        jwt::sign(&c, &key)
    };
    let parts: Vec<&str> = good.access_token.split('.').collect();
    let mut admin_claims = serde_json::to_value(&base).unwrap();
    admin_claims["role"] = "admin".into();
    let tampered = format!("{}.{}.{}", parts[0], b64(&admin_claims), parts[2]);
    let none = format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg": "none", "typ": "JWT", "kid": key.kid()})),
        b64(&admin_claims)
    );
    let hs256 = format!(
        "{}.{}.{}",
        b64(&serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": key.kid()})),
        b64(&admin_claims),
        URL_SAFE_NO_PAD.encode([7u8; 32])
    );
    let no_kid = format!(
        "{}.{}.{}",
        b64(&serde_json::json!({"alg": "EdDSA", "typ": "JWT"})),
        parts[1],
        parts[2]
    );

    let table: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("garbage", "not-a-token".into()),
        ("two parts", "a.b".into()),
        ("bad base64", "!!.!!.!!".into()),
        (
            "expired",
            with(&|c| {
                c.iat = now - 3600;
                c.nbf = Some(now - 3600);
                c.exp = now - 600;
            }),
        ),
        ("not yet valid", with(&|c| c.nbf = Some(now + 3600))),
        ("tampered", tampered),
        ("wrong audience", with(&|c| c.aud = "someone-else".into())),
        ("wrong issuer", with(&|c| c.iss = "evil".into())),
        ("alg none", none),
        ("alg HS256", hs256),
        ("unknown kid", jwt::sign(&base, &PrivateKey::generate())),
        ("no kid", no_kid),
        ("bad role", with(&|c| c.role = "root".into())),
    ];
    for (name, token) in &table {
        let err = get_user(&mut c, token, &user.id).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{name}");
        assert_eq!(err.message(), "missing or invalid credentials", "{name}");
        let r = reason(&err);
        let want = if *name == "expired" {
            "ERROR_REASON_TOKEN_EXPIRED"
        } else {
            "ERROR_REASON_UNAUTHENTICATED"
        };
        assert_eq!(r, want, "{name}");
    }
    // No header at all, and a non-bearer scheme.
    let err = c
        .get_user(ferrobank_proto::identity::GetUserRequest {
            user_id: user.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut req = tonic::Request::new(ferrobank_proto::identity::GetUserRequest {
        user_id: user.id.clone(),
    });
    req.metadata_mut()
        .insert("authorization", "Basic YTpi".parse().unwrap());
    assert_eq!(
        c.get_user(req).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    svc.stop().await;
}

/// Rotation: with [new, old] configured, a token signed by the old key still works and
/// new logins carry the new kid; a JWKS verifier that cached only the old key refetches
/// on the new kid; once the old key is retired its tokens are refused.
#[tokio::test]
async fn key_rotation() {
    let fx = Fixture::new().await;
    let old = PrivateKey::generate();
    let new = PrivateKey::generate();

    let before = fx.start(fx.config(vec![old.clone()]).await).await;
    let mut c = before.client.clone();
    let user = sign_up(&mut c, "rotor").await;
    let old_token = login(&mut c, "rotor", PASSWORD).await.unwrap().access_token;
    assert_eq!(kid_of(&old_token), old.kid());

    // A remote verifier, as the ledger would run it: JWKS over gRPC, revocation in Redis.
    let jwks = GrpcJwks::new(before.channel.clone(), Duration::ZERO);
    let revocations = Revocations::new(
        &env().await.redis_url(),
        &format!("{}auth:", fx.prefix),
        Duration::from_millis(500),
    )
    .unwrap();
    let config = fx.config(vec![new.clone(), old.clone()]).await;
    let verifier_jwks = Arc::new(jwks);
    let verifier = JwtAuthenticator::new(
        config.validation(),
        verifier_jwks.clone(),
        Some(revocations),
        RevocationFallback::Closed,
    );
    let v = verifier.verify_token(&old_token).await.unwrap();
    assert_eq!(v.kid, old.kid());
    before.stop().await;

    // Rotated: the new key signs, the old one is still published.
    let during = fx.start(config).await;
    let mut c = during.client.clone();
    get_user(&mut c, &old_token, &user.id).await.unwrap();
    let new_token = login(&mut c, "rotor", PASSWORD).await.unwrap().access_token;
    assert_eq!(kid_of(&new_token), new.kid());
    get_user(&mut c, &new_token, &user.id).await.unwrap();
    let jwks = c
        .get_jwks(ferrobank_proto::identity::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    let kids: Vec<&str> = jwks.keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, vec![new.kid(), old.kid()]);
    assert!(jwks.keys.iter().all(|k| k.alg == "EdDSA" && k.kty == "OKP"));
    // The remote verifier has only the old key cached; the new kid makes it refetch
    // (from the rotated server, reached through a fresh channel).
    let remote = JwtAuthenticator::new(
        fx.config(vec![new.clone()]).await.validation(),
        Arc::new(GrpcJwks::new(during.channel.clone(), Duration::ZERO)),
        None,
        RevocationFallback::Open,
    );
    assert_eq!(
        remote.verify_token(&new_token).await.unwrap().kid,
        new.kid()
    );
    assert_eq!(
        remote.verify_token(&old_token).await.unwrap().kid,
        old.kid()
    );
    during.stop().await;

    // Retired: the old key's tokens (expired by now, in production) are refused.
    let after = fx.start(fx.config(vec![new.clone()]).await).await;
    let mut c = after.client.clone();
    let err = get_user(&mut c, &old_token, &user.id).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    get_user(&mut c, &new_token, &user.id).await.unwrap();
    after.stop().await;
}

/// With Redis unreachable, the revocation check fails closed by default
/// (UNAVAILABLE) and open only when configured so.
#[tokio::test]
async fn revocation_fallback() {
    let key = PrivateKey::generate();
    let fx = Fixture::new().await;
    let config = fx.config(vec![key.clone()]).await;
    let now = ferrobank_auth::unix_now();
    let token = jwt::sign(
        &Claims {
            iss: config.issuer.clone(),
            aud: config.audience.clone(),
            sub: uuid::Uuid::now_v7().to_string(),
            role: "customer".into(),
            sid: Some(uuid::Uuid::now_v7().to_string()),
            jti: uuid::Uuid::new_v4().to_string(),
            iat: now,
            nbf: None,
            exp: now + 60,
        },
        &key,
    );
    // A port nothing listens on.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}/", dead.local_addr().unwrap());
    drop(dead);
    let down = Revocations::new(&url.parse().unwrap(), "x:", Duration::from_millis(200)).unwrap();
    let keys = Arc::new(ferrobank_auth::key_source::LocalKeys::new(vec![
        key.public(),
    ]));
    let closed = JwtAuthenticator::new(
        config.validation(),
        keys.clone(),
        Some(down.clone()),
        RevocationFallback::Closed,
    );
    let err = closed.verify_token(&token).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    let open = JwtAuthenticator::new(
        config.validation(),
        keys,
        Some(down),
        RevocationFallback::Open,
    );
    open.verify_token(&token).await.unwrap();
}
