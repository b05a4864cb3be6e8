import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type pg from 'pg'
import { testPool } from '../helpers/db.ts'
import { invariants, violatedInvariants } from '../helpers/invariants.ts'
import { hashToken } from '../../src/tokens/refresh-tokens.ts'
import { FakeClock } from '../helpers/clock.ts'
import { bearer, createTestApp, login, refresh, registerVerified, signUp, type TestApp, type Tokens, uniqueEmail, VALID_PASSWORD } from '../helpers/app.ts'

describe('sessions: login, refresh rotation, reuse detection, logout', () => {
  const clock = new FakeClock(new Date())
  let t: TestApp
  let sql: pg.Pool

  before(async () => {
    t = await createTestApp({ clock })
    sql = testPool(t.db.url, 2)
  })
  after(async () => {
    await sql.end()
    await t.close()
  })

  async function liveChildren(refreshToken: string): Promise<number> {
    const { rows } = await sql.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM refresh_tokens WHERE parent_hash = $1 AND used_at IS NULL', [hashToken(refreshToken)])
    return rows[0]?.n ?? -1
  }

  it('logs in with the RFC 6749 §5.1 response shape and no-store caching', async () => {
    const email = uniqueEmail()
    await registerVerified(t.app, email)
    const res = await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email, password: VALID_PASSWORD } })
    assert.equal(res.statusCode, 200)
    assert.equal(res.headers['cache-control'], 'no-store')
    const body = res.json<Tokens>()
    assert.equal(body.token_type, 'Bearer')
    assert.equal(body.expires_in, 600)
    assert.match(body.refresh_token, /^tsr_[A-Za-z0-9_-]{43}$/)
    assert.equal(body.access_token.split('.').length, 3)
  })

  it('stores refresh tokens only as SHA-256 hashes', async () => {
    const tokens = await signUp(t.app)
    const { rows } = await sql.query<{ token_hash: Buffer }>('SELECT token_hash FROM refresh_tokens')
    assert.ok(rows.some((r) => r.token_hash.equals(hashToken(tokens.refresh_token))))
    const dump = JSON.stringify((await sql.query('SELECT * FROM refresh_tokens')).rows)
    assert.ok(!dump.includes(tokens.refresh_token.slice(4)))
  })

  it('answers every login failure with the same body, whether or not the account exists', async () => {
    const email = uniqueEmail()
    await registerVerified(t.app, email)
    const wrong = await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email, password: 'a wrong password, long enough' } })
    const unknown = await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: uniqueEmail('nobody'), password: 'a wrong password, long enough' } })
    for (const res of [wrong, unknown]) {
      assert.equal(res.statusCode, 401)
      assert.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8')
    }
    const strip = (b: string): Record<string, unknown> => ({ ...(JSON.parse(b) as Record<string, unknown>), request_id: undefined })
    assert.deepEqual(strip(wrong.body), strip(unknown.body))
    assert.equal(strip(wrong.body).code, 'invalid_credentials')
  })

  it('counts failed logins and resets the count on success', async () => {
    const email = uniqueEmail()
    await registerVerified(t.app, email)
    await Promise.all([1, 2, 3].map(() => t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email, password: 'a wrong password, long enough' } })))
    const { rows } = await sql.query<{ failed_login_attempts: number }>('SELECT failed_login_attempts FROM accounts WHERE email = $1', [email])
    assert.equal(rows[0]?.failed_login_attempts, 3)
    const tokens = await login(t.app, email)
    const me = await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(tokens.access_token) })
    assert.equal(me.json<{ failed_login_attempts: number }>().failed_login_attempts, 0)
    assert.equal(me.json<{ last_login_ip: string }>().last_login_ip, '127.0.0.1')
  })

  it('rotates a refresh token into a new pair and invalidates nothing else', async () => {
    const tokens = await signUp(t.app)
    const res = await refresh(t.app, tokens.refresh_token)
    assert.equal(res.statusCode, 200)
    const next = res.json<Tokens>()
    assert.notEqual(next.refresh_token, tokens.refresh_token)
    const me = await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(next.access_token) })
    assert.equal(me.statusCode, 200)
  })

  it('returns the same new refresh token to a retry within the grace window', async () => {
    const tokens = await signUp(t.app)
    const first = (await refresh(t.app, tokens.refresh_token)).json<Tokens>()
    clock.advanceSeconds(5)
    const retry = await refresh(t.app, tokens.refresh_token)
    assert.equal(retry.statusCode, 200)
    assert.equal(retry.json<Tokens>().refresh_token, first.refresh_token)
    // The session is intact: the child still rotates.
    assert.equal((await refresh(t.app, first.refresh_token)).statusCode, 200)
  })

  it('rejects a refresh token replayed after the grace window and revokes its session', async () => {
    const tokens = await signUp(t.app)
    const child = (await refresh(t.app, tokens.refresh_token)).json<Tokens>()
    clock.advanceSeconds(11)
    const replay = await refresh(t.app, tokens.refresh_token)
    assert.equal(replay.statusCode, 400)
    assert.deepEqual(replay.json(), { error: 'invalid_grant', error_description: 'The refresh token is invalid, expired or revoked.' })
    // The whole family is dead: the legitimate child and the session's access tokens.
    assert.equal((await refresh(t.app, child.refresh_token)).statusCode, 400)
    const me = await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(child.access_token) })
    assert.equal(me.statusCode, 401)
    const { rows } = await sql.query<{ type: string }>("SELECT type FROM audit_events WHERE type = 'refresh_token.reused' AND data->>'session_id' IS NOT NULL")
    assert.ok(rows.length >= 1)
  })

  it('never leaves two live children when 50 refreshes of one token race', async () => {
    const tokens = await signUp(t.app)
    const results = await Promise.all(Array.from({ length: 50 }, () => refresh(t.app, tokens.refresh_token)))
    const ok = results.filter((r) => r.statusCode === 200)
    assert.equal(ok.length, 50, 'all retries inside the grace window succeed')
    const children = new Set(ok.map((r) => r.json<Tokens>().refresh_token))
    assert.equal(children.size, 1, 'every caller got the same child')
    assert.equal(await liveChildren(tokens.refresh_token), 1)
  })

  it('records session use on refresh at minute precision', async () => {
    const tokens = await signUp(t.app)
    const lastUsed = async () => (await sql.query<{ last_used_at: Date }>(
      'SELECT s.last_used_at FROM sessions s JOIN refresh_tokens rt ON rt.session_id = s.id WHERE rt.token_hash = $1', [hashToken(tokens.refresh_token)])).rows[0]?.last_used_at.getTime()
    const atLogin = await lastUsed()
    clock.advanceSeconds(5)
    const soon = (await refresh(t.app, tokens.refresh_token)).json<Tokens>()
    assert.equal(await lastUsed(), atLogin, 'within a minute: no write')
    clock.advanceSeconds(300)
    await refresh(t.app, soon.refresh_token)
    assert.equal(await lastUsed(), clock.now().getTime(), 'later: the session shows its last use')
  })

  it('ends a session after the idle timeout', async () => {
    const tokens = await signUp(t.app)
    clock.advanceSeconds(t.config.sessions.idleTtlSeconds + 1)
    assert.equal((await refresh(t.app, tokens.refresh_token)).statusCode, 400)
  })

  it('ends a session at its absolute lifetime even when it is used every day', async () => {
    let { refresh_token } = await signUp(t.app)
    const days = Math.ceil(t.config.sessions.absoluteTtlSeconds / 86_400)
    let failedOnDay = -1
    for (let day = 1; day <= days + 1; day++) {
      clock.advanceSeconds(86_400)
      const res = await refresh(t.app, refresh_token)
      if (res.statusCode !== 200) { failedOnDay = day; break }
      refresh_token = res.json<Tokens>().refresh_token
    }
    assert.equal(failedOnDay, days)
  })

  it('logout ends the session: the access token and the refresh token stop working at once', async () => {
    const tokens = await signUp(t.app)
    const out = await t.app.inject({ method: 'POST', url: '/v1/auth/logout', headers: bearer(tokens.access_token) })
    assert.equal(out.statusCode, 204)
    assert.equal((await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(tokens.access_token) })).statusCode, 401)
    assert.equal((await refresh(t.app, tokens.refresh_token)).statusCode, 400)
  })

  it('RFC 7009 revocation of a refresh token ends its session, and unknown tokens get the same 200', async () => {
    const tokens = await signUp(t.app)
    const form = (token: string) => ({ method: 'POST' as const, url: '/oauth/revoke', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: `token=${encodeURIComponent(token)}&token_type_hint=refresh_token` })
    const res = await t.app.inject(form(tokens.refresh_token))
    assert.equal(res.statusCode, 200)
    assert.equal((await refresh(t.app, tokens.refresh_token)).statusCode, 400)
    assert.equal((await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(tokens.access_token) })).statusCode, 401)
    const unknown = await t.app.inject(form('tsr_' + 'A'.repeat(43)))
    assert.equal(unknown.statusCode, 200)
    assert.equal(unknown.body, res.body)
  })

  it('refuses an access token offered as a refresh token, and a refresh token offered as a bearer token', async () => {
    const tokens = await signUp(t.app)
    assert.equal((await refresh(t.app, tokens.access_token)).statusCode, 400)
    const me = await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(tokens.refresh_token) })
    assert.equal(me.statusCode, 401)
  })

  it('answers unsupported grants and missing parameters with RFC 6749 errors', async () => {
    const grant = await t.app.inject({ method: 'POST', url: '/oauth/token', payload: { grant_type: 'password' } })
    assert.equal(grant.statusCode, 400)
    assert.equal(grant.json<{ error: string }>().error, 'unsupported_grant_type')
    const missing = await t.app.inject({ method: 'POST', url: '/oauth/token', payload: { grant_type: 'refresh_token' } })
    assert.equal(missing.json<{ error: string }>().error, 'invalid_request')
    const extra = await t.app.inject({ method: 'POST', url: '/oauth/token', payload: { grant_type: 'refresh_token', refresh_token: 'x', evil: 1 } })
    assert.equal(extra.statusCode, 400)
    assert.equal(extra.json<{ error: string }>().error, 'invalid_request')
  })

  it('leaves every data invariant intact (runs last)', async () => {
    assert.deepEqual(await violatedInvariants(sql), [])
    console.log(`# invariant checks passed: ${Object.keys(invariants).length}`)
  })
})
