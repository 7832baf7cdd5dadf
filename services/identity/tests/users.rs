//! User administration: UpdateUser (self-service fields, admin-only role and status,
//! disabling ends sessions), ChangePassword, ListUsers keyset paging, the JWKS admin
//! route and service accounts, against real Postgres and Redis.

mod common;

use common::*;
use ferrobank_auth::keys::PrivateKey;
use ferrobank_identity::app::{CreateUser, IdentityError};
use ferrobank_proto::identity as pb;
use ferrobank_proto::identity::identity_service_client::IdentityServiceClient;
use prost_types::FieldMask;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Creates `username` with `role` through the app (as `ferrobank admin create-user`
/// does) and signs them in.
async fn staff(svc: &Running, username: &str, role: ferrobank_auth::Role) -> pb::LoginResponse {
    svc.identity
        .app()
        .create_user(
            None,
            true,
            CreateUser {
                request_id: uuid::Uuid::new_v4(),
                username: username.to_owned(),
                email: format!("{username}@example.com"),
                display_name: String::new(),
                password: PASSWORD.to_owned().into(),
                role: Some(role),
            },
        )
        .await
        .unwrap();
    let mut c = svc.client.clone();
    login(&mut c, username, PASSWORD).await.unwrap()
}

/// UpdateUser of `user` (its `id` names the target) with `paths`, as `token`.
async fn update(
    c: &mut IdentityServiceClient<Channel>,
    token: &str,
    user: pb::User,
    paths: &[&str],
) -> Result<pb::User, Status> {
    c.update_user(bearer(
        pb::UpdateUserRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            user: Some(user),
            update_mask: Some(FieldMask {
                paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            }),
        },
        token,
    ))
    .await
    .map(|r| r.into_inner().user.unwrap())
}

/// ListUsers as `token`.
async fn list(
    c: &mut IdentityServiceClient<Channel>,
    token: &str,
    req: pb::ListUsersRequest,
) -> Result<pb::ListUsersResponse, Status> {
    c.list_users(bearer(req, token))
        .await
        .map(tonic::Response::into_inner)
}

/// A user changes their own display name and email through the mask (other fields are
/// left alone), but not their role or status, nor anyone else; an email taken by
/// another user in any case is ALREADY_EXISTS; an unknown or empty mask is
/// INVALID_ARGUMENT naming `update_mask`.
#[tokio::test]
async fn update_user_self_service() {
    let fx = Fixture::new().await;
    let svc = fx
        .start(fx.config(vec![PrivateKey::generate()]).await)
        .await;
    let mut c = svc.client.clone();
    let alice = sign_up(&mut c, "alice").await;
    let bob = sign_up(&mut c, "bob").await;
    let token = login(&mut c, "alice", PASSWORD).await.unwrap().access_token;

    let changed = update(
        &mut c,
        &token,
        pb::User {
            id: alice.id.clone(),
            display_name: "Alice A.".into(),
            email: "alice.a@example.org".into(),
            // Not in the mask: ignored.
            username: "mallory".into(),
            role: pb::Role::Admin as i32,
            ..Default::default()
        },
        &["display_name", "email"],
    )
    .await
    .unwrap();
    assert_eq!(changed.display_name, "Alice A.");
    assert_eq!(changed.email, "alice.a@example.org");
    assert_eq!(changed.username, "alice");
    assert_eq!(changed.role, pb::Role::Customer as i32);
    let read = get_user(&mut c, &token, &alice.id).await.unwrap();
    assert_eq!(read, changed);

    // Role and status are admins' business, even on oneself.
    for (user, path) in [
        (
            pb::User {
                id: alice.id.clone(),
                role: pb::Role::Admin as i32,
                ..Default::default()
            },
            "role",
        ),
        (
            pb::User {
                id: alice.id.clone(),
                status: pb::UserStatus::Disabled as i32,
                ..Default::default()
            },
            "status",
        ),
    ] {
        let denied = update(&mut c, &token, user, &[path]).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{path}");
        assert_eq!(reason(&denied), "ERROR_REASON_PERMISSION_DENIED");
    }
    // Nor may a customer touch someone else.
    let denied = update(
        &mut c,
        &token,
        pb::User {
            id: bob.id.clone(),
            display_name: "pwned".into(),
            ..Default::default()
        },
        &["display_name"],
    )
    .await
    .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // Bob's email, differently cased.
    let taken = update(
        &mut c,
        &token,
        pb::User {
            id: alice.id.clone(),
            email: "BOB@Example.COM".into(),
            ..Default::default()
        },
        &["email"],
    )
    .await
    .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);
    assert_eq!(reason(&taken), "ERROR_REASON_ALREADY_EXISTS");
    assert!(taken.message().contains("email"), "{}", taken.message());

    for paths in [&["display_name", "username"][..], &["password"], &[]] {
        let bad = update(
            &mut c,
            &token,
            pb::User {
                id: alice.id.clone(),
                ..Default::default()
            },
            paths,
        )
        .await
        .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument, "{paths:?}");
        assert_eq!(reason(&bad), "ERROR_REASON_INVALID_FIELD");
        assert!(
            bad.message().starts_with("update_mask"),
            "{paths:?}: {}",
            bad.message()
        );
    }
    // A refused request changed nothing.
    let after = get_user(&mut c, &token, &alice.id).await.unwrap();
    assert_eq!(after.display_name, "Alice A.");
    assert_eq!(after.email, "alice.a@example.org");
    svc.stop().await;
}

/// An admin changes another user's role and status. Disabling revokes every session:
/// the user's access and refresh tokens are refused and login answers USER_DISABLED;
/// re-enabling lets them sign in again.
#[tokio::test]
async fn admin_changes_role_and_disabling_ends_sessions() {
    let fx = Fixture::new().await;
    let svc = fx
        .start(fx.config(vec![PrivateKey::generate()]).await)
        .await;
    let mut c = svc.client.clone();
    let admin = staff(&svc, "root", ferrobank_auth::Role::Admin)
        .await
        .access_token;
    let carol = sign_up(&mut c, "carol").await;

    let promoted = update(
        &mut c,
        &admin,
        pb::User {
            id: carol.id.clone(),
            role: pb::Role::Operator as i32,
            ..Default::default()
        },
        &["role"],
    )
    .await
    .unwrap();
    assert_eq!(promoted.role, pb::Role::Operator as i32);
    // ROLE_SERVICE is never a user's role.
    let service = update(
        &mut c,
        &admin,
        pb::User {
            id: carol.id.clone(),
            role: pb::Role::Service as i32,
            ..Default::default()
        },
        &["role"],
    )
    .await
    .unwrap_err();
    assert_eq!(service.code(), Code::InvalidArgument);

    let first = login(&mut c, "carol", PASSWORD).await.unwrap();
    let second = login(&mut c, "carol", PASSWORD).await.unwrap();
    assert_eq!(first.user.as_ref().unwrap().role, pb::Role::Operator as i32);
    get_user(&mut c, &first.access_token, &carol.id)
        .await
        .unwrap();

    let disabled = update(
        &mut c,
        &admin,
        pb::User {
            id: carol.id.clone(),
            status: pb::UserStatus::Disabled as i32,
            ..Default::default()
        },
        &["status"],
    )
    .await
    .unwrap();
    assert_eq!(disabled.status, pb::UserStatus::Disabled as i32);
    assert_eq!(disabled.role, pb::Role::Operator as i32);
    for t in [&first, &second] {
        let refused = get_user(&mut c, &t.access_token, &carol.id)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert_eq!(reason(&refused), "ERROR_REASON_TOKEN_REVOKED");
        let refresh = c
            .refresh_session(pb::RefreshSessionRequest {
                refresh_token: t.refresh_token.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(refresh.code(), Code::Unauthenticated);
    }
    let login_refused = login(&mut c, "carol", PASSWORD).await.unwrap_err();
    assert_eq!(login_refused.code(), Code::PermissionDenied);
    assert_eq!(reason(&login_refused), "ERROR_REASON_USER_DISABLED");
    // The admin's own token is untouched.
    assert_eq!(
        get_user(&mut c, &admin, &carol.id).await.unwrap().status,
        pb::UserStatus::Disabled as i32
    );

    update(
        &mut c,
        &admin,
        pb::User {
            id: carol.id.clone(),
            status: pb::UserStatus::Active as i32,
            ..Default::default()
        },
        &["status"],
    )
    .await
    .unwrap();
    let back = login(&mut c, "carol", PASSWORD).await.unwrap();
    get_user(&mut c, &back.access_token, &carol.id)
        .await
        .unwrap();
    svc.stop().await;
}

/// A wrong current password is INVALID_CREDENTIALS and changes nothing; a weak new one
/// is WEAK_PASSWORD naming `new_password` and the rule; success revokes the caller's
/// other sessions (their tokens are refused) but keeps the current one, and only the
/// new password signs in afterwards.
#[tokio::test]
async fn change_password() {
    let fx = Fixture::new().await;
    let svc = fx
        .start(fx.config(vec![PrivateKey::generate()]).await)
        .await;
    let mut c = svc.client.clone();
    let dan = sign_up(&mut c, "dan").await;
    let current = login(&mut c, "dan", PASSWORD).await.unwrap();
    let other = login(&mut c, "dan", PASSWORD).await.unwrap();
    let new_password = "a different but memorable phrase";
    let change = |current_password: &str, new_password: &str| {
        bearer(
            pb::ChangePasswordRequest {
                request_id: uuid::Uuid::new_v4().to_string(),
                current_password: current_password.to_owned(),
                new_password: new_password.to_owned(),
            },
            &current.access_token,
        )
    };

    let wrong = c
        .change_password(change("not my password at all", new_password))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(reason(&wrong), "ERROR_REASON_INVALID_CREDENTIALS");
    get_user(&mut c, &other.access_token, &dan.id)
        .await
        .unwrap();

    for (weak, rule) in [
        ("short", "at least 12 characters"),
        ("dan-dan-dan-dan-dan", "username"),
        ("abababababab", "4 different"),
    ] {
        let err = c.change_password(change(PASSWORD, weak)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{weak}");
        assert_eq!(reason(&err), "ERROR_REASON_WEAK_PASSWORD");
        assert!(
            err.message().starts_with("new_password"),
            "{}",
            err.message()
        );
        assert!(err.message().contains(rule), "{}", err.message());
    }
    // Neither refusal changed the password.
    login(&mut c, "dan", PASSWORD).await.unwrap();

    let revoked = c
        .change_password(change(PASSWORD, new_password))
        .await
        .unwrap()
        .into_inner()
        .revoked_session_count;
    // `other` and the session the check above started.
    assert_eq!(revoked, 2);
    let refused = get_user(&mut c, &other.access_token, &dan.id)
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "ERROR_REASON_TOKEN_REVOKED");
    let refresh = c
        .refresh_session(pb::RefreshSessionRequest {
            refresh_token: other.refresh_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refresh.code(), Code::Unauthenticated);
    get_user(&mut c, &current.access_token, &dan.id)
        .await
        .unwrap();
    c.refresh_session(pb::RefreshSessionRequest {
        refresh_token: current.refresh_token.clone(),
    })
    .await
    .unwrap();

    let old = login(&mut c, "dan", PASSWORD).await.unwrap_err();
    assert_eq!(reason(&old), "ERROR_REASON_INVALID_CREDENTIALS");
    login(&mut c, "dan", new_password).await.unwrap();
    svc.stop().await;
}

/// ListUsers is for admins only; paging by 3 walks every user exactly once in username
/// order (also under a filter); a garbled page token, or one reused with other
/// filters, is INVALID_ARGUMENT with INVALID_PAGE_TOKEN.
#[tokio::test]
async fn list_users_paging() {
    let fx = Fixture::new().await;
    let svc = fx
        .start(fx.config(vec![PrivateKey::generate()]).await)
        .await;
    let mut c = svc.client.clone();
    let admin = staff(&svc, "admin", ferrobank_auth::Role::Admin)
        .await
        .access_token;
    let operator = staff(&svc, "oper", ferrobank_auth::Role::Operator)
        .await
        .access_token;
    // Created out of order, so username order is not creation order.
    let customers = ["u07", "u03", "u01", "u06", "u02", "u05", "u04"];
    for name in customers {
        sign_up(&mut c, name).await;
    }
    let customer = login(&mut c, "u01", PASSWORD).await.unwrap().access_token;

    for token in [&customer, &operator] {
        let denied = list(&mut c, token, pb::ListUsersRequest::default())
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert_eq!(reason(&denied), "ERROR_REASON_PERMISSION_DENIED");
    }

    let walk = |role: pb::Role| {
        let mut c = c.clone();
        let admin = admin.clone();
        async move {
            let mut seen = Vec::new();
            let mut token = String::new();
            let mut pages = 0;
            loop {
                let page = list(
                    &mut c,
                    &admin,
                    pb::ListUsersRequest {
                        page_size: 3,
                        page_token: token,
                        role: role as i32,
                        status: 0,
                    },
                )
                .await
                .unwrap();
                assert!(page.users.len() <= 3);
                pages += 1;
                seen.extend(page.users.into_iter().map(|u| u.username));
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
                assert!(pages < 10, "paging does not end");
            }
            (seen, pages)
        }
    };
    let mut expected: Vec<String> = customers.iter().map(|s| (*s).to_owned()).collect();
    expected.extend(["admin".to_owned(), "oper".to_owned()]);
    expected.sort();
    let (all, pages) = walk(pb::Role::Unspecified).await;
    assert_eq!(all, expected);
    assert_eq!(pages, 3);
    let (only, _) = walk(pb::Role::Customer).await;
    let mut sorted = customers.map(str::to_owned).to_vec();
    sorted.sort();
    assert_eq!(only, sorted);

    let first = list(
        &mut c,
        &admin,
        pb::ListUsersRequest {
            page_size: 3,
            role: pb::Role::Customer as i32,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(!first.next_page_token.is_empty());
    let bad_tokens = [
        // Garbled: not base64url, base64url of no known shape, truncated.
        ("not a token!".to_owned(), 0, 0),
        ("Z2FyYmFnZQ".to_owned(), pb::Role::Customer as i32, 0),
        (
            first.next_page_token[..first.next_page_token.len() - 3].to_owned(),
            pb::Role::Admin as i32,
            0,
        ),
        // A good token reused with other filters.
        (first.next_page_token.clone(), 0, 0),
        (
            first.next_page_token.clone(),
            pb::Role::Customer as i32,
            pb::UserStatus::Active as i32,
        ),
    ];
    for (page_token, role, status) in bad_tokens {
        let err = list(
            &mut c,
            &admin,
            pb::ListUsersRequest {
                page_size: 3,
                page_token: page_token.clone(),
                role,
                status,
            },
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{page_token}");
        assert_eq!(reason(&err), "ERROR_REASON_INVALID_PAGE_TOKEN");
    }
    // The same token with the same filters still works.
    let second = list(
        &mut c,
        &admin,
        pb::ListUsersRequest {
            page_size: 3,
            page_token: first.next_page_token.clone(),
            role: pb::Role::Customer as i32,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(second.users[0].username, "u04");
    svc.stop().await;
}

/// `GET /.well-known/jwks.json` from `jwks_router` serves every configured key (kid and
/// x of each signing key's JWK, signing and rotating) as JSON, and no private member.
#[tokio::test]
async fn jwks_admin_route_publishes_public_keys_only() {
    let signing = PrivateKey::generate();
    let rotating = PrivateKey::generate();
    let fx = Fixture::new().await;
    let config = fx.config(vec![signing.clone(), rotating.clone()]).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, ferrobank_identity::jwks_router(&config))
            .await
            .unwrap();
    });

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );

    let doc: serde_json::Value = serde_json::from_str(body).unwrap();
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for (key, published) in [&signing, &rotating].into_iter().zip(keys) {
        let jwk = key.public().to_jwk();
        assert_eq!(published["kid"], jwk.kid.as_str());
        assert_eq!(published["x"], jwk.x.as_str());
        assert_eq!(published["kty"], "OKP");
        assert_eq!(published["crv"], "Ed25519");
        assert_eq!(published["alg"], "EdDSA");
        assert_eq!(published["use"], "sig");
        let members: Vec<&str> = published
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert!(!members.contains(&"d"), "private member in {published}");
    }
    assert!(!body.contains("\"d\""), "{body}");
    server.abort();
}

/// A service account is created once (a second with the same name is ALREADY_EXISTS
/// naming `name`, a short secret WEAK_PASSWORD) and its secret yields a service token —
/// what `ferrobank admin create-service-account` relies on.
#[tokio::test]
async fn service_account_creation() {
    let fx = Fixture::new().await;
    let svc = fx
        .start(fx.config(vec![PrivateKey::generate()]).await)
        .await;
    let mut c = svc.client.clone();
    let app = svc.identity.app();
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let id = app
        .create_service_account("ledger", secret.clone().into())
        .await
        .unwrap();

    let again = app
        .create_service_account("ledger", secret.clone().into())
        .await
        .unwrap_err();
    assert!(
        matches!(again, IdentityError::AlreadyExists { field: "name" }),
        "{again:?}"
    );
    let short = app
        .create_service_account("reports", "too-short".to_owned().into())
        .await
        .unwrap_err();
    assert!(
        matches!(
            short,
            IdentityError::WeakPassword {
                field: "secret",
                ..
            }
        ),
        "{short:?}"
    );

    let token = c
        .issue_service_token(pb::IssueServiceTokenRequest {
            service_id: "ledger".into(),
            secret,
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
    assert_eq!(verified.principal.user_id, id);
    assert_eq!(verified.principal.role, ferrobank_auth::Role::Service);
    svc.stop().await;
}
