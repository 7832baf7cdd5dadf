//! Every SQL string of the identity service, and the Redis login-throttle counters.
//! Statements name their parameter types (they run behind a transaction-mode pooler);
//! multi-statement work runs in one transaction with `query_typed`.

pub mod throttle;

use chrono::{DateTime, Utc};
use ferrobank_auth::Role;
use ferrobank_db::{Db, Row, StoreError, Type};
use uuid::Uuid;

/// Whether a user may sign in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserStatus {
    /// May sign in.
    Active,
    /// May not.
    Disabled,
}

impl UserStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "active" => Ok(Self::Active),
            "disabled" => Ok(Self::Disabled),
            other => Err(internal(format!("unknown user status {other:?}"))),
        }
    }
}

/// A user row, without the password hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Id.
    pub id: Uuid,
    /// Sign-in name.
    pub username: String,
    /// Email.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Role (never `service`).
    pub role: Role,
    /// Status.
    pub status: UserStatus,
    /// Created.
    pub create_time: DateTime<Utc>,
    /// Last changed.
    pub update_time: DateTime<Utc>,
    /// Last successful login.
    pub last_login_time: Option<DateTime<Utc>>,
}

/// A new user to insert.
#[derive(Debug)]
pub struct NewUser<'a> {
    /// Id.
    pub id: Uuid,
    /// Sign-in name (validated).
    pub username: &'a str,
    /// Email (validated).
    pub email: &'a str,
    /// Display name.
    pub display_name: &'a str,
    /// argon2id PHC string.
    pub password_hash: &'a str,
    /// Role.
    pub role: Role,
    /// The CreateUser request id, if any.
    pub request_id: Option<Uuid>,
}

/// What RefreshSession found.
#[derive(Debug)]
pub enum Rotation {
    /// The token was live and is now spent; the new one is stored.
    Rotated {
        /// The session.
        session_id: Uuid,
        /// Its user.
        user: User,
    },
    /// The token was already spent: the session is now revoked.
    Reused {
        /// The revoked session.
        session_id: Uuid,
    },
    /// Unknown, expired, or its session is revoked or expired.
    Invalid,
}

/// The identity database.
#[derive(Clone)]
pub struct Store {
    db: Db,
}

fn internal(msg: String) -> StoreError {
    StoreError::Internal(msg.into())
}

const USER_COLUMNS: &str = "id, username, email, display_name, role, status, create_time, \
                            update_time, last_login_time";

fn user_from(row: &Row) -> Result<User, StoreError> {
    let role: String = row.get("role");
    let status: String = row.get("status");
    Ok(User {
        id: row.get("id"),
        username: row.get("username"),
        email: row.get("email"),
        display_name: row.get("display_name"),
        role: role
            .parse()
            .map_err(|()| internal(format!("unknown role {role:?}")))?,
        status: UserStatus::parse(&status)?,
        create_time: row.get("create_time"),
        update_time: row.get("update_time"),
        last_login_time: row.get("last_login_time"),
    })
}

impl Store {
    /// Wraps the pool.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The pool (health checks).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Inserts a user (UniqueViolation names `users_username_key`, `users_email_key`
    /// or `users_create_request_id_key`).
    pub async fn insert_user(&self, u: &NewUser<'_>) -> Result<User, StoreError> {
        let role = u.role.as_str();
        let sql = format!(
            "INSERT INTO identity.users \
               (id, username, email, display_name, password_hash, role, create_request_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {USER_COLUMNS}"
        );
        let row = self
            .db
            .query_one(
                &sql,
                &[
                    (&u.id, Type::UUID),
                    (&u.username, Type::TEXT),
                    (&u.email, Type::TEXT),
                    (&u.display_name, Type::TEXT),
                    (&u.password_hash, Type::TEXT),
                    (&role, Type::TEXT),
                    (&u.request_id, Type::UUID),
                ],
            )
            .await?;
        user_from(&row)
    }

    /// The user created by CreateUser request `request_id`.
    pub async fn user_by_request_id(&self, request_id: Uuid) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM identity.users WHERE create_request_id = $1");
        self.db
            .query_opt(&sql, &[(&request_id, Type::UUID)])
            .await?
            .as_ref()
            .map(user_from)
            .transpose()
    }

    /// One user.
    pub async fn user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM identity.users WHERE id = $1");
        self.db
            .query_opt(&sql, &[(&id, Type::UUID)])
            .await?
            .as_ref()
            .map(user_from)
            .transpose()
    }

    /// A user and their password hash, by username.
    pub async fn user_with_hash(
        &self,
        username: &str,
    ) -> Result<Option<(User, String)>, StoreError> {
        let sql =
            format!("SELECT {USER_COLUMNS}, password_hash FROM identity.users WHERE username = $1");
        match self.db.query_opt(&sql, &[(&username, Type::TEXT)]).await? {
            Some(row) => Ok(Some((user_from(&row)?, row.get("password_hash")))),
            None => Ok(None),
        }
    }

    /// A user's password hash, by id.
    pub async fn password_hash(&self, id: Uuid) -> Result<Option<String>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT password_hash FROM identity.users WHERE id = $1",
                &[(&id, Type::UUID)],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Updates the fields given (None leaves a field unchanged).
    pub async fn update_user(
        &self,
        id: Uuid,
        display_name: Option<&str>,
        email: Option<&str>,
        role: Option<Role>,
        status: Option<UserStatus>,
    ) -> Result<Option<User>, StoreError> {
        let role = role.map(Role::as_str);
        let status = status.map(UserStatus::as_str);
        let sql = format!(
            "UPDATE identity.users SET \
               display_name = COALESCE($2, display_name), \
               email = COALESCE($3, email), \
               role = COALESCE($4, role), \
               status = COALESCE($5, status), \
               update_time = now() \
             WHERE id = $1 RETURNING {USER_COLUMNS}"
        );
        self.db
            .query_opt(
                &sql,
                &[
                    (&id, Type::UUID),
                    (&display_name, Type::TEXT),
                    (&email, Type::TEXT),
                    (&role, Type::TEXT),
                    (&status, Type::TEXT),
                ],
            )
            .await?
            .as_ref()
            .map(user_from)
            .transpose()
    }

    /// Replaces a user's password hash.
    pub async fn set_password_hash(&self, id: Uuid, hash: &str) -> Result<(), StoreError> {
        self.db
            .query(
                "UPDATE identity.users SET password_hash = $2, update_time = now() WHERE id = $1",
                &[(&id, Type::UUID), (&hash, Type::TEXT)],
            )
            .await?;
        Ok(())
    }

    /// Users ordered by username, after `after`, filtered, at most `limit`.
    pub async fn list_users(
        &self,
        after: &str,
        role: Option<Role>,
        status: Option<UserStatus>,
        limit: i64,
    ) -> Result<Vec<User>, StoreError> {
        let role = role.map(Role::as_str);
        let status = status.map(UserStatus::as_str);
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM identity.users \
             WHERE username > $1 AND ($2::text IS NULL OR role = $2) \
               AND ($3::text IS NULL OR status = $3) \
             ORDER BY username LIMIT $4"
        );
        let rows = self
            .db
            .query(
                &sql,
                &[
                    (&after, Type::TEXT),
                    (&role, Type::TEXT),
                    (&status, Type::TEXT),
                    (&limit, Type::INT8),
                ],
            )
            .await?;
        rows.iter().map(user_from).collect()
    }

    /// Starts a session with its first refresh token; records the login time.
    pub async fn create_session(
        &self,
        session_id: Uuid,
        user_id: Uuid,
        token_hash: &[u8],
        user_agent: &str,
        client_ip: &str,
        expire_time: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // One statement: the CTEs all run, whatever the outer SELECT reads.
        self.db
            .query(
                "WITH s AS ( \
                   INSERT INTO identity.sessions (id, user_id, user_agent, client_ip, expire_time) \
                   VALUES ($1, $2, $4, $5, $6) RETURNING id), \
                 t AS ( \
                   INSERT INTO identity.refresh_tokens (token_hash, session_id, expire_time) \
                   SELECT $3, id, $6 FROM s RETURNING session_id), \
                 u AS ( \
                   UPDATE identity.users SET last_login_time = now() WHERE id = $2 RETURNING id) \
                 SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM u)",
                &[
                    (&session_id, Type::UUID),
                    (&user_id, Type::UUID),
                    (&token_hash, Type::BYTEA),
                    (&user_agent, Type::TEXT),
                    (&client_ip, Type::TEXT),
                    (&expire_time, Type::TIMESTAMPTZ),
                ],
            )
            .await?;
        Ok(())
    }

    /// Spends the refresh token hashed `old` and stores `new` in its place, or detects
    /// reuse (revoking the session) — in one transaction, so two concurrent refreshes
    /// with the same token cannot both succeed.
    pub async fn rotate_refresh(
        &self,
        old: &[u8],
        new: &[u8],
        expire_time: DateTime<Utc>,
    ) -> Result<Rotation, StoreError> {
        let mut conn = self.db.conn().await?;
        let tx = conn.transaction().await?;
        let spent = tx
            .query_typed(
                "UPDATE identity.refresh_tokens t SET spent_time = now() \
                 FROM identity.sessions s \
                 WHERE t.token_hash = $1 AND t.spent_time IS NULL AND t.expire_time > now() \
                   AND s.id = t.session_id AND s.revoke_time IS NULL \
                 RETURNING s.id, s.user_id",
                &[(&old, Type::BYTEA)],
            )
            .await?;
        if let Some(row) = spent.first() {
            let session_id: Uuid = row.get(0);
            let user_id: Uuid = row.get(1);
            tx.query_typed(
                "INSERT INTO identity.refresh_tokens (token_hash, session_id, expire_time) \
                 VALUES ($1, $2, $3)",
                &[
                    (&new, Type::BYTEA),
                    (&session_id, Type::UUID),
                    (&expire_time, Type::TIMESTAMPTZ),
                ],
            )
            .await?;
            tx.query_typed(
                "UPDATE identity.sessions SET last_refresh_time = now(), expire_time = $2 \
                 WHERE id = $1",
                &[(&session_id, Type::UUID), (&expire_time, Type::TIMESTAMPTZ)],
            )
            .await?;
            let sql = format!("SELECT {USER_COLUMNS} FROM identity.users WHERE id = $1");
            let user = tx.query_typed(&sql, &[(&user_id, Type::UUID)]).await?;
            let user = user_from(user.first().ok_or(StoreError::NotFound)?)?;
            tx.commit().await?;
            return Ok(Rotation::Rotated { session_id, user });
        }
        let known = tx
            .query_typed(
                "SELECT session_id, spent_time IS NOT NULL FROM identity.refresh_tokens \
                 WHERE token_hash = $1",
                &[(&old, Type::BYTEA)],
            )
            .await?;
        let outcome = match known.first() {
            Some(row) if row.get::<_, bool>(1) => {
                let session_id: Uuid = row.get(0);
                tx.query_typed(
                    "UPDATE identity.sessions \
                     SET revoke_time = now(), revoke_reason = 'refresh_token_reused' \
                     WHERE id = $1 AND revoke_time IS NULL",
                    &[(&session_id, Type::UUID)],
                )
                .await?;
                Rotation::Reused { session_id }
            }
            _ => Rotation::Invalid,
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Revokes one session of `user_id`; whether it was live.
    pub async fn revoke_session(
        &self,
        session_id: Uuid,
        user_id: Uuid,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let rows = self
            .db
            .query(
                "UPDATE identity.sessions SET revoke_time = now(), revoke_reason = $3 \
                 WHERE id = $1 AND user_id = $2 AND revoke_time IS NULL RETURNING id",
                &[
                    (&session_id, Type::UUID),
                    (&user_id, Type::UUID),
                    (&reason, Type::TEXT),
                ],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// Sessions of `user_id` (except `keep`) whose tokens may still be live: not revoked,
    /// or revoked within the last `window_secs` (a revocation whose Redis half may have
    /// failed must be retried, not forgotten).
    pub async fn sessions_to_revoke(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        window_secs: i64,
    ) -> Result<Vec<Uuid>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT id FROM identity.sessions \
                 WHERE user_id = $1 AND ($2::uuid IS NULL OR id <> $2) \
                   AND (revoke_time IS NULL \
                        OR revoke_time > now() - $3::bigint * interval '1 second')",
                &[
                    (&user_id, Type::UUID),
                    (&keep, Type::UUID),
                    (&window_secs, Type::INT8),
                ],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Revokes every live session of `user_id` except `keep`; the ids revoked.
    pub async fn revoke_user_sessions(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        reason: &str,
    ) -> Result<Vec<Uuid>, StoreError> {
        let rows = self
            .db
            .query(
                "UPDATE identity.sessions SET revoke_time = now(), revoke_reason = $3 \
                 WHERE user_id = $1 AND revoke_time IS NULL \
                   AND ($2::uuid IS NULL OR id <> $2) RETURNING id",
                &[
                    (&user_id, Type::UUID),
                    (&keep, Type::UUID),
                    (&reason, Type::TEXT),
                ],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Inserts a service account.
    pub async fn insert_service_account(
        &self,
        id: Uuid,
        name: &str,
        secret_hash: &str,
    ) -> Result<(), StoreError> {
        self.db
            .query(
                "INSERT INTO identity.service_accounts (id, name, secret_hash) VALUES ($1, $2, $3)",
                &[
                    (&id, Type::UUID),
                    (&name, Type::TEXT),
                    (&secret_hash, Type::TEXT),
                ],
            )
            .await?;
        Ok(())
    }

    /// A live service account's id and secret hash, by name.
    pub async fn service_account(&self, name: &str) -> Result<Option<(Uuid, String)>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT id, secret_hash FROM identity.service_accounts \
                 WHERE name = $1 AND NOT disabled",
                &[(&name, Type::TEXT)],
            )
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }
}
