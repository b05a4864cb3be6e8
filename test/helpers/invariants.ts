/**
 * Invariants: SQL queries that must return zero rows after any drill (SECURITY.md). Suites that stress
 * the data (concurrency, faults) run them at the end and fail on any violation.
 */
import type pg from 'pg'

export const invariants: Record<string, string> = {
  'a session with two live refresh tokens (a forked family)': `
    SELECT session_id FROM refresh_tokens WHERE used_at IS NULL GROUP BY session_id HAVING count(*) > 1`,
  'a refresh token with two children': `
    SELECT parent_hash FROM refresh_tokens WHERE parent_hash IS NOT NULL GROUP BY parent_hash HAVING count(*) > 1`,
  'a live refresh token in a revoked session that was rotated after the revocation': `
    SELECT rt.token_hash FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id
    WHERE s.revoked_at IS NOT NULL AND rt.created_at > s.revoked_at`,
  'an account without its registration audit event': `
    SELECT a.id FROM accounts a WHERE NOT EXISTS (
      SELECT 1 FROM audit_events e WHERE e.account_id = a.id AND e.type = 'account.registered')`,
  'a session without its login audit event': `
    SELECT s.id FROM sessions s WHERE NOT EXISTS (
      SELECT 1 FROM audit_events e WHERE e.type = 'login.succeeded' AND e.data->>'session_id' = s.id::text)`,
  'a revoked session without a reason, or a reason without a revocation': `
    SELECT id FROM sessions WHERE (revoked_at IS NULL) <> (revoke_reason IS NULL)`,
  'a deleted account that kept personal data or a live session': `
    SELECT a.id FROM accounts a WHERE a.status = 'deleted' AND (a.email LIKE '%@%' OR a.password_hash <> ''
      OR a.last_login_ip IS NOT NULL OR EXISTS (SELECT 1 FROM sessions s WHERE s.account_id = a.id AND s.revoked_at IS NULL))`,
  'an active account without its verification message': `
    SELECT a.id FROM accounts a WHERE a.status = 'active' AND NOT EXISTS (
      SELECT 1 FROM email_messages m WHERE m.account_id = a.id AND m.kind = 'verify_email')`,
  'a message without its job (enqueued outside its transaction, or lost)': `
    SELECT m.id FROM email_messages m WHERE NOT EXISTS (
      SELECT 1 FROM pgboss.job j WHERE j.name = 'email' AND j.data->>'messageId' = m.id::text)`,
  'an account with two live links of one purpose': `
    SELECT account_id, purpose FROM email_tokens WHERE consumed_at IS NULL AND revoked_at IS NULL
    GROUP BY account_id, purpose HAVING count(*) > 1`,
  'a used reset link without its audit event (a half-applied reset)': `
    SELECT t.id FROM email_tokens t WHERE t.purpose = 'reset_password' AND t.consumed_at IS NOT NULL AND NOT EXISTS (
      SELECT 1 FROM audit_events e WHERE e.type = 'password.reset' AND e.account_id = t.account_id
        AND e.occurred_at BETWEEN t.consumed_at AND t.consumed_at + interval '1 minute')`,
  'a session older than a completed reset that is still live': `
    SELECT s.id FROM sessions s JOIN email_tokens t ON t.account_id = s.account_id
    WHERE t.purpose = 'reset_password' AND t.consumed_at IS NOT NULL AND s.created_at < t.consumed_at AND s.revoked_at IS NULL`,
}

/**
 * Jobs whose message is gone. Not an invariant in general (deleting an account deletes its messages;
 * the job then ends without sending), but one for drills that delete nothing.
 */
export const jobWithoutMessage = `
  SELECT j.id FROM pgboss.job j WHERE j.name = 'email' AND NOT EXISTS (
    SELECT 1 FROM email_messages m WHERE m.id::text = j.data->>'messageId')`

/** Returns the names of the violated invariants (empty when all hold). */
export async function violatedInvariants(db: pg.Pool): Promise<string[]> {
  const violated: string[] = []
  for (const [name, query] of Object.entries(invariants)) {
    const { rowCount } = await db.query(query)
    if ((rowCount ?? 0) > 0) violated.push(`${name}: ${rowCount} row(s)`)
  }
  return violated
}
