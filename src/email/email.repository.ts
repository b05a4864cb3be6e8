import type { Queryable } from '../db/pool.ts'

export type TokenPurpose = 'verify_email' | 'reset_password' | 'change_email'

export interface EmailTokenRow {
  id: string
  account_id: string
  purpose: TokenPurpose
  email: string
  created_at: Date
  expires_at: Date
  consumed_at: Date | null
  revoked_at: Date | null
}

/** Inserts a token and revokes the live ones of the same account and purpose: only the newest link works. */
export async function insertToken(
  db: Queryable,
  t: { id: string; accountId: string; purpose: TokenPurpose; email: string; hash: Buffer; now: Date; expiresAt: Date },
): Promise<void> {
  await db.query(
    `UPDATE email_tokens SET revoked_at = $3
     WHERE account_id = $1 AND purpose = $2 AND consumed_at IS NULL AND revoked_at IS NULL`,
    [t.accountId, t.purpose, t.now],
  )
  await db.query(
    `INSERT INTO email_tokens (id, account_id, purpose, email, token_hash, created_at, expires_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7)`,
    [t.id, t.accountId, t.purpose, t.email, t.hash, t.now, t.expiresAt],
  )
}

/** Revokes every live token of the account (a password or email change); returns how many. */
export async function revokeAccountTokens(db: Queryable, accountId: string, now: Date): Promise<number> {
  const { rowCount } = await db.query(
    'UPDATE email_tokens SET revoked_at = $2 WHERE account_id = $1 AND consumed_at IS NULL AND revoked_at IS NULL',
    [accountId, now],
  )
  return rowCount ?? 0
}

/** A token that can still be used, without using it (the confirmation page's GET). */
export async function findLiveToken(db: Queryable, hash: Buffer, purpose: TokenPurpose, now: Date): Promise<EmailTokenRow | undefined> {
  const { rows } = await db.query<EmailTokenRow>(
    `SELECT id, account_id, purpose, email, created_at, expires_at, consumed_at, revoked_at FROM email_tokens
     WHERE token_hash = $1 AND purpose = $2 AND consumed_at IS NULL AND revoked_at IS NULL AND expires_at > $3`,
    [hash, purpose, now],
  )
  return rows[0]
}

/**
 * Uses a token: one conditional UPDATE, so of two concurrent confirmations exactly one gets the row
 * and the other `undefined`, whatever the interleaving.
 */
export async function consumeToken(db: Queryable, hash: Buffer, purpose: TokenPurpose, now: Date): Promise<EmailTokenRow | undefined> {
  const { rows } = await db.query<EmailTokenRow>(
    `UPDATE email_tokens SET consumed_at = $3
     WHERE token_hash = $1 AND purpose = $2 AND consumed_at IS NULL AND revoked_at IS NULL AND expires_at > $3
     RETURNING id, account_id, purpose, email, created_at, expires_at, consumed_at, revoked_at`,
    [hash, purpose, now],
  )
  return rows[0]
}

export interface MessageRow {
  id: string
  kind: string
  account_id: string | null
  recipient: string | null
  token_id: string | null
  created_at: Date
  attempts: number
  last_error: string | null
  delivered_at: Date | null
  dead_at: Date | null
  skipped_at: Date | null
  /** Joined from the token, when there is one. */
  token_live: boolean | null
}

/**
 * Serialises the messages of one account and one address (transaction-scoped advisory locks, account
 * first, always in that order), so that two concurrent requests cannot both pass the throttle.
 */
export async function lockRecipient(db: Queryable, accountId: string | null, recipientHash: Buffer): Promise<void> {
  if (accountId !== null) await db.query("SELECT pg_advisory_xact_lock(hashtextextended('tessera.email.account:' || $1, 0))", [accountId])
  await db.query("SELECT pg_advisory_xact_lock(hashtextextended('tessera.email.recipient:' || encode($1, 'hex'), 0))", [recipientHash])
}

/** Messages of a kind sent to this address or this account since `since`, and the latest one's time. */
export async function recentMessages(
  db: Queryable,
  p: { kind: string; accountId: string | null; recipientHash: Buffer; since: Date },
): Promise<{ count: number; last: Date | null }> {
  const { rows } = await db.query<{ count: number; last: Date | null }>(
    `SELECT count(*)::int AS count, max(created_at) AS last FROM email_messages
     WHERE kind = $1 AND created_at > $4 AND (recipient_hash = $3 OR account_id = $2)`,
    [p.kind, p.accountId, p.recipientHash, p.since],
  )
  return rows[0] ?? { count: 0, last: null }
}

export async function insertMessage(
  db: Queryable,
  m: { id: string; kind: string; accountId: string | null; recipient: string; recipientHash: Buffer; tokenId: string | null; now: Date },
): Promise<void> {
  await db.query(
    `INSERT INTO email_messages (id, kind, account_id, recipient, recipient_hash, token_id, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7)`,
    [m.id, m.kind, m.accountId, m.recipient, m.recipientHash, m.tokenId, m.now],
  )
}

/** The message with whether its token can still be used (`null` for messages without a token). */
export async function findMessage(db: Queryable, id: string, now: Date): Promise<MessageRow | undefined> {
  const { rows } = await db.query<MessageRow>(
    `SELECT m.id, m.kind, m.account_id, m.recipient, m.token_id, m.created_at, m.attempts, m.last_error,
            m.delivered_at, m.dead_at, m.skipped_at,
            CASE WHEN m.token_id IS NULL THEN NULL
                 ELSE coalesce(t.consumed_at IS NULL AND t.revoked_at IS NULL AND t.expires_at > $2, false) END AS token_live
     FROM email_messages m LEFT JOIN email_tokens t ON t.id = m.token_id WHERE m.id = $1`,
    [id, now],
  )
  return rows[0]
}

/** Marks the message delivered and forgets the address: nothing more needs it. */
export async function markDelivered(db: Queryable, id: string, now: Date): Promise<void> {
  await db.query('UPDATE email_messages SET delivered_at = $2, attempts = attempts + 1, recipient = NULL, dead_at = NULL WHERE id = $1', [id, now])
}

export async function markSkipped(db: Queryable, id: string, now: Date): Promise<void> {
  await db.query('UPDATE email_messages SET skipped_at = $2, recipient = NULL WHERE id = $1', [id, now])
}

export async function markFailed(db: Queryable, id: string, p: { error: string; dead: boolean; now: Date }): Promise<void> {
  await db.query(
    'UPDATE email_messages SET attempts = attempts + 1, last_error = $2, dead_at = CASE WHEN $3 THEN $4::timestamptz ELSE NULL END WHERE id = $1',
    [id, p.error.slice(0, 500), p.dead, p.now],
  )
}

export async function clearDead(db: Queryable, id: string): Promise<void> {
  await db.query('UPDATE email_messages SET dead_at = NULL WHERE id = $1', [id])
}

export async function insertOutbox(
  db: Queryable,
  m: { messageId: string; recipient: string; subject: string; text: string; html: string; now: Date },
): Promise<void> {
  await db.query(
    `INSERT INTO mail_outbox (message_id, recipient, subject, text_body, html_body, created_at)
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (message_id) DO NOTHING`,
    [m.messageId, m.recipient, m.subject, m.text, m.html, m.now],
  )
}

export interface OutboxRow {
  message_id: string
  recipient: string
  subject: string
  text_body: string
  created_at: Date
}

export async function listOutbox(db: Queryable, limit: number, recipient?: string): Promise<OutboxRow[]> {
  const { rows } = await db.query<OutboxRow>(
    `SELECT message_id, recipient, subject, text_body, created_at FROM mail_outbox
     WHERE $2::text IS NULL OR recipient = $2 ORDER BY created_at DESC, message_id LIMIT $1`,
    [limit, recipient ?? null],
  )
  return rows
}

/** Queue figures from the message record: what is waiting, for how long, and what is dead. */
export async function deliveryStats(db: Queryable, now: Date): Promise<{ pending: number; oldestPendingSeconds: number; dead: number; failing: number }> {
  const { rows } = await db.query<{ pending: number; oldest: Date | null; dead: number; failing: number }>(
    `SELECT count(*) FILTER (WHERE dead_at IS NULL)::int AS pending,
            min(created_at) FILTER (WHERE dead_at IS NULL) AS oldest,
            count(*) FILTER (WHERE dead_at IS NOT NULL)::int AS dead,
            count(*) FILTER (WHERE dead_at IS NULL AND attempts > 0)::int AS failing
     FROM email_messages WHERE delivered_at IS NULL AND skipped_at IS NULL`,
  )
  const r = rows[0]
  return {
    pending: r?.pending ?? 0,
    oldestPendingSeconds: r?.oldest ? Math.max(0, (now.getTime() - r.oldest.getTime()) / 1000) : 0,
    dead: r?.dead ?? 0,
    failing: r?.failing ?? 0,
  }
}

/**
 * Erases what the email tables hold about an account (account deletion): its tokens, its messages
 * (the outbox copies go with them) and so its throttle history. A job still queued for one of them
 * finds no message and ends without sending.
 */
export async function forgetAccount(db: Queryable, accountId: string): Promise<void> {
  await db.query('DELETE FROM email_messages WHERE account_id = $1', [accountId])
  await db.query('DELETE FROM email_tokens WHERE account_id = $1', [accountId])
}
