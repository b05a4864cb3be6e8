-- Roles (the `roles` claim of access tokens; `admin` guards the admin API) and the audit hash chain.

ALTER TABLE accounts ADD COLUMN roles text[] NOT NULL DEFAULT '{}';
CREATE INDEX accounts_by_created ON accounts (created_at, id);

-- Each event's `hash` is HMAC-SHA256 (key derived from the KEK) over the previous event's hash and this
-- event's fields, in id order (see src/audit/). Events written before this migration have none: the
-- chain starts at the first event with a hash. `prev_hash` lets the chain be checked from the first
-- kept event after retention has deleted older ones.
ALTER TABLE audit_events ADD COLUMN prev_hash bytea, ADD COLUMN hash bytea;
CREATE INDEX audit_events_by_time ON audit_events (occurred_at, id);
