import type { Queryable } from '../db/pool.ts'

export type RevokeReason = 'logout' | 'logout_everywhere' | 'revoked_by_user' | 'refresh_token_reuse' | 'password_changed' | 'password_reset' | 'account_deleted' | 'token_revoked'
  | 'account_disabled' | 'roles_changed' | 'revoked_by_admin'

export interface NewSession {
  readonly id: string
  readonly accountId: string
  readonly now: Date
  readonly expiresAt: Date
  readonly ip: string | null
  readonly userAgent: string | null
}

export async function insertSession(db: Queryable, s: NewSession): Promise<void> {
  await db.query({
    name: 'sessions_insert',
    text: `INSERT INTO sessions (id, account_id, created_at, last_used_at, expires_at, ip, user_agent)
           VALUES ($1, $2, $3, $3, $4, $5, $6)`,
    values: [s.id, s.accountId, s.now, s.expiresAt, s.ip, s.userAgent],
  })
}

export async function insertRefreshToken(db: Queryable, t: { hash: Buffer; sessionId: string; now: Date; expiresAt: Date }): Promise<void> {
  await db.query({
    name: 'refresh_tokens_insert',
    text: 'INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at) VALUES ($1, $2, $3, $4)',
    values: [t.hash, t.sessionId, t.now, t.expiresAt],
  })
}

export interface Rotated {
  session_id: string
  account_id: string
  /** The account's roles, for the new access token's `roles` claim. */
  roles: string[]
}

/**
 * Rotates a refresh token in one statement (one round trip, PERFORMANCE.md): marks the presented token
 * used — only if it is unused and unexpired — and inserts its child, only if the session is live and the
 * account active. Concurrent calls for one token serialise on its row lock; exactly one sees
 * `used_at IS NULL`, so at most one child is ever inserted (the unique index on parent_hash backs this).
 * Returns undefined when nothing was rotated; the caller then looks at why.
 */
export async function rotateRefreshToken(
  db: Queryable,
  p: { hash: Buffer; childHash: Buffer; now: Date; idleSeconds: number },
): Promise<Rotated | undefined> {
  const { rows } = await db.query<Rotated>({
    name: 'refresh_tokens_rotate',
    text: `WITH used AS (
             UPDATE refresh_tokens SET used_at = $3
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $3
             RETURNING session_id
           ), live AS (
             -- The account is looked up by primary key for the one session (LATERAL fixes the order): a
             -- plain join let the planner, on young statistics, scan every active account and each one's
             -- live sessions on every refresh (measured: 2.6x the PostgreSQL CPU per refresh).
             SELECT s.id, s.account_id, s.expires_at, a.roles
             FROM used JOIN sessions s ON s.id = used.session_id
             CROSS JOIN LATERAL (SELECT roles FROM accounts WHERE id = s.account_id AND status = 'active') a
             WHERE s.revoked_at IS NULL AND s.expires_at > $3
           ), child AS (
             INSERT INTO refresh_tokens (token_hash, session_id, parent_hash, created_at, expires_at)
             SELECT $2, live.id, $1, $3, least($3 + make_interval(secs => $4), live.expires_at) FROM live
             RETURNING session_id
           ), touched AS (
             -- last_used_at is for people reading their session list: a minute's precision is plenty,
             -- and skipping the write halves the statement's cost under frequent refreshes.
             UPDATE sessions SET last_used_at = $3 FROM child
             WHERE sessions.id = child.session_id AND sessions.last_used_at < $3 - interval '60 seconds'
           )
           SELECT live.id AS session_id, live.account_id, live.roles FROM live JOIN child ON child.session_id = live.id`,
    values: [p.hash, p.childHash, p.now, p.idleSeconds],
  })
  return rows[0]
}

export interface RefreshTokenState {
  session_id: string
  account_id: string
  used_at: Date | null
  expires_at: Date
  session_revoked_at: Date | null
  session_expires_at: Date
  account_active: boolean
  has_child: boolean
  roles: string[]
}

export async function findRefreshToken(db: Queryable, hash: Buffer): Promise<RefreshTokenState | undefined> {
  const { rows } = await db.query<RefreshTokenState>({
    name: 'refresh_tokens_find',
    text: `SELECT rt.session_id, s.account_id, rt.used_at, rt.expires_at, s.revoked_at AS session_revoked_at,
                  s.expires_at AS session_expires_at, a.status = 'active' AS account_active, a.roles,
                  EXISTS (SELECT 1 FROM refresh_tokens c WHERE c.parent_hash = rt.token_hash) AS has_child
           FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id JOIN accounts a ON a.id = s.account_id
           WHERE rt.token_hash = $1`,
    values: [hash],
  })
  return rows[0]
}

/** Revokes one live session; returns its account id, or undefined if it was not live. */
export async function revokeSession(db: Queryable, sessionId: string, reason: RevokeReason, now: Date): Promise<string | undefined> {
  const { rows } = await db.query<{ account_id: string }>({
    name: 'sessions_revoke',
    text: `UPDATE sessions SET revoked_at = $3, revoke_reason = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING account_id`,
    values: [sessionId, reason, now],
  })
  return rows[0]?.account_id
}

/** Revokes every live session of an account except `keepSessionId`; returns the revoked ids. */
export async function revokeAccountSessions(
  db: Queryable,
  accountId: string,
  reason: RevokeReason,
  now: Date,
  keepSessionId: string | null = null,
): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(
    `UPDATE sessions SET revoked_at = $3, revoke_reason = $2
     WHERE account_id = $1 AND revoked_at IS NULL AND ($4::uuid IS NULL OR id <> $4::uuid) RETURNING id`,
    [accountId, reason, now, keepSessionId],
  )
  return rows.map((r) => r.id)
}

export async function listRevokedSince(db: Queryable, since: Date): Promise<Array<{ id: string; revoked_at: Date }>> {
  const { rows } = await db.query<{ id: string; revoked_at: Date }>({
    name: 'sessions_revoked_since',
    text: 'SELECT id, revoked_at FROM sessions WHERE revoked_at > $1',
    values: [since],
  })
  return rows
}

/** True when the session exists, is not revoked and has not reached its absolute end. */
export async function isSessionLive(db: Queryable, sessionId: string, now: Date): Promise<boolean> {
  const { rowCount } = await db.query({
    name: 'sessions_is_live',
    text: 'SELECT 1 FROM sessions WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2',
    values: [sessionId, now],
  })
  return rowCount === 1
}

export interface SessionRow {
  id: string
  created_at: Date
  last_used_at: Date
  expires_at: Date
  ip: string | null
  user_agent: string | null
}

/** The account's live sessions, most recently used first. */
export async function listLive(db: Queryable, accountId: string, now: Date): Promise<SessionRow[]> {
  const { rows } = await db.query<SessionRow>(
    `SELECT id, created_at, last_used_at, expires_at, host(ip) AS ip, user_agent FROM sessions
     WHERE account_id = $1 AND revoked_at IS NULL AND expires_at > $2
       AND EXISTS (SELECT 1 FROM refresh_tokens rt WHERE rt.session_id = sessions.id AND rt.used_at IS NULL AND rt.expires_at > $2)
     ORDER BY last_used_at DESC, id LIMIT 500`,
    [accountId, now],
  )
  return rows
}

/** Revokes one session only if it belongs to `accountId` (so no one learns whether another exists). */
export async function revokeOwnSession(db: Queryable, accountId: string, sessionId: string, reason: RevokeReason, now: Date): Promise<boolean> {
  const { rowCount } = await db.query(
    'UPDATE sessions SET revoked_at = $4, revoke_reason = $3 WHERE id = $1 AND account_id = $2 AND revoked_at IS NULL',
    [sessionId, accountId, reason, now],
  )
  return rowCount === 1
}
