-- Service clients (OAuth 2.0 confidential clients), revoked access-token ids, and emergency key revocation.

CREATE TABLE oauth_clients (
  client_id   text PRIMARY KEY CHECK (client_id ~ '^[a-z0-9][a-z0-9_.-]{2,63}$'),
  name        text NOT NULL,
  -- SHA-256 of the secret. Secrets are 256 random bits, so a fast hash is enough (no dictionary to try).
  secret_hash bytea NOT NULL CHECK (octet_length(secret_hash) = 32),
  scopes      text[] NOT NULL DEFAULT '{}',
  audiences   text[] NOT NULL DEFAULT '{}',
  created_at  timestamptz NOT NULL,
  disabled_at timestamptz
);

-- Access tokens revoked one by one (service-client tokens have no session). Rows are useful only until
-- the token expires; expired rows are ignored and may be deleted.
CREATE TABLE revoked_access_tokens (
  jti        uuid PRIMARY KEY,
  client_id  text NOT NULL,
  revoked_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL
);
CREATE INDEX revoked_access_tokens_by_expiry ON revoked_access_tokens (expires_at);

ALTER TABLE signing_keys ADD COLUMN revoked_at timestamptz;
