//! Sign-up, login, refresh-token rotation with theft detection, logout and
//! revoke-all, against real Postgres and Redis.

mod common;

use common::*;
use ferrobank_auth::keys::PrivateKey;
use ferrobank_proto::identity as pb;
use tonic::Code;

/// Sign-up → login → an authenticated call → refresh → reusing the spent refresh token
/// revokes the family (its newest refresh and access tokens stop working) → a second
/// session's access token is refused after logout.
#[tokio::test]
async fn sign_up_login_refresh_reuse_and_logout() {
    let fx = Fixture::new().await;
    let svc = fx
        .start(fx.config(vec![PrivateKey::generate()]).await)
        .await;
    let mut c = svc.client.clone();

    let user = sign_up(&mut c, "alice").await;
    assert_eq!(user.role, pb::Role::Customer as i32);
    let first = login(&mut c, "alice", PASSWORD).await.unwrap();
    assert_eq!(first.token_type, "Bearer");
    let me = get_user(&mut c, &first.access_token, &user.id)
        .await
        .unwrap();
    assert_eq!(me.username, "alice");
    assert!(me.last_login_time.is_some());

    let second = c
        .refresh_session(pb::RefreshSessionRequest {
            refresh_token: first.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.session_id, first.session_id);
    assert_ne!(second.refresh_token, first.refresh_token);
    get_user(&mut c, &second.access_token, &user.id)
        .await
        .unwrap();

    // The thief (or a confused client) presents the spent token again.
    let reused = c
        .refresh_session(pb::RefreshSessionRequest {
            refresh_token: first.refresh_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::Unauthenticated);
    assert_eq!(reason(&reused), "ERROR_REASON_REFRESH_TOKEN_REUSED");
    // The whole family is dead: its newest refresh token and its access tokens.
    let newest = c
        .refresh_session(pb::RefreshSessionRequest {
            refresh_token: second.refresh_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(newest.code(), Code::Unauthenticated);
    let refused = get_user(&mut c, &second.access_token, &user.id)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(reason(&refused), "ERROR_REASON_TOKEN_REVOKED");

    // A new session works until logout, then its access token is refused.
    let other = login(&mut c, "alice", PASSWORD).await.unwrap();
    get_user(&mut c, &other.access_token, &user.id)
        .await
        .unwrap();
    c.logout(bearer(
        pb::LogoutRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
        },
        &other.access_token,
    ))
    .await
    .unwrap();
    let after = get_user(&mut c, &other.access_token, &user.id)
        .await
        .unwrap_err();
    assert_eq!(after.code(), Code::Unauthenticated);
    assert_eq!(reason(&after), "ERROR_REASON_TOKEN_REVOKED");
    assert_eq!(after.message(), "missing or invalid credentials");
    let refresh_after = c
        .refresh_session(pb::RefreshSessionRequest {
            refresh_token: other.refresh_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refresh_after.code(), Code::Unauthenticated);
    svc.stop().await;
}

/// RevokeAllSessions ends every session of the caller; a customer may not revoke
/// someone else's, and may not read another user.
#[tokio::test]
async fn revoke_all_and_ownership() {
    let fx = Fixture::new().await;
    let svc = fx
        .start(fx.config(vec![PrivateKey::generate()]).await)
        .await;
    let mut c = svc.client.clone();
    let bob = sign_up(&mut c, "bob").await;
    let carol = sign_up(&mut c, "carol").await;
    let a = login(&mut c, "bob", PASSWORD).await.unwrap();
    let b = login(&mut c, "bob", PASSWORD).await.unwrap();
    let carol_token = login(&mut c, "carol", PASSWORD).await.unwrap();

    let denied = get_user(&mut c, &carol_token.access_token, &bob.id)
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = c
        .revoke_all_sessions(bearer(
            pb::RevokeAllSessionsRequest {
                request_id: uuid::Uuid::new_v4().to_string(),
                user_id: bob.id.clone(),
            },
            &carol_token.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    let n = c
        .revoke_all_sessions(bearer(
            pb::RevokeAllSessionsRequest {
                request_id: uuid::Uuid::new_v4().to_string(),
                user_id: String::new(),
            },
            &a.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .revoked_session_count;
    assert_eq!(n, 2);
    for token in [&a.access_token, &b.access_token] {
        let err = get_user(&mut c, token, &bob.id).await.unwrap_err();
        assert_eq!(reason(&err), "ERROR_REASON_TOKEN_REVOKED");
    }
    get_user(&mut c, &carol_token.access_token, &carol.id)
        .await
        .unwrap();
    svc.stop().await;
}

/// Duplicate username or email (case-insensitively) is ALREADY_EXISTS naming the
/// field; a weak password is INVALID_ARGUMENT naming the rule; a replayed request id
/// returns the same user; sign-up cannot pick a staff role.
#[tokio::test]
async fn sign_up_validation() {
    let fx = Fixture::new().await;
    let svc = fx
        .start(fx.config(vec![PrivateKey::generate()]).await)
        .await;
    let mut c = svc.client.clone();
    let req = |username: &str, email: &str, password: &str, role: pb::Role| pb::CreateUserRequest {
        request_id: uuid::Uuid::new_v4().to_string(),
        username: username.to_owned(),
        email: email.to_owned(),
        display_name: String::new(),
        password: password.to_owned(),
        role: role as i32,
    };
    let first = req("dave", "Dave@Example.com", PASSWORD, pb::Role::Unspecified);
    let created = c
        .create_user(first.clone())
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let replay = c
        .create_user(first.clone())
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(created.id, replay.id);

    let dup = c
        .create_user(req(
            "dave",
            "other@example.com",
            PASSWORD,
            pb::Role::Unspecified,
        ))
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    assert_eq!(reason(&dup), "ERROR_REASON_ALREADY_EXISTS");
    assert!(dup.message().contains("username"));
    let dup = c
        .create_user(req(
            "dave2",
            "dave@EXAMPLE.com",
            PASSWORD,
            pb::Role::Unspecified,
        ))
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    assert!(dup.message().contains("email"));

    let weak = c
        .create_user(req(
            "erin",
            "erin@example.com",
            "short",
            pb::Role::Unspecified,
        ))
        .await
        .unwrap_err();
    assert_eq!(weak.code(), Code::InvalidArgument);
    assert_eq!(reason(&weak), "ERROR_REASON_WEAK_PASSWORD");
    assert!(
        weak.message().contains("at least 12 characters"),
        "{}",
        weak.message()
    );

    let staff = c
        .create_user(req("frank", "frank@example.com", PASSWORD, pb::Role::Admin))
        .await
        .unwrap_err();
    assert_eq!(staff.code(), Code::PermissionDenied);
    svc.stop().await;
}

/// Client credentials yield a `service` token without a session; a wrong secret is
/// INVALID_CREDENTIALS.
#[tokio::test]
async fn service_tokens() {
    let fx = Fixture::new().await;
    let svc = fx
        .start(fx.config(vec![PrivateKey::generate()]).await)
        .await;
    let mut c = svc.client.clone();
    let secret = "a-service-secret-of-at-least-32-chars!";
    svc.identity
        .app()
        .create_service_account("payments", secret.to_owned().into())
        .await
        .unwrap();
    let token = c
        .issue_service_token(pb::IssueServiceTokenRequest {
            service_id: "payments".into(),
            secret: secret.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let verified = svc
        .identity
        .authenticator()
        .verify_token(&token.access_token)
        .await
        .unwrap();
    assert_eq!(verified.principal.role, ferrobank_auth::Role::Service);
    assert_eq!(verified.principal.session_id, None);

    let wrong = c
        .issue_service_token(pb::IssueServiceTokenRequest {
            service_id: "payments".into(),
            secret: "not-the-secret".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&wrong), "ERROR_REASON_INVALID_CREDENTIALS");
    svc.stop().await;
}
