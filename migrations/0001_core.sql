-- Tessera core schema: accounts, sessions, refresh tokens, signing keys, audit events.
-- Forward-only: never edit an applied migration; add a new file instead.

CREATE TABLE accounts (
  id                    uuid PRIMARY KEY,
  -- Canonical form (trimmed, NFKC, lower-cased): the uniqueness key, so case and width variants collide.
  email                 text NOT NULL CONSTRAINT accounts_email_key UNIQUE,
  email_verified_at     timestamptz,
  password_hash         text NOT NULL,
  display_name          text,
  status                text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled', 'deleted')),
  created_at            timestamptz NOT NULL,
  updated_at            timestamptz NOT NULL,
  last_login_at         timestamptz,
  last_login_ip         inet,
  failed_login_attempts integer NOT NULL DEFAULT 0 CHECK (failed_login_attempts >= 0),
  locked_until          timestamptz,
  password_changed_at   timestamptz NOT NULL
);

CREATE TABLE sessions (
  id            uuid PRIMARY KEY,
  account_id    uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  created_at    timestamptz NOT NULL,
  last_used_at  timestamptz NOT NULL,
  -- Absolute end of the session; the idle end is carried by each refresh token's expires_at.
  expires_at    timestamptz NOT NULL,
  ip            inet,
  user_agent    text,
  revoked_at    timestamptz,
  revoke_reason text,
  CHECK ((revoked_at IS NULL) = (revoke_reason IS NULL))
);
CREATE INDEX sessions_live_by_account ON sessions (account_id) WHERE revoked_at IS NULL;
-- Every instance re-reads recent revocations to reject access tokens of revoked sessions.
CREATE INDEX sessions_recently_revoked ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE refresh_tokens (
  -- SHA-256 of the token: the token itself is never stored.
  token_hash  bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
  session_id  uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
  parent_hash bytea,
  created_at  timestamptz NOT NULL,
  used_at     timestamptz,
  expires_at  timestamptz NOT NULL
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);
-- A token has at most one child: a rotation can never fork a session, whatever the concurrency.
CREATE UNIQUE INDEX refresh_tokens_one_child ON refresh_tokens (parent_hash) WHERE parent_hash IS NOT NULL;

CREATE TABLE signing_keys (
  kid                    text PRIMARY KEY,          -- RFC 7638 thumbprint
  alg                    text NOT NULL CHECK (alg IN ('EdDSA', 'ES256')),
  public_jwk             jsonb NOT NULL,
  -- AES-256-GCM under a key derived from TESSERA_KEY_ENCRYPTION_KEY: iv (12) || tag (16) || ciphertext.
  private_key_ciphertext bytea NOT NULL,
  created_at             timestamptz NOT NULL,
  activates_at           timestamptz NOT NULL,      -- starts signing
  retires_at             timestamptz,               -- stops signing
  expires_at             timestamptz                -- leaves the JWKS
);

CREATE TABLE audit_events (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  occurred_at timestamptz NOT NULL,
  type        text NOT NULL,
  account_id  uuid,                                  -- no foreign key: the record outlives the account
  actor       text NOT NULL,                         -- 'account:<uuid>', 'system', 'cli'
  ip          inet,
  user_agent  text,
  request_id  text,
  data        jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_by_account ON audit_events (account_id, id);
CREATE INDEX audit_events_by_type ON audit_events (type, id);
