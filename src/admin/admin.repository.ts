/**
 * SQL of the admin API: account listing and the admin view of one account, the account-state changes
 * only administrators make, operator-created accounts, and the audit-event listing.
 */
import type { AccountRow } from '../accounts/accounts.repository.ts'
import type { Queryable } from '../db/pool.ts'

/** The columns an administrator sees of an account (no password hash). */
export interface AdminAccountRow extends Omit<AccountRow, 'password_hash'> {
  /**
   * `created_at` in UTC with PostgreSQL's full (microsecond) precision: the pagination key. A JS Date
   * keeps milliseconds only, so a cursor built from one could skip or repeat rows that share a millisecond.
   */
  created_at_key: string
}

const ACCOUNT_COLUMNS = `id, email, email_verified_at, display_name, status, roles, created_at, updated_at, last_login_at,
  host(last_login_ip) AS last_login_ip, failed_login_attempts, locked_until, password_changed_at,
  to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created_at_key`

/** Escapes LIKE's wildcards (with `\` as the escape character), so a prefix matches only itself. */
function likePrefix(prefix: string): string {
  return `${prefix.replace(/[\\%_]/g, (c) => `\\${c}`)}%`
}

export interface AccountFilter {
  /** Canonical (lower-case) email prefix; tombstones (no email) never match. */
  readonly emailPrefix: string | undefined
  readonly status: 'active' | 'disabled' | 'deleted' | undefined
  /** Rows strictly after this key in the order (newest first). */
  readonly after: { readonly createdAt: string; readonly id: string } | undefined
  readonly limit: number
}

/** Accounts newest first (`created_at`, then `id`, both descending: the `accounts_by_created` index backwards). */
export async function listAccounts(db: Queryable, f: AccountFilter): Promise<AdminAccountRow[]> {
  const where: string[] = []
  const values: unknown[] = []
  const param = (v: unknown) => { values.push(v); return `$${values.length}` }
  if (f.emailPrefix !== undefined) where.push(`status <> 'deleted' AND email LIKE ${param(likePrefix(f.emailPrefix))} ESCAPE '\\'`)
  if (f.status !== undefined) where.push(`status = ${param(f.status)}`)
  if (f.after !== undefined) where.push(`(created_at, id) < (${param(f.after.createdAt)}::timestamptz, ${param(f.after.id)}::uuid)`)
  const { rows } = await db.query<AdminAccountRow>(
    `SELECT ${ACCOUNT_COLUMNS} FROM accounts ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''}
     ORDER BY created_at DESC, id DESC LIMIT ${param(f.limit)}`,
    values,
  )
  return rows
}

export async function findAccount(db: Queryable, id: string): Promise<AdminAccountRow | undefined> {
  const { rows } = await db.query<AdminAccountRow>(`SELECT ${ACCOUNT_COLUMNS} FROM accounts WHERE id = $1`, [id])
  return rows[0]
}

/**
 * Locks the rows of the given accounts for the rest of the transaction, always in id order, so two
 * administrators acting on each other at once serialise instead of deadlocking, and the second sees
 * what the first did (e.g. that it is no longer an administrator).
 */
export async function lockAccounts(db: Queryable, ids: readonly string[]): Promise<Array<{ id: string; status: string; roles: string[] }>> {
  const { rows } = await db.query<{ id: string; status: string; roles: string[] }>(
    'SELECT id, status, roles FROM accounts WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE',
    [[...new Set(ids)]],
  )
  return rows
}

/**
 * Live sessions: not revoked, not past their absolute end, and holding a usable refresh token — the
 * same definition as the user's own session list (`sessions.repository.listLive`), so the counts agree.
 */
export async function countLiveSessions(db: Queryable, accountId: string, now: Date): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM sessions
     WHERE account_id = $1 AND revoked_at IS NULL AND expires_at > $2
       AND EXISTS (SELECT 1 FROM refresh_tokens rt WHERE rt.session_id = sessions.id AND rt.used_at IS NULL AND rt.expires_at > $2)`,
    [accountId, now],
  )
  return rows[0]?.n ?? 0
}

export async function setStatusAndRoles(db: Queryable, id: string, p: { status: 'active' | 'disabled'; roles: readonly string[]; now: Date }): Promise<void> {
  await db.query('UPDATE accounts SET status = $2, roles = $3, updated_at = $4 WHERE id = $1', [id, p.status, p.roles, p.now])
}

/** Clears the roles of a tombstone: a deleted account holds no rights, not even on paper. */
export async function clearRoles(db: Queryable, id: string, now: Date): Promise<void> {
  await db.query("UPDATE accounts SET roles = '{}', updated_at = $2 WHERE id = $1", [id, now])
}

/**
 * Inserts an active account whose address counts as verified (an operator vouches for it), unless the
 * canonical email is taken; concurrent inserts of one address are settled by the unique constraint.
 */
export async function insertVerifiedAccount(
  db: Queryable,
  a: { id: string; email: string; passwordHash: string; roles: readonly string[]; now: Date },
): Promise<boolean> {
  const { rowCount } = await db.query(
    `INSERT INTO accounts (id, email, email_verified_at, password_hash, roles, created_at, updated_at, password_changed_at)
     VALUES ($1, $2, $5, $3, $4, $5, $5, $5) ON CONFLICT (email) DO NOTHING`,
    [a.id, a.email, a.passwordHash, a.roles, a.now],
  )
  return rowCount === 1
}

export interface AuditEventRow {
  id: number
  occurred_at: Date
  type: string
  account_id: string | null
  actor: string
  ip: string | null
  user_agent: string | null
  request_id: string | null
  data: Record<string, unknown>
}

export interface AuditFilter {
  readonly accountId: string | undefined
  readonly type: string | undefined
  /** Inclusive. */
  readonly since: Date | undefined
  /** Exclusive. */
  readonly until: Date | undefined
  /** Events with a smaller id only (the next page, newest first). */
  readonly beforeId: bigint | undefined
  readonly limit: number
}

/**
 * Audit events newest first (by id: the order they were written in). The WHERE clause holds only the
 * filters given, so each query can use the index that fits it (`audit_events_by_account`, `_by_type`,
 * `_by_time`, or the primary key).
 */
export async function listAuditEvents(db: Queryable, f: AuditFilter): Promise<AuditEventRow[]> {
  const where: string[] = []
  const values: unknown[] = []
  const param = (v: unknown) => { values.push(v); return `$${values.length}` }
  if (f.accountId !== undefined) where.push(`account_id = ${param(f.accountId)}::uuid`)
  if (f.type !== undefined) where.push(`type = ${param(f.type)}`)
  if (f.since !== undefined) where.push(`occurred_at >= ${param(f.since)}`)
  if (f.until !== undefined) where.push(`occurred_at < ${param(f.until)}`)
  if (f.beforeId !== undefined) where.push(`id < ${param(f.beforeId.toString())}::bigint`)
  const { rows } = await db.query<AuditEventRow>(
    `SELECT id, occurred_at, type, account_id, actor, host(ip) AS ip, user_agent, request_id, data FROM audit_events
     ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ${param(f.limit)}`,
    values,
  )
  return rows
}
