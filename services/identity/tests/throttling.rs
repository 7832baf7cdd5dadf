//! Login throttling in Redis: per username and per client IP, the same refusal for
//! unknown users as for known ones.

mod common;

use std::time::Duration;

use common::*;
use ferrobank_auth::keys::PrivateKey;
use tonic::Code;
use tonic_types::StatusExt;

/// Identity with `per_user` and `per_ip` failures allowed per minute.
async fn throttled(fx: &Fixture, per_user: u32, per_ip: u32) -> Running {
    let mut config = fx.config(vec![PrivateKey::generate()]).await;
    config.throttle.per_user = per_user;
    config.throttle.per_ip = per_ip;
    config.throttle.window = Duration::from_secs(60);
    fx.start(config).await
}

/// After N failed logins the N+1st attempt is RESOURCE_EXHAUSTED with RetryInfo, for a
/// known user (even with the right password) and for an unknown one alike; before
/// that, both get the same INVALID_CREDENTIALS answer.
#[tokio::test]
async fn n_plus_first_failure_is_throttled() {
    let fx = Fixture::new().await;
    let svc = throttled(&fx, 3, 100).await;
    let mut c = svc.client.clone();
    sign_up(&mut c, "victim").await;

    for username in ["victim", "nobody-here"] {
        for attempt in 1..=3 {
            let err = login(&mut c, username, "wrong password!!")
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated, "{username} #{attempt}");
            assert_eq!(reason(&err), "ERROR_REASON_INVALID_CREDENTIALS");
            assert_eq!(err.message(), "invalid credentials");
        }
        let err = login(&mut c, username, PASSWORD).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{username}");
        assert_eq!(reason(&err), "ERROR_REASON_LOGIN_THROTTLED");
        let retry = err.get_details_retry_info().expect("RetryInfo");
        let delay = retry.retry_delay.expect("retry delay");
        assert!(delay > Duration::ZERO && delay <= Duration::from_secs(60));
    }
    svc.stop().await;
}

/// The per-IP limit refuses further logins from the same address across usernames,
/// and a success resets only the username's counter.
#[tokio::test]
async fn per_ip_limit_spans_usernames() {
    let fx = Fixture::new().await;
    let svc = throttled(&fx, 10, 3).await;
    let mut c = svc.client.clone();
    sign_up(&mut c, "ivy").await;
    login(&mut c, "ivy", PASSWORD).await.unwrap();
    for name in ["u1", "u2", "u3"] {
        let err = login(&mut c, name, "wrong password!!").await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    let err = login(&mut c, "ivy", PASSWORD).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    svc.stop().await;
}

/// Guessing the current password through ChangePassword (with a stolen access token)
/// spends the same per-username budget as failed logins: after N wrong guesses both
/// ChangePassword and Login are throttled, even with the right password.
#[tokio::test]
async fn change_password_guesses_share_the_login_throttle() {
    let fx = Fixture::new().await;
    let svc = throttled(&fx, 3, 100).await;
    let mut c = svc.client.clone();
    sign_up(&mut c, "stolen").await;
    let token = login(&mut c, "stolen", PASSWORD)
        .await
        .unwrap()
        .access_token;
    let change = |current: &str| {
        bearer(
            ferrobank_proto::identity::ChangePasswordRequest {
                request_id: uuid::Uuid::new_v4().to_string(),
                current_password: current.to_owned(),
                new_password: "an entirely new passphrase".to_owned(),
            },
            &token,
        )
    };

    for attempt in 1..=3 {
        let err = c
            .change_password(change(&format!("guess number {attempt}!")))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "#{attempt}");
        assert_eq!(reason(&err), "ERROR_REASON_INVALID_CREDENTIALS");
    }
    let err = c.change_password(change(PASSWORD)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err), "ERROR_REASON_LOGIN_THROTTLED");
    assert!(err.get_details_retry_info().is_some());
    let err = login(&mut c, "stolen", PASSWORD).await.unwrap_err();
    assert_eq!(reason(&err), "ERROR_REASON_LOGIN_THROTTLED");
}
