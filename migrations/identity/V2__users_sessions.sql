-- Users, sessions with rotating refresh tokens, and service accounts.
--
-- Secrets are stored only as hashes: passwords and service secrets as argon2id PHC
-- strings, refresh tokens as SHA-256 (they are 256 random bits, so a fast hash is
-- enough and lets the token itself be the lookup key).

CREATE TABLE identity.users (
    id              uuid        PRIMARY KEY,
    -- 3 to 64 of [a-z0-9._-]; immutable.
    username        text        NOT NULL,
    email           text        NOT NULL,
    display_name    text        NOT NULL DEFAULT '',
    password_hash   text        NOT NULL,
    role            text        NOT NULL,
    status          text        NOT NULL DEFAULT 'active',
    -- AIP-155: the CreateUser request that made this user; a replay returns it.
    create_request_id uuid,
    create_time     timestamptz NOT NULL DEFAULT now(),
    update_time     timestamptz NOT NULL DEFAULT now(),
    last_login_time timestamptz,
    CONSTRAINT users_username_key UNIQUE (username),
    CONSTRAINT users_create_request_id_key UNIQUE (create_request_id),
    CONSTRAINT users_role_check CHECK (role IN ('customer', 'operator', 'admin')),
    CONSTRAINT users_status_check CHECK (status IN ('active', 'disabled')),
    CONSTRAINT users_username_check CHECK (username ~ '^[a-z0-9._-]{3,64}$')
);

-- Emails are unique case-insensitively.
CREATE UNIQUE INDEX users_email_key ON identity.users (lower(email));

-- One row per login: the session id is the access tokens' `sid` and names the
-- refresh-token family.
CREATE TABLE identity.sessions (
    id                uuid        PRIMARY KEY,
    user_id           uuid        NOT NULL REFERENCES identity.users (id),
    user_agent        text        NOT NULL DEFAULT '',
    client_ip         text        NOT NULL DEFAULT '',
    create_time       timestamptz NOT NULL DEFAULT now(),
    last_refresh_time timestamptz,
    -- When the newest refresh token expires.
    expire_time       timestamptz NOT NULL,
    revoke_time       timestamptz,
    -- logout | refresh_token_reused | revoke_all | password_changed | user_disabled
    revoke_reason     text
);

CREATE INDEX sessions_user_id_idx ON identity.sessions (user_id) WHERE revoke_time IS NULL;

-- Every refresh token a session was given. The live one has spent_time NULL; a spent
-- one presented again means the family leaked, and the session is revoked.
CREATE TABLE identity.refresh_tokens (
    token_hash  bytea       PRIMARY KEY,
    session_id  uuid        NOT NULL REFERENCES identity.sessions (id),
    create_time timestamptz NOT NULL DEFAULT now(),
    expire_time timestamptz NOT NULL,
    spent_time  timestamptz
);

CREATE INDEX refresh_tokens_session_id_idx ON identity.refresh_tokens (session_id);

-- Client-credentials accounts for service-to-service calls (role `service`).
CREATE TABLE identity.service_accounts (
    id          uuid        PRIMARY KEY,
    -- e.g. "payments".
    name        text        NOT NULL,
    secret_hash text        NOT NULL,
    disabled    boolean     NOT NULL DEFAULT false,
    create_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT service_accounts_name_key UNIQUE (name)
);
