import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type pg from 'pg'
import { testPool } from '../helpers/db.ts'
import { invariants, violatedInvariants } from '../helpers/invariants.ts'
import { bearer, createTestApp, login, refresh, register, registerVerified, signUp, inbox, verifyEmail, type TestApp, uniqueEmail, VALID_PASSWORD } from '../helpers/app.ts'

describe('accounts: register, profile, password change, deletion', () => {
  let t: TestApp
  let sql: pg.Pool

  before(async () => {
    t = await createTestApp()
    sql = testPool(t.db.url, 2)
  })
  after(async () => {
    await sql.end()
    await t.close()
  })

  const count = async (q: string, params: unknown[] = []) => (await sql.query<{ n: number }>(q, params)).rows[0]?.n ?? -1

  it('answers a new and a taken address identically, and creates no second account', async () => {
    const email = uniqueEmail()
    const first = await register(t.app, email)
    const second = await register(t.app, email.toUpperCase(), 'another long passphrase here')
    assert.equal(first.statusCode, 202)
    assert.equal(second.statusCode, 202)
    assert.equal(first.body, second.body)
    const pick = (h: Record<string, unknown>) => ({ type: h['content-type'], cache: h['cache-control'], length: h['content-length'] })
    assert.deepEqual(pick(first.headers), pick(second.headers))
    assert.equal(await count('SELECT count(*)::int AS n FROM accounts WHERE email = $1', [email]), 1)
    // The owner learns of the attempt by email; the first password still works, nothing changed.
    const subjects = (await inbox(t.app, email)).map((m) => m.subject)
    assert.deepEqual(subjects.sort(), ['Confirm your email address', 'Someone tried to create an account with your address'])
    await verifyEmail(t.app, email)
    await login(t.app, email)
  })

  it('creates exactly one account for 20 concurrent registrations of one address in different cases and widths', async () => {
    const local = `race${Date.now()}`
    const variants = Array.from({ length: 20 }, (_, i) => {
      const email = `${local}@Example.com`
      if (i % 3 === 0) return email.toUpperCase()
      if (i % 3 === 1) return `  ${email} `
      return [...email].map((c) => (c >= '!' && c <= '~' ? String.fromCodePoint(c.codePointAt(0)! + 0xfee0) : c)).join('')
    })
    const results = await Promise.all(variants.map((e) => register(t.app, e)))
    assert.ok(results.every((r) => r.statusCode === 202))
    assert.equal(await count('SELECT count(*)::int AS n FROM accounts WHERE email = $1', [`${local}@example.com`]), 1)
    assert.equal(await count("SELECT count(*)::int AS n FROM audit_events WHERE type = 'account.registered' AND account_id = (SELECT id FROM accounts WHERE email = $1)", [`${local}@example.com`]), 1)
  })

  it('applies the password policy at registration with clear violations', async () => {
    const email = uniqueEmail('policy')
    const res = await register(t.app, email, 'zq8-Kx!vT')
    assert.equal(res.statusCode, 400)
    const body = res.json<{ code: string; violations: string[] }>()
    assert.equal(body.code, 'password_policy')
    assert.deepEqual(body.violations, ['too_short'])
    const withEmail = await register(t.app, email, `${email.split('@')[0]} is my password`)
    assert.ok(withEmail.json<{ violations: string[] }>().violations.includes('contains_email'))
    assert.equal(await count('SELECT count(*)::int AS n FROM accounts WHERE email = $1', [email]), 0)
  })

  it('rejects an invalid email with validation_failed pointing at the field', async () => {
    const res = await register(t.app, 'not-an-address')
    assert.equal(res.statusCode, 400)
    assert.equal(res.json<{ code: string }>().code, 'validation_failed')
    assert.deepEqual(res.json<{ errors: unknown }>().errors, [{ pointer: '/email', detail: 'is not a valid email address' }])
  })

  it('stores argon2id hashes, never the password', async () => {
    const email = uniqueEmail()
    await registerVerified(t.app, email)
    const { rows } = await sql.query<{ password_hash: string }>('SELECT password_hash FROM accounts WHERE email = $1', [email])
    assert.match(rows[0]?.password_hash ?? '', /^\$argon2id\$/)
    assert.ok(!JSON.stringify(rows).includes(VALID_PASSWORD))
  })

  it('shows the account and its security fields to its owner', async () => {
    const tokens = await signUp(t.app)
    const res = await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(tokens.access_token) })
    assert.equal(res.statusCode, 200)
    assert.equal(res.headers['cache-control'], 'no-store')
    const me = res.json<Record<string, unknown>>()
    assert.equal(me.email, tokens.email)
    assert.equal(me.email_verified, true)
    for (const key of ['last_login_at', 'last_login_ip', 'failed_login_attempts', 'locked_until', 'password_changed_at']) assert.ok(key in me, key)
    assert.ok(!('password_hash' in me))
  })

  it('updates the display name only; any other field is refused and nothing changes', async () => {
    const tokens = await signUp(t.app)
    const ok = await t.app.inject({ method: 'PATCH', url: '/v1/me', headers: bearer(tokens.access_token), payload: { display_name: 'Ann Lee' } })
    assert.equal(ok.statusCode, 200)
    assert.equal(ok.json<{ display_name: string }>().display_name, 'Ann Lee')
    const sneaky = await t.app.inject({ method: 'PATCH', url: '/v1/me', headers: bearer(tokens.access_token), payload: { display_name: 'X', email_verified: false } })
    assert.equal(sneaky.statusCode, 400)
    assert.equal(sneaky.json<{ code: string }>().code, 'validation_failed')
    const me = await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(tokens.access_token) })
    assert.equal(me.json<{ display_name: string }>().display_name, 'Ann Lee')
    assert.equal(me.json<{ email_verified: boolean }>().email_verified, true)
    const cleared = await t.app.inject({ method: 'PATCH', url: '/v1/me', headers: bearer(tokens.access_token), payload: { display_name: null } })
    assert.equal(cleared.json<{ display_name: null }>().display_name, null)
  })

  it('changes the password with the current one, ends the other sessions and keeps this one', async () => {
    const tokens = await signUp(t.app)
    const other = await login(t.app, tokens.email)
    const newPassword = 'an entirely new passphrase'
    const wrong = await t.app.inject({ method: 'POST', url: '/v1/me/password', headers: bearer(tokens.access_token), payload: { current_password: 'not the right password at all', new_password: newPassword } })
    assert.equal(wrong.statusCode, 403)
    assert.equal(wrong.json<{ code: string }>().code, 'current_password_invalid')
    const weak = await t.app.inject({ method: 'POST', url: '/v1/me/password', headers: bearer(tokens.access_token), payload: { current_password: VALID_PASSWORD, new_password: 'password' } })
    assert.equal(weak.json<{ code: string }>().code, 'password_policy')

    const res = await t.app.inject({ method: 'POST', url: '/v1/me/password', headers: bearer(tokens.access_token), payload: { current_password: VALID_PASSWORD, new_password: newPassword } })
    assert.equal(res.statusCode, 204)
    // The other session is over, for its access token and its refresh token.
    assert.equal((await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(other.access_token) })).statusCode, 401)
    assert.equal((await refresh(t.app, other.refresh_token)).statusCode, 400)
    // This session goes on.
    assert.equal((await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(tokens.access_token) })).statusCode, 200)
    assert.equal((await refresh(t.app, tokens.refresh_token)).statusCode, 200)
    // Old password out, new password in.
    const oldLogin = await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: tokens.email, password: VALID_PASSWORD } })
    assert.equal(oldLogin.statusCode, 401)
    await login(t.app, tokens.email, newPassword)
    assert.equal(await count("SELECT count(*)::int AS n FROM audit_events WHERE type = 'password.changed' AND (data->>'sessions_revoked')::int = 1"), 1)
  })

  it('deletes the account: sessions end, personal data is erased, the address can register again', async () => {
    const tokens = await signUp(t.app)
    const { rows: [before] } = await sql.query<{ id: string }>('SELECT id FROM accounts WHERE email = $1', [tokens.email])
    const wrong = await t.app.inject({ method: 'DELETE', url: '/v1/me', headers: bearer(tokens.access_token), payload: { password: 'not the right password at all' } })
    assert.equal(wrong.statusCode, 403)
    const res = await t.app.inject({ method: 'DELETE', url: '/v1/me', headers: bearer(tokens.access_token), payload: { password: VALID_PASSWORD } })
    assert.equal(res.statusCode, 204)
    assert.equal((await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(tokens.access_token) })).statusCode, 401)
    assert.equal((await refresh(t.app, tokens.refresh_token)).statusCode, 400)
    const { rows: [tomb] } = await sql.query<{ email: string; password_hash: string; status: string; last_login_ip: string | null }>('SELECT * FROM accounts WHERE id = $1', [before?.id])
    assert.equal(tomb?.status, 'deleted')
    assert.ok(!tomb?.email.includes('@'))
    assert.equal(tomb?.password_hash, '')
    assert.equal(tomb?.last_login_ip, null)
    assert.equal(await count('SELECT count(*)::int AS n FROM sessions WHERE account_id = $1 AND (ip IS NOT NULL OR user_agent IS NOT NULL OR revoked_at IS NULL)', [before?.id]), 0)
    // Email leftovers go too: links, message records (with their hashed recipient) and outbox copies.
    assert.equal(await count('SELECT count(*)::int AS n FROM email_tokens WHERE account_id = $1', [before?.id]), 0)
    assert.equal(await count('SELECT count(*)::int AS n FROM email_messages WHERE account_id = $1', [before?.id]), 0)
    assert.equal(await count('SELECT count(*)::int AS n FROM mail_outbox WHERE recipient = $1', [tokens.email]), 0)
    const again = await login(t.app, (await registerVerified(t.app, tokens.email), tokens.email))
    assert.ok(again.access_token)
  })

  it('records every change with its audit event in the same transaction', async () => {
    const orphans = await count(`
      SELECT count(*)::int AS n FROM accounts a WHERE a.status <> 'deleted'
      AND NOT EXISTS (SELECT 1 FROM audit_events e WHERE e.account_id = a.id AND e.type = 'account.registered')`)
    assert.equal(orphans, 0, 'accounts without their registration event')
    const sessionsWithoutLogin = await count(`
      SELECT count(*)::int AS n FROM sessions s
      WHERE NOT EXISTS (SELECT 1 FROM audit_events e WHERE e.type = 'login.succeeded' AND e.data->>'session_id' = s.id::text)`)
    assert.equal(sessionsWithoutLogin, 0, 'sessions without their login event')
  })

  it('leaves every data invariant intact (runs last)', async () => {
    assert.deepEqual(await violatedInvariants(sql), [])
    console.log(`# invariant checks passed: ${Object.keys(invariants).length}`)
  })
})
