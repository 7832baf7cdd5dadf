//! The gRPC face of identity: the only module that sees tonic and generated types.
//! It authenticates callers, converts messages to and from the app's types, and maps
//! [`IdentityError`] to a status exactly once ([`error`]).

mod error;

use std::net::IpAddr;

use ferrobank_auth::jwt::Verified;
use ferrobank_auth::{JwtAuthenticator, Principal, Role};
use ferrobank_proto::identity as pb;
use ferrobank_proto::identity::identity_service_server::IdentityService;
use secrecy::SecretString;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::app::{App, ClientInfo, CreateUser, IdentityError, UserPatch};
use crate::store::{User, UserStatus};

/// The tonic service.
#[derive(Clone)]
pub struct Api {
    app: App,
    auth: JwtAuthenticator,
    trust_forwarded_for: bool,
}

impl Api {
    /// Serves `app`, authenticating callers with `auth`.
    pub fn new(app: App, auth: JwtAuthenticator, trust_forwarded_for: bool) -> Self {
        Self {
            app,
            auth,
            trust_forwarded_for,
        }
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Verified, Status> {
        self.auth
            .verify_request(request.metadata(), request.extensions())
            .await
    }

    fn client<T>(&self, request: &Request<T>) -> ClientInfo {
        let forwarded = self
            .trust_forwarded_for
            .then(|| request.metadata().get("x-forwarded-for"))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok());
        let ip = forwarded
            .or_else(|| request.remote_addr().map(|a| a.ip()))
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        let user_agent = request
            .metadata()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .chars()
            .take(256)
            .collect();
        ClientInfo { ip, user_agent }
    }
}

fn uuid_field(field: &'static str, value: &str) -> Result<Uuid, IdentityError> {
    if value.is_empty() {
        return Err(IdentityError::invalid(field, "is required"));
    }
    Uuid::parse_str(value).map_err(|_| IdentityError::invalid(field, "must be a UUID"))
}

fn required(field: &'static str, value: &str) -> Result<(), IdentityError> {
    if value.is_empty() {
        Err(IdentityError::invalid(field, "is required"))
    } else {
        Ok(())
    }
}

fn role_from_pb(field: &'static str, value: i32) -> Result<Option<Role>, IdentityError> {
    match pb::Role::try_from(value) {
        Ok(pb::Role::Unspecified) => Ok(None),
        Ok(pb::Role::Customer) => Ok(Some(Role::Customer)),
        Ok(pb::Role::Operator) => Ok(Some(Role::Operator)),
        Ok(pb::Role::Admin) => Ok(Some(Role::Admin)),
        Ok(pb::Role::Service) => Ok(Some(Role::Service)),
        Err(_) => Err(IdentityError::invalid(field, "unknown role")),
    }
}

fn status_from_pb(field: &'static str, value: i32) -> Result<Option<UserStatus>, IdentityError> {
    match pb::UserStatus::try_from(value) {
        Ok(pb::UserStatus::Unspecified) => Ok(None),
        Ok(pb::UserStatus::Active) => Ok(Some(UserStatus::Active)),
        Ok(pb::UserStatus::Disabled) => Ok(Some(UserStatus::Disabled)),
        Err(_) => Err(IdentityError::invalid(field, "unknown status")),
    }
}

fn role_to_pb(role: Role) -> pb::Role {
    match role {
        Role::Customer => pb::Role::Customer,
        Role::Operator => pb::Role::Operator,
        Role::Admin => pb::Role::Admin,
        Role::Service => pb::Role::Service,
    }
}

fn ts(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn user_to_pb(u: User) -> pb::User {
    pb::User {
        id: u.id.to_string(),
        username: u.username,
        email: u.email,
        display_name: u.display_name,
        role: role_to_pb(u.role) as i32,
        status: match u.status {
            UserStatus::Active => pb::UserStatus::Active,
            UserStatus::Disabled => pb::UserStatus::Disabled,
        } as i32,
        create_time: Some(ts(u.create_time)),
        update_time: Some(ts(u.update_time)),
        last_login_time: u.last_login_time.map(ts),
    }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[tonic::async_trait]
impl IdentityService for Api {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        // Public sign-up has no token; a token, when sent, must be valid.
        let caller: Option<Principal> = if request.metadata().contains_key("authorization") {
            Some(self.caller(&request).await?.principal)
        } else {
            None
        };
        let r = request.into_inner();
        let req = CreateUser {
            request_id: uuid_field("request_id", &r.request_id)?,
            username: r.username,
            email: r.email,
            display_name: r.display_name,
            password: SecretString::from(r.password),
            role: role_from_pb("role", r.role)?,
        };
        required(
            "password",
            secrecy::ExposeSecret::expose_secret(&req.password),
        )?;
        let user = self.app.create_user(caller.as_ref(), false, req).await?;
        Ok(Response::new(pb::CreateUserResponse {
            user: Some(user_to_pb(user)),
        }))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        let caller = self.caller(&request).await?.principal;
        let id = uuid_field("user_id", &request.get_ref().user_id)?;
        let user = self.app.get_user(&caller, id).await?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(user_to_pb(user)),
        }))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        let caller = self.caller(&request).await?.principal;
        let r = request.into_inner();
        uuid_field("request_id", &r.request_id)?;
        let user = r
            .user
            .ok_or_else(|| IdentityError::invalid("user", "is required"))?;
        let id = uuid_field("user.id", &user.id)?;
        let mask = r
            .update_mask
            .filter(|m| !m.paths.is_empty())
            .ok_or_else(|| IdentityError::invalid("update_mask", "is required"))?;
        let mut patch = UserPatch::default();
        for path in &mask.paths {
            match path.as_str() {
                "display_name" => patch.display_name = Some(user.display_name.clone()),
                "email" => patch.email = Some(user.email.clone()),
                "role" => {
                    patch.role = Some(
                        role_from_pb("user.role", user.role)?
                            .ok_or_else(|| IdentityError::invalid("user.role", "is required"))?,
                    );
                }
                "status" => {
                    patch.status = Some(
                        status_from_pb("user.status", user.status)?
                            .ok_or_else(|| IdentityError::invalid("user.status", "is required"))?,
                    );
                }
                _ => {
                    return Err(IdentityError::invalid(
                        "update_mask",
                        format!("path {path:?} cannot be updated"),
                    )
                    .into());
                }
            }
        }
        let user = self.app.update_user(&caller, id, patch).await?;
        Ok(Response::new(pb::UpdateUserResponse {
            user: Some(user_to_pb(user)),
        }))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let caller = self.caller(&request).await?.principal;
        let client = self.client(&request);
        let r = request.into_inner();
        uuid_field("request_id", &r.request_id)?;
        required("current_password", &r.current_password)?;
        required("new_password", &r.new_password)?;
        let n = self
            .app
            .change_password(
                &caller,
                SecretString::from(r.current_password),
                SecretString::from(r.new_password),
                &client,
            )
            .await?;
        Ok(Response::new(pb::ChangePasswordResponse {
            revoked_session_count: count(n),
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let caller = self.caller(&request).await?.principal;
        let r = request.into_inner();
        let role = role_from_pb("role", r.role)?;
        let status = status_from_pb("status", r.status)?;
        let (users, next) = self
            .app
            .list_users(&caller, r.page_size, &r.page_token, role, status)
            .await?;
        Ok(Response::new(pb::ListUsersResponse {
            users: users.into_iter().map(user_to_pb).collect(),
            next_page_token: next,
        }))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let client = self.client(&request);
        let r = request.into_inner();
        required("username", &r.username)?;
        required("password", &r.password)?;
        let t = self
            .app
            .login(&r.username, SecretString::from(r.password), &client)
            .await?;
        Ok(Response::new(pb::LoginResponse {
            access_token: t.access_token,
            access_token_expire_time: Some(ts(t.access_expire_time)),
            refresh_token: secrecy::ExposeSecret::expose_secret(&t.refresh_token).to_owned(),
            refresh_token_expire_time: Some(ts(t.refresh_expire_time)),
            token_type: "Bearer".to_owned(),
            session_id: t.session_id.to_string(),
            user: Some(user_to_pb(t.user)),
        }))
    }

    async fn refresh_session(
        &self,
        request: Request<pb::RefreshSessionRequest>,
    ) -> Result<Response<pb::RefreshSessionResponse>, Status> {
        let r = request.into_inner();
        required("refresh_token", &r.refresh_token)?;
        let t = self
            .app
            .refresh(SecretString::from(r.refresh_token))
            .await?;
        Ok(Response::new(pb::RefreshSessionResponse {
            access_token: t.access_token,
            access_token_expire_time: Some(ts(t.access_expire_time)),
            refresh_token: secrecy::ExposeSecret::expose_secret(&t.refresh_token).to_owned(),
            refresh_token_expire_time: Some(ts(t.refresh_expire_time)),
            token_type: "Bearer".to_owned(),
            session_id: t.session_id.to_string(),
        }))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let token = self.caller(&request).await?;
        uuid_field("request_id", &request.get_ref().request_id)?;
        self.app.logout(&token).await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn revoke_all_sessions(
        &self,
        request: Request<pb::RevokeAllSessionsRequest>,
    ) -> Result<Response<pb::RevokeAllSessionsResponse>, Status> {
        let caller = self.caller(&request).await?.principal;
        let r = request.into_inner();
        uuid_field("request_id", &r.request_id)?;
        let user_id = if r.user_id.is_empty() {
            None
        } else {
            Some(uuid_field("user_id", &r.user_id)?)
        };
        let n = self.app.revoke_all(&caller, user_id).await?;
        Ok(Response::new(pb::RevokeAllSessionsResponse {
            revoked_session_count: count(n),
        }))
    }

    async fn get_jwks(
        &self,
        _request: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        let keys = self
            .app
            .jwks()
            .into_iter()
            .map(|k| pb::Jwk {
                kty: k.kty,
                crv: k.crv,
                x: k.x,
                kid: k.kid,
                alg: k.alg,
                r#use: k.use_,
            })
            .collect();
        Ok(Response::new(pb::GetJwksResponse { keys }))
    }

    async fn issue_service_token(
        &self,
        request: Request<pb::IssueServiceTokenRequest>,
    ) -> Result<Response<pb::IssueServiceTokenResponse>, Status> {
        let r = request.into_inner();
        required("service_id", &r.service_id)?;
        required("secret", &r.secret)?;
        let (token, exp) = self
            .app
            .issue_service_token(&r.service_id, SecretString::from(r.secret))
            .await?;
        Ok(Response::new(pb::IssueServiceTokenResponse {
            access_token: token,
            access_token_expire_time: Some(ts(exp)),
            token_type: "Bearer".to_owned(),
        }))
    }
}
