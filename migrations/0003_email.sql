-- Email: one-time tokens (verification, password reset, email change), the record of every message
-- (idempotency key, throttling, delivery state) and the development mail outbox.
-- The job queue itself lives in the `pgboss` schema, installed by pg-boss (see src/jobs/).

CREATE TABLE email_tokens (
  id          uuid PRIMARY KEY,
  account_id  uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  purpose     text NOT NULL CHECK (purpose IN ('verify_email', 'reset_password', 'change_email')),
  -- The address the token is bound to: the account's address (verify, reset) or the new one (change).
  email       text NOT NULL,
  -- SHA-256 of the token. The token itself is never stored: it is an HMAC of `id` (see email.tokens.ts).
  token_hash  bytea NOT NULL CONSTRAINT email_tokens_hash_key UNIQUE CHECK (octet_length(token_hash) = 32),
  created_at  timestamptz NOT NULL,
  expires_at  timestamptz NOT NULL,
  consumed_at timestamptz,
  -- Set when a newer token, a password change or an email change makes this one useless.
  revoked_at  timestamptz,
  CHECK (consumed_at IS NULL OR revoked_at IS NULL)
);
CREATE INDEX email_tokens_live_by_account ON email_tokens (account_id, purpose) WHERE consumed_at IS NULL AND revoked_at IS NULL;

CREATE TABLE email_messages (
  -- The idempotency key: carried by the job, sent as the Message-ID, checked before every delivery.
  id            uuid PRIMARY KEY,
  kind          text NOT NULL,
  account_id    uuid REFERENCES accounts (id) ON DELETE SET NULL,
  -- Needed until delivery only: erased once delivered, skipped or the account deleted.
  recipient     text,
  -- SHA-256 of the canonical recipient address: enough to throttle, nothing to leak.
  recipient_hash bytea NOT NULL CHECK (octet_length(recipient_hash) = 32),
  token_id      uuid REFERENCES email_tokens (id) ON DELETE SET NULL,
  created_at    timestamptz NOT NULL,
  attempts      integer NOT NULL DEFAULT 0,
  last_error    text,
  delivered_at  timestamptz,
  -- Set when every attempt failed and the job went to the dead-letter queue; cleared by a retry.
  dead_at       timestamptz,
  -- Set when the worker dropped the message because its link could no longer work (token used or revoked).
  skipped_at    timestamptz
);
CREATE INDEX email_messages_by_recipient ON email_messages (recipient_hash, kind, created_at);
CREATE INDEX email_messages_by_account ON email_messages (account_id, kind, created_at);
CREATE INDEX email_messages_pending ON email_messages (created_at) WHERE delivered_at IS NULL AND skipped_at IS NULL;

-- Development transport only (no SMTP_URL): the "mailbox" that `tessera mail list` reads.
CREATE TABLE mail_outbox (
  message_id  uuid PRIMARY KEY REFERENCES email_messages (id) ON DELETE CASCADE,
  recipient   text NOT NULL,
  subject     text NOT NULL,
  text_body   text NOT NULL,
  html_body   text NOT NULL,
  created_at  timestamptz NOT NULL
);
