import type { Queryable } from '../db/pool.ts'

export interface AccountRow {
  id: string
  email: string
  email_verified_at: Date | null
  password_hash: string
  display_name: string | null
  status: 'active' | 'disabled' | 'deleted'
  created_at: Date
  updated_at: Date
  last_login_at: Date | null
  last_login_ip: string | null
  failed_login_attempts: number
  locked_until: Date | null
  password_changed_at: Date
  /** Granted roles (`admin`); carried by access tokens as the `roles` claim. */
  roles: string[]
}

/**
 * Inserts the account unless its canonical email is taken. Concurrent inserts of one address are
 * settled by the unique constraint: exactly one row, the others get `false`.
 */
export async function insertIfAbsent(
  db: Queryable,
  a: { id: string; email: string; passwordHash: string; displayName: string | null; now: Date },
): Promise<boolean> {
  const { rowCount } = await db.query(
    `INSERT INTO accounts (id, email, password_hash, display_name, created_at, updated_at, password_changed_at)
     VALUES ($1, $2, $3, $4, $5, $5, $5) ON CONFLICT (email) DO NOTHING`,
    [a.id, a.email, a.passwordHash, a.displayName, a.now],
  )
  return rowCount === 1
}

export async function findByEmail(db: Queryable, email: string): Promise<AccountRow | undefined> {
  const { rows } = await db.query<AccountRow>({ name: 'accounts_by_email', text: 'SELECT * FROM accounts WHERE email = $1', values: [email] })
  return rows[0]
}

/** The account behind a live session: one primary-key lookup that also re-checks the session. */
export async function findBySession(db: Queryable, accountId: string, sessionId: string, now: Date): Promise<AccountRow | undefined> {
  const { rows } = await db.query<AccountRow>({
    name: 'accounts_by_session',
    text: `SELECT a.* FROM accounts a JOIN sessions s ON s.account_id = a.id
           WHERE a.id = $1 AND s.id = $2 AND s.revoked_at IS NULL AND s.expires_at > $3 AND a.status = 'active'`,
    values: [accountId, sessionId, now],
  })
  return rows[0]
}

export async function updateDisplayName(db: Queryable, id: string, displayName: string | null, now: Date): Promise<AccountRow | undefined> {
  const { rows } = await db.query<AccountRow>(
    'UPDATE accounts SET display_name = $2, updated_at = $3 WHERE id = $1 RETURNING *',
    [id, displayName, now],
  )
  return rows[0]
}

export async function updatePassword(db: Queryable, id: string, passwordHash: string, now: Date): Promise<void> {
  await db.query(
    'UPDATE accounts SET password_hash = $2, password_changed_at = $3, updated_at = $3 WHERE id = $1',
    [id, passwordHash, now],
  )
}

/**
 * Records a successful login, only if the account is still active: a disable (or a role change) that
 * committed while the password was being hashed is seen here. Returns the account's current roles, or
 * undefined when it is no longer active.
 */
export async function recordLoginSuccess(db: Queryable, id: string, p: { ip: string | null; now: Date; rehash: string | null }): Promise<{ roles: string[] } | undefined> {
  const { rows } = await db.query<{ roles: string[] }>({
    name: 'accounts_login_success',
    text: `UPDATE accounts SET last_login_at = $2, last_login_ip = $3, failed_login_attempts = 0,
             locked_until = NULL, password_hash = coalesce($4, password_hash), updated_at = $2
           WHERE id = $1 AND status = 'active' RETURNING roles`,
    values: [id, p.now, p.ip, p.rehash],
  })
  return rows[0]
}

/** `locked_until` of an account locked until its password is reset (after the hard limit of failures). */
export const LOCKED_UNTIL_RESET = new Date('9999-12-31T00:00:00Z')

export interface LockoutPolicy {
  readonly threshold: number
  readonly baseSeconds: number
  readonly maxSeconds: number
  readonly hardLimit: number
}

/**
 * Counts one failed attempt and applies the lock policy in the same statement, so parallel failures
 * are each counted and each sees its own count: from `threshold` consecutive failures every further
 * one locks the account for base × 2^(failures − threshold) seconds, capped at `maxSeconds`; at
 * `hardLimit` it stays locked until a password reset.
 */
export async function recordLoginFailure(db: Queryable, id: string, now: Date, policy: LockoutPolicy): Promise<{ failures: number; lockedUntil: Date | null }> {
  const { rows } = await db.query<{ failed_login_attempts: number; locked_until: Date | null }>({
    name: 'accounts_login_failure',
    text: `UPDATE accounts SET failed_login_attempts = failed_login_attempts + 1,
             locked_until = CASE
               WHEN failed_login_attempts + 1 >= $6 THEN $7::timestamptz
               WHEN failed_login_attempts + 1 >= $3 THEN $2::timestamptz + make_interval(secs => least($5::float8, $4::float8 * power(2, failed_login_attempts + 1 - $3)))
               ELSE locked_until END
           WHERE id = $1 RETURNING failed_login_attempts, locked_until`,
    values: [id, now, policy.threshold, policy.baseSeconds, policy.maxSeconds, policy.hardLimit, LOCKED_UNTIL_RESET],
  })
  return { failures: rows[0]?.failed_login_attempts ?? 0, lockedUntil: rows[0]?.locked_until ?? null }
}

/** Erases the account's personal data, leaving a tombstone (status `deleted`) that can never log in. */
export async function anonymise(db: Queryable, id: string, now: Date): Promise<void> {
  await db.query(
    `UPDATE accounts SET status = 'deleted', email = 'deleted:' || id::text, email_verified_at = NULL, password_hash = '', roles = '{}',
       display_name = NULL, last_login_ip = NULL, updated_at = $2 WHERE id = $1`,
    [id, now],
  )
  await db.query('UPDATE sessions SET ip = NULL, user_agent = NULL WHERE account_id = $1', [id])
}

/** Locks the account row for the rest of the transaction (confirmations that change it). */
export async function findByIdForUpdate(db: Queryable, id: string): Promise<AccountRow | undefined> {
  const { rows } = await db.query<AccountRow>('SELECT * FROM accounts WHERE id = $1 FOR UPDATE', [id])
  return rows[0]
}

/** Marks the address verified (keeps the first verification time). */
export async function markEmailVerified(db: Queryable, id: string, now: Date): Promise<void> {
  await db.query('UPDATE accounts SET email_verified_at = coalesce(email_verified_at, $2), updated_at = $2 WHERE id = $1', [id, now])
}

/**
 * Sets a new, verified address.
 * @throws the unique violation (23505) when another account took the address meanwhile.
 */
export async function changeEmail(db: Queryable, id: string, email: string, now: Date): Promise<void> {
  await db.query('UPDATE accounts SET email = $2, email_verified_at = $3, updated_at = $3 WHERE id = $1', [id, email, now])
}

/**
 * A password set through a reset link: the link proved control of the address, so the address is
 * verified, and the failure count starts over.
 */
export async function resetPassword(db: Queryable, id: string, passwordHash: string, now: Date): Promise<void> {
  await db.query(
    `UPDATE accounts SET password_hash = $2, password_changed_at = $3, updated_at = $3,
       email_verified_at = coalesce(email_verified_at, $3), failed_login_attempts = 0, locked_until = NULL
     WHERE id = $1`,
    [id, passwordHash, now],
  )
}
