//! Access-token verification, pure CPU (no Redis, no network): the full path
//! (`jwt::parse` + `verify`: base64, JSON, a strict Ed25519 check and the claims) and
//! `JwtAuthenticator::verify_signed` on a token it has verified before (served from
//! its cache of verified tokens: expiry and the key still being published are checked,
//! the signature is not). The token is a customer access token as identity issues it.
//!
//! `cargo bench -p ferrobank-auth --bench token`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ferrobank_auth::JwtAuthenticator;
use ferrobank_auth::jwt::{self, Claims, Validation};
use ferrobank_auth::key_source::LocalKeys;
use ferrobank_auth::keys::PrivateKey;
use ferrobank_config::RevocationFallback;
use uuid::Uuid;

fn validation() -> Validation {
    Validation {
        issuer: "ferrobank-identity".into(),
        audience: "ferrobank".into(),
        leeway_secs: 30,
    }
}

/// A 15-minute customer access token with a session, as identity signs it.
fn access_token(key: &PrivateKey) -> String {
    let now = ferrobank_auth::unix_now();
    let claims = Claims {
        iss: "ferrobank-identity".into(),
        aud: "ferrobank".into(),
        sub: Uuid::now_v7().to_string(),
        role: "customer".into(),
        sid: Some(Uuid::now_v7().to_string()),
        jti: Uuid::new_v4().to_string(),
        iat: now,
        nbf: Some(now),
        exp: now + 900,
    };
    jwt::sign(&claims, key)
}

fn benches(c: &mut Criterion) {
    let key = PrivateKey::generate();
    let public = key.public();
    let token = access_token(&key);
    let validation = validation();
    let mut group = c.benchmark_group("token");

    group.bench_function("parse_verify_eddsa", |b| {
        b.iter(|| {
            let parsed = jwt::parse(black_box(&token)).expect("parse");
            black_box(
                parsed
                    .verify(&public, &validation, ferrobank_auth::unix_now())
                    .expect("verify"),
            )
        })
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let verifier = JwtAuthenticator::new(
        validation.clone(),
        Arc::new(LocalKeys::new(vec![public.clone()])),
        None,
        RevocationFallback::Open,
    );
    rt.block_on(verifier.verify_signed(&token))
        .expect("first verification");
    group.bench_function("verify_signed_cached", |b| {
        b.to_async(&rt).iter(|| {
            let verifier = &verifier;
            let token = black_box(token.as_str());
            async move { black_box(verifier.verify_signed(token).await.expect("verify")) }
        })
    });
    group.finish();
}

criterion_group! {
    name = token_benches;
    // Short by default (`make bench` runs every suite); criterion's flags override.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(token_benches);
