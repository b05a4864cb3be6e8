/**
 * The admin API on a real database: the guard (401, 403, and the database re-check behind the token's
 * claim), listing and paging, the admin view, disabling, roles, deletion, session revocation, the audit
 * trail, and the audit event every admin action leaves.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import fc from 'fast-check'
import type { LightMyRequestResponse } from 'fastify'
import type pg from 'pg'
import { decodeEventCursor, decodeUserCursor, encodeEventCursor, encodeUserCursor } from '../../src/admin/admin.service.ts'
import { bearer, createTestApp, login, refresh, register, signUp, type TestApp, type Tokens, VALID_PASSWORD } from '../helpers/app.ts'
import { FakeClock } from '../helpers/clock.ts'
import { testPool } from '../helpers/db.ts'

interface AdminUser {
  id: string; email: string | null; email_verified: boolean; display_name: string | null; status: string; roles: string[]
  created_at: string; updated_at: string; last_login_at: string | null; last_login_ip: string | null
  failed_login_attempts: number; locked_until: string | null; locked: boolean; password_changed_at: string; live_sessions?: number
}
interface AuditEvent { id: number; occurred_at: string; type: string; account_id: string | null; actor: string; ip: string | null; user_agent: string | null; request_id: string | null; data: Record<string, unknown> }
interface Person extends Tokens { email: string; id: string }

const UNKNOWN_ID = '00000000-0000-4000-8000-000000000000'

function claimsOf(token: string): { sub: string; sid: string; roles?: string[] } {
  return JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { sub: string; sid: string; roles?: string[] }
}

describe('admin API', () => {
  let t: TestApp
  let sql: pg.Pool
  const clock = new FakeClock(new Date('2026-03-01T09:00:00Z'))
  let admin: Person
  let badInputs = 0

  before(async () => {
    t = await createTestApp({ clock })
    sql = testPool(t.db.url, 2)
    admin = await makeAdmin()
  })
  after(async () => {
    console.log(`# admin API: bad inputs tried: ${badInputs}`)
    await sql.end()
    await t.close()
  })

  async function person(): Promise<Person> {
    const p = await signUp(t.app)
    return { ...p, id: claimsOf(p.access_token).sub }
  }
  /** An administrator made the way an operator without the CLI would: roles set in SQL, then a new login. */
  async function makeAdmin(): Promise<Person> {
    const p = await person()
    await sql.query("UPDATE accounts SET roles = '{admin}' WHERE id = $1", [p.id])
    return { ...p, ...(await login(t.app, p.email)) }
  }
  const call = (method: 'GET' | 'PATCH' | 'DELETE' | 'POST', url: string, token: string | undefined, payload?: unknown): Promise<LightMyRequestResponse> =>
    t.app.inject({ method, url, headers: token === undefined ? {} : bearer(token), ...(payload === undefined ? {} : { payload: payload as Record<string, unknown> }) })
  const meStatus = async (token: string) => (await call('GET', '/v1/me', token)).statusCode
  const loginStatus = async (email: string) => (await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email, password: VALID_PASSWORD } })).statusCode
  const row = async (id: string) => (await sql.query<Record<string, unknown>>('SELECT * FROM accounts WHERE id = $1', [id])).rows[0] ?? {}
  const auditCount = async () => (await sql.query<{ n: number }>('SELECT count(*)::int AS n FROM audit_events')).rows[0]?.n ?? -1
  /** The newest event of `type` about `accountId`; asserts the acting administrator is its actor. */
  async function adminEvent(type: string, accountId: string, by: Person): Promise<AuditEvent> {
    const { rows } = await sql.query<AuditEvent>(
      'SELECT id, type, account_id, actor, host(ip) AS ip, user_agent, request_id, data FROM audit_events WHERE type = $1 AND account_id = $2 ORDER BY id DESC LIMIT 1',
      [type, accountId],
    )
    const event = rows[0]
    assert.ok(event, `an audit event ${type} for ${accountId}`)
    assert.equal(event.actor, `account:${by.id}`)
    assert.equal(event.ip, '127.0.0.1')
    assert.ok(event.request_id !== null)
    return event
  }
  const badRequest = (res: LightMyRequestResponse, what: string) => {
    badInputs++
    assert.equal(res.statusCode, 400, `${what}: ${res.body}`)
    assert.equal(res.json<{ code: string }>().code, 'validation_failed', what)
  }

  it('refuses unauthenticated callers (401) and non-admins (403) on every admin route, before looking at the input, and changes nothing', async () => {
    const user = await person()
    const victim = await person()
    const routes: Array<[ 'GET' | 'PATCH' | 'DELETE' | 'POST', string, unknown?]> = [
      ['GET', '/v1/admin/users'],
      ['GET', '/v1/admin/users?limit=nonsense'],
      ['GET', `/v1/admin/users/${victim.id}`],
      ['PATCH', `/v1/admin/users/${victim.id}`, { status: 'disabled' }],
      ['PATCH', `/v1/admin/users/${victim.id}`, { roles: ['admin'] }],
      ['PATCH', `/v1/admin/users/${victim.id}`, { unknown: true }],
      ['DELETE', `/v1/admin/users/${victim.id}`],
      ['POST', `/v1/admin/users/${victim.id}/sessions/revoke`],
      ['GET', '/v1/admin/audit-events'],
      ['GET', '/v1/admin/audit-events?cursor=!!'],
    ]
    const eventsBefore = await auditCount()
    for (const [method, url, body] of routes) {
      const anonymous = await call(method, url, undefined, body)
      assert.equal(anonymous.statusCode, 401, `${method} ${url} without a token`)
      assert.equal(anonymous.json<{ code: string }>().code, 'invalid_token')
      assert.match(String(anonymous.headers['www-authenticate']), /^Bearer/)
      const garbage = await call(method, url, 'not.a.jwt', body)
      assert.equal(garbage.statusCode, 401, `${method} ${url} with a bad token`)
      const forbidden = await call(method, url, user.access_token, body)
      assert.equal(forbidden.statusCode, 403, `${method} ${url} as a non-admin`)
      assert.equal(forbidden.json<{ code: string }>().code, 'forbidden')
      assert.equal(forbidden.headers['cache-control'], 'no-store')
    }
    // Nothing happened to the victim, and nothing was recorded as done.
    assert.equal(await meStatus(victim.access_token), 200)
    const v = await row(victim.id)
    assert.equal(v.status, 'active')
    assert.deepEqual(v.roles, [])
    assert.equal(await auditCount(), eventsBefore)
    // The non-admin's own token keeps working: a refusal is not a punishment.
    assert.equal(await meStatus(user.access_token), 200)
  })

  it('documents every admin operation in the OpenAPI document, behind bearer auth', async () => {
    const doc = (await t.app.inject({ method: 'GET', url: '/openapi.json' })).json<{ paths: Record<string, Record<string, { operationId: string; security: unknown; tags: string[] }>> }>()
    const ops = Object.entries(doc.paths).filter(([path]) => path.startsWith('/v1/admin/')).flatMap(([, methods]) => Object.values(methods))
    assert.deepEqual(ops.map((o) => o.operationId).sort(), ['adminDeleteUser', 'adminGetUser', 'adminListAuditEvents', 'adminListUsers', 'adminRevokeUserSessions', 'adminUpdateUser'])
    for (const op of ops) {
      assert.deepEqual(op.security, [{ bearerAuth: [] }], op.operationId)
      assert.deepEqual(op.tags, ['admin'])
    }
  })

  it('re-checks the administrator in the database: a token whose admin role was withdrawn behind its back is refused', async () => {
    const stale = await makeAdmin()
    assert.equal((await call('GET', '/v1/admin/users', stale.access_token)).statusCode, 200)
    // Withdrawn directly in the database: the session is not revoked, so the token still says "admin"
    // (as on an instance that has not yet heard of a revocation).
    await sql.query("UPDATE accounts SET roles = '{}' WHERE id = $1", [stale.id])
    assert.deepEqual(claimsOf(stale.access_token).roles, ['admin'])
    const target = await person()
    const eventsBefore = await auditCount()
    assert.equal((await call('GET', '/v1/admin/users', stale.access_token)).statusCode, 403)
    assert.equal((await call('GET', `/v1/admin/users/${target.id}`, stale.access_token)).statusCode, 403)
    assert.equal((await call('PATCH', `/v1/admin/users/${target.id}`, stale.access_token, { status: 'disabled' })).statusCode, 403)
    assert.equal((await call('POST', `/v1/admin/users/${target.id}/sessions/revoke`, stale.access_token)).statusCode, 403)
    assert.equal((await call('DELETE', `/v1/admin/users/${target.id}`, stale.access_token)).statusCode, 403)
    assert.equal((await row(target.id)).status, 'active')
    assert.equal(await meStatus(target.access_token), 200)
    assert.equal(await auditCount(), eventsBefore)
  })

  it('lists accounts newest first with a literal, case-insensitive email prefix and a status filter, and pages with no duplicates or gaps', async () => {
    const tag = randomBytes(4).toString('hex')
    const prefix = `pfx_${tag}`
    const emails = Array.from({ length: 7 }, (_, i) => `${prefix}.${i}@example.com`)
    for (const [i, email] of emails.entries()) {
      // Two accounts per instant: ties on created_at are broken by id.
      if (i % 2 === 0) clock.advanceSeconds(1)
      assert.equal((await register(t.app, email)).statusCode, 202)
    }
    // `_` is a LIKE wildcard: this decoy would match an unescaped prefix.
    const decoy = `pfxz${tag}.decoy@example.com`
    assert.equal((await register(t.app, decoy)).statusCode, 202)
    const { rows: created } = await sql.query<{ id: string }>("SELECT id FROM accounts WHERE email LIKE $1 || '%' ORDER BY created_at DESC, id DESC", [`pfx\\_${tag}`])
    // Two rows within one millisecond, a microsecond apart: a cursor with JS Date precision would lose one.
    const [a, b] = created.slice(-2)
    await sql.query("UPDATE accounts SET created_at = '2026-02-01T00:00:00.000100Z' WHERE id = $1", [a?.id])
    await sql.query("UPDATE accounts SET created_at = '2026-02-01T00:00:00.000200Z' WHERE id = $1", [b?.id])
    const { rows: expected } = await sql.query<{ id: string }>("SELECT id FROM accounts WHERE email LIKE $1 || '%' ORDER BY created_at DESC, id DESC", [`pfx\\_${tag}`])
    assert.equal(expected.length, 7)

    const all = await call('GET', `/v1/admin/users?email_prefix=${encodeURIComponent(`  PFX_${tag}`)}&limit=200`, admin.access_token)
    assert.equal(all.statusCode, 200, all.body)
    assert.equal(all.headers['cache-control'], 'no-store')
    const body = all.json<{ users: AdminUser[]; next_cursor: string | null }>()
    assert.deepEqual(body.users.map((u) => u.id), expected.map((r) => r.id), 'newest first, the decoy excluded')
    assert.equal(body.next_cursor, null)
    const first = body.users[0]
    assert.ok(first !== undefined && first.email?.startsWith(prefix) === true && first.status === 'active' && first.email_verified === false)
    assert.ok(!('password_hash' in first))

    for (const limit of [1, 2, 3, 6]) {
      const seen: string[] = []
      let cursor: string | null = null
      let pages = 0
      do {
        const res: LightMyRequestResponse = await call('GET', `/v1/admin/users?email_prefix=${prefix}&limit=${limit}${cursor === null ? '' : `&cursor=${cursor}`}`, admin.access_token)
        assert.equal(res.statusCode, 200, res.body)
        const page = res.json<{ users: AdminUser[]; next_cursor: string | null }>()
        assert.ok(page.users.length <= limit)
        seen.push(...page.users.map((u) => u.id))
        cursor = page.next_cursor
        pages++
      } while (cursor !== null && pages < 20)
      assert.deepEqual(seen, expected.map((r) => r.id), `pages of ${limit}: every account once, in order`)
      assert.equal(pages, Math.ceil(7 / limit))
    }

    await sql.query("UPDATE accounts SET status = 'disabled' WHERE id = $1", [expected[2]?.id])
    const disabled = (await call('GET', `/v1/admin/users?email_prefix=${prefix}&status=disabled`, admin.access_token)).json<{ users: AdminUser[] }>().users
    assert.deepEqual(disabled.map((u) => u.id), [expected[2]?.id])
    const active = (await call('GET', `/v1/admin/users?email_prefix=${prefix}&status=active`, admin.access_token)).json<{ users: AdminUser[] }>().users
    assert.equal(active.length, 6)
    assert.ok(active.every((u) => u.status === 'active'))
    // Without filters the list has everyone, default page size 50.
    const everyone = (await call('GET', '/v1/admin/users', admin.access_token)).json<{ users: AdminUser[] }>().users
    assert.ok(everyone.some((u) => u.id === admin.id))
  })

  it('refuses malformed list queries and foreign cursors with 400 validation_failed', async () => {
    const forged = [
      'abc', // decodes to garbage
      Buffer.from(`2026-02-30T00:00:00.000000Z|${UNKNOWN_ID}`).toString('base64url'), // no such day
      Buffer.from(`2026-02-01T25:00:00.000000Z|${UNKNOWN_ID}`).toString('base64url'),
      Buffer.from(`2026-02-01T00:00:00.000Z|${UNKNOWN_ID}`).toString('base64url'), // milliseconds only
      Buffer.from(`2026-02-01T00:00:00.000000Z|not-a-uuid`).toString('base64url'),
      Buffer.from(`2026-02-01T00:00:00.000000Z|${UNKNOWN_ID}|x`).toString('base64url'),
      `${encodeUserCursor({ createdAt: '2026-02-01T00:00:00.000000Z', id: UNKNOWN_ID })}=`, // padding
      encodeEventCursor(42), // the other list's cursor
    ]
    for (const cursor of forged) badRequest(await call('GET', `/v1/admin/users?cursor=${encodeURIComponent(cursor)}`, admin.access_token), `users cursor ${cursor}`)
    for (const query of ['limit=0', 'limit=201', 'limit=abc', 'limit=1.5', 'limit=-1', 'limit=01', 'status=gone', 'email_prefix=', 'email_prefix=%20%20', 'sort=email', 'limit=1&limit=2', `email_prefix=${'a'.repeat(255)}`]) {
      badRequest(await call('GET', `/v1/admin/users?${query}`, admin.access_token), query)
    }
    const badEvents = ['cursor=abc', `cursor=${encodeURIComponent(Buffer.from('0').toString('base64url'))}`, `cursor=${Buffer.from('9223372036854775808').toString('base64url')}`,
      `cursor=${encodeUserCursor({ createdAt: '2026-02-01T00:00:00.000000Z', id: UNKNOWN_ID })}`, 'account_id=nope', 'account_id=urn:uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8',
      `type=${'t'.repeat(65)}`, 'since=yesterday', 'since=2026-03-01', 'since=2026-03-02T00:00:00Z&until=2026-03-01T00:00:00Z', 'limit=500', 'actor=cli']
    for (const query of badEvents) badRequest(await call('GET', `/v1/admin/audit-events?${query}`, admin.access_token), query)
    for (const id of ['not-a-uuid', 'urn:uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8', `${UNKNOWN_ID}0`]) {
      badRequest(await call('GET', `/v1/admin/users/${encodeURIComponent(id)}`, admin.access_token), `id ${id}`)
    }
    const target = await person()
    const bodies: unknown[] = [{}, { status: 'deleted' }, { status: 'locked' }, { roles: ['Admin'] }, { roles: ['admin', 'admin'] }, { roles: ['x'.repeat(33)] },
      { roles: Array.from({ length: 17 }, (_, i) => `r${i}`) }, { roles: 'admin' }, { roles: [1] }, { status: 'active', email: 'x@example.com' }, { status: null }]
    for (const payload of bodies) badRequest(await call('PATCH', `/v1/admin/users/${target.id}`, admin.access_token, payload), JSON.stringify(payload))
    const v = await row(target.id)
    assert.equal(v.status, 'active')
    assert.deepEqual(v.roles, [])
  })

  it('shows administrators the security fields: last login time and IP, failed attempts, lock state, password change time, live sessions', async () => {
    const user = await person()
    await login(t.app, user.email) // a second session
    const wrong = await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: user.email, password: 'not the right passphrase at all' } })
    assert.equal(wrong.statusCode, 401)
    const lockedUntil = new Date(clock.now().getTime() + 3_600_000)
    await sql.query('UPDATE accounts SET locked_until = $2 WHERE id = $1', [user.id, lockedUntil])
    const res = await call('GET', `/v1/admin/users/${user.id.toUpperCase()}`, admin.access_token)
    assert.equal(res.statusCode, 200, res.body)
    assert.equal(res.headers['cache-control'], 'no-store')
    const view = res.json<AdminUser>()
    const r = await row(user.id)
    assert.deepEqual(view, {
      id: user.id,
      email: user.email,
      email_verified: true,
      display_name: null,
      status: 'active',
      roles: [],
      created_at: (r.created_at as Date).toISOString(),
      updated_at: (r.updated_at as Date).toISOString(),
      last_login_at: clock.now().toISOString(),
      last_login_ip: '127.0.0.1',
      failed_login_attempts: 1,
      locked_until: lockedUntil.toISOString(),
      locked: true,
      password_changed_at: (r.password_changed_at as Date).toISOString(),
      live_sessions: 2,
    })
    const missing = await call('GET', `/v1/admin/users/${UNKNOWN_ID}`, admin.access_token)
    assert.equal(missing.statusCode, 404)
    assert.equal(missing.json<{ code: string }>().code, 'not_found')
  })

  it('disabling a user kills their access token at once; refresh and login fail; enabling lets them log in again', async () => {
    const user = await person()
    assert.equal(await meStatus(user.access_token), 200)
    const res = await call('PATCH', `/v1/admin/users/${user.id}`, admin.access_token, { status: 'disabled' })
    assert.equal(res.statusCode, 200, res.body)
    const view = res.json<AdminUser>()
    assert.equal(view.status, 'disabled')
    assert.equal(view.live_sessions, 0)
    // Immediately: this instance's revocation list has the session (no poll needed), so every route refuses it.
    assert.ok(t.deps.revocations.isSessionRevoked(claimsOf(user.access_token).sid))
    assert.equal(await meStatus(user.access_token), 401)
    assert.equal((await call('GET', '/v1/sessions', user.access_token)).statusCode, 401)
    const refused = await refresh(t.app, user.refresh_token)
    assert.equal(refused.statusCode, 400)
    assert.equal(refused.json<{ error: string }>().error, 'invalid_grant')
    assert.equal(await loginStatus(user.email), 401)
    const { rows: sessions } = await sql.query<{ revoke_reason: string | null }>('SELECT revoke_reason FROM sessions WHERE account_id = $1', [user.id])
    assert.deepEqual(sessions.map((s) => s.revoke_reason), ['account_disabled'])
    assert.equal((await row(user.id)).status, 'disabled')
    const disabledEvent = await adminEvent('admin.user_updated', user.id, admin)
    assert.deepEqual(disabledEvent.data, { changes: { status: { from: 'active', to: 'disabled' } }, sessions_revoked: 1 })

    // Disabling again changes nothing and records nothing.
    const before = await auditCount()
    assert.equal((await call('PATCH', `/v1/admin/users/${user.id}`, admin.access_token, { status: 'disabled' })).statusCode, 200)
    assert.equal(await auditCount(), before)

    const enabled = await call('PATCH', `/v1/admin/users/${user.id}`, admin.access_token, { status: 'active' })
    assert.equal(enabled.statusCode, 200)
    assert.equal(enabled.json<AdminUser>().status, 'active')
    assert.equal(await loginStatus(user.email), 200)
    const enabledEvent = await adminEvent('admin.user_updated', user.id, admin)
    assert.deepEqual(enabledEvent.data, { changes: { status: { from: 'disabled', to: 'active' } }, sessions_revoked: 0 })
    // The old session stays ended: enabling does not resurrect tokens.
    assert.equal((await refresh(t.app, user.refresh_token)).statusCode, 400)
  })

  it('changing roles ends the user\'s sessions; the next login carries the new roles claim, and a demoted admin loses the API at once', async () => {
    const user = await person()
    assert.deepEqual(claimsOf(user.access_token).roles, [])
    const promoted = await call('PATCH', `/v1/admin/users/${user.id}`, admin.access_token, { roles: ['support', 'admin'] })
    assert.equal(promoted.statusCode, 200, promoted.body)
    assert.deepEqual(promoted.json<AdminUser>().roles, ['admin', 'support'])
    assert.equal(await meStatus(user.access_token), 401, 'the token minted with the old roles died')
    const { rows } = await sql.query<{ revoke_reason: string }>('SELECT revoke_reason FROM sessions WHERE account_id = $1', [user.id])
    assert.deepEqual(rows.map((r) => r.revoke_reason), ['roles_changed'])
    const event = await adminEvent('admin.user_updated', user.id, admin)
    assert.deepEqual(event.data, { changes: { roles: { from: [], to: ['admin', 'support'] } }, sessions_revoked: 1 })

    const fresh = await login(t.app, user.email)
    assert.deepEqual(claimsOf(fresh.access_token).roles, ['admin', 'support'])
    assert.equal((await call('GET', '/v1/admin/users', fresh.access_token)).statusCode, 200)
    // A refresh keeps the roles in the new access token.
    const refreshed = await refresh(t.app, fresh.refresh_token)
    assert.deepEqual(claimsOf(refreshed.json<Tokens>().access_token).roles, ['admin', 'support'])

    const demoted = await call('PATCH', `/v1/admin/users/${user.id}`, admin.access_token, { roles: [] })
    assert.equal(demoted.statusCode, 200)
    assert.equal((await call('GET', '/v1/admin/users', refreshed.json<Tokens>().access_token)).statusCode, 401, 'the demoted admin\'s token is dead')
    const again = await login(t.app, user.email)
    assert.deepEqual(claimsOf(again.access_token).roles, [])
    assert.equal((await call('GET', '/v1/admin/users', again.access_token)).statusCode, 403)
    assert.deepEqual((await row(user.id)).roles, [])
  })

  it('refuses to let administrators disable, demote or delete themselves (409), and leaves their account as it was', async () => {
    const self = await makeAdmin()
    const before = await auditCount()
    for (const id of [self.id, self.id.toUpperCase()]) {
      for (const payload of [{ status: 'disabled' }, { roles: [] }, { roles: ['support'] }, { status: 'active', roles: ['auditor'] }]) {
        const res = await call('PATCH', `/v1/admin/users/${id}`, self.access_token, payload)
        assert.equal(res.statusCode, 409, `${JSON.stringify(payload)} on ${id}`)
        assert.equal(res.json<{ code: string }>().code, 'conflict')
      }
      const del = await call('DELETE', `/v1/admin/users/${id}`, self.access_token)
      assert.equal(del.statusCode, 409)
    }
    const r = await row(self.id)
    assert.equal(r.status, 'active')
    assert.deepEqual(r.roles, ['admin'])
    assert.equal(await auditCount(), before)
    assert.equal(await meStatus(self.access_token), 200)
    // Adding a role to oneself is allowed, and ends one's own sessions like any roles change.
    const added = await call('PATCH', `/v1/admin/users/${self.id}`, self.access_token, { roles: ['admin', 'support'] })
    assert.equal(added.statusCode, 200)
    assert.equal(await meStatus(self.access_token), 401)
    await adminEvent('admin.user_updated', self.id, self)
  })

  it('two administrators demoting each other at once leave one administrator, never none', async () => {
    for (let round = 0; round < 5; round++) {
      const a = await makeAdmin()
      const b = await makeAdmin()
      const [ab, ba] = await Promise.all([
        call('PATCH', `/v1/admin/users/${b.id}`, a.access_token, { roles: [] }),
        call('PATCH', `/v1/admin/users/${a.id}`, b.access_token, { roles: [] }),
      ])
      const statuses = [ab.statusCode, ba.statusCode].sort()
      assert.equal(statuses[0], 200, `round ${round}: one wins`)
      assert.ok(statuses[1] === 401 || statuses[1] === 403, `round ${round}: the other is refused, got ${statuses[1]}`)
      const { rows } = await sql.query<{ n: number }>("SELECT count(*)::int AS n FROM accounts WHERE id = ANY($1::uuid[]) AND 'admin' = ANY(roles)", [[a.id, b.id]])
      assert.equal(rows[0]?.n, 1)
    }
  })

  it('deletes an account like self-deletion: sessions end, personal data is erased, a tombstone stays; the address is free again', async () => {
    const user = await person()
    assert.equal((await call('PATCH', '/v1/me', user.access_token, { display_name: 'Erin Example' })).statusCode, 200)
    await sql.query("UPDATE accounts SET roles = '{support}' WHERE id = $1", [user.id])
    const res = await call('DELETE', `/v1/admin/users/${user.id}`, admin.access_token)
    assert.equal(res.statusCode, 204, res.body)
    assert.equal(await meStatus(user.access_token), 401)
    assert.equal((await refresh(t.app, user.refresh_token)).statusCode, 400)
    assert.equal(await loginStatus(user.email), 401)
    const r = await row(user.id)
    assert.equal(r.status, 'deleted')
    assert.equal(r.email, `deleted:${user.id}`)
    assert.equal(r.password_hash, '')
    assert.equal(r.display_name, null)
    assert.equal(r.last_login_ip, null)
    assert.equal(r.email_verified_at, null)
    assert.deepEqual(r.roles, [])
    const { rows: sessions } = await sql.query<{ ip: string | null; user_agent: string | null; revoke_reason: string | null }>('SELECT ip, user_agent, revoke_reason FROM sessions WHERE account_id = $1', [user.id])
    assert.ok(sessions.length > 0 && sessions.every((s) => s.ip === null && s.user_agent === null && s.revoke_reason === 'account_deleted'))
    const { rows: [leftovers] } = await sql.query<{ tokens: number; messages: number }>(
      'SELECT (SELECT count(*)::int FROM email_tokens WHERE account_id = $1) AS tokens, (SELECT count(*)::int FROM email_messages WHERE account_id = $1) AS messages', [user.id])
    assert.deepEqual(leftovers, { tokens: 0, messages: 0 })
    const event = await adminEvent('admin.user_deleted', user.id, admin)
    assert.deepEqual(event.data, { previous_status: 'active', previous_roles: ['support'], sessions_revoked: 1 })
    assert.ok(!JSON.stringify(event).includes(user.email), 'the audit trail does not keep the erased address')

    const tombstone = (await call('GET', `/v1/admin/users/${user.id}`, admin.access_token)).json<AdminUser>()
    assert.equal(tombstone.status, 'deleted')
    assert.equal(tombstone.email, null)
    assert.equal(tombstone.live_sessions, 0)
    const listed = (await call('GET', '/v1/admin/users?status=deleted&limit=200', admin.access_token)).json<{ users: AdminUser[] }>().users
    assert.ok(listed.some((u) => u.id === user.id && u.email === null))
    assert.equal((await call('GET', '/v1/admin/users?email_prefix=deleted', admin.access_token)).json<{ users: AdminUser[] }>().users.length, 0)

    const eventsBefore = await auditCount()
    assert.equal((await call('DELETE', `/v1/admin/users/${user.id}`, admin.access_token)).statusCode, 409)
    assert.equal((await call('PATCH', `/v1/admin/users/${user.id}`, admin.access_token, { status: 'active' })).statusCode, 409)
    assert.equal((await call('DELETE', `/v1/admin/users/${UNKNOWN_ID}`, admin.access_token)).statusCode, 404)
    assert.equal((await call('PATCH', `/v1/admin/users/${UNKNOWN_ID}`, admin.access_token, { status: 'disabled' })).statusCode, 404)
    assert.equal(await auditCount(), eventsBefore)
    assert.equal((await row(user.id)).status, 'deleted')
    assert.equal((await register(t.app, user.email)).statusCode, 202)
    const { rows: reborn } = await sql.query<{ id: string }>('SELECT id FROM accounts WHERE email = $1', [user.email])
    assert.equal(reborn.length, 1)
    assert.notEqual(reborn[0]?.id, user.id)
  })

  it('revokes every session of a user and says how many; the owner can log in again', async () => {
    const user = await person()
    const second = await login(t.app, user.email)
    const res = await call('POST', `/v1/admin/users/${user.id}/sessions/revoke`, admin.access_token)
    assert.equal(res.statusCode, 200, res.body)
    assert.deepEqual(res.json(), { revoked: 2 })
    assert.equal(await meStatus(user.access_token), 401)
    assert.equal(await meStatus(second.access_token), 401)
    assert.equal((await refresh(t.app, second.refresh_token)).statusCode, 400)
    const { rows } = await sql.query<{ revoke_reason: string }>('SELECT revoke_reason FROM sessions WHERE account_id = $1', [user.id])
    assert.deepEqual(rows.map((r) => r.revoke_reason), ['revoked_by_admin', 'revoked_by_admin'])
    assert.deepEqual((await adminEvent('admin.sessions_revoked', user.id, admin)).data, { sessions_revoked: 2 })
    assert.equal((await row(user.id)).status, 'active')
    assert.equal(await loginStatus(user.email), 200)
    const again = await call('POST', `/v1/admin/users/${user.id}/sessions/revoke`, admin.access_token)
    assert.deepEqual(again.json(), { revoked: 1 })
    assert.equal((await call('POST', `/v1/admin/users/${UNKNOWN_ID}/sessions/revoke`, admin.access_token)).statusCode, 404)
  })

  it('lists audit events newest first, filtered by account, type and time, paging with no duplicates or gaps', async () => {
    const user = await person()
    const t0 = clock.now()
    clock.advanceSeconds(60)
    const t1 = clock.now()
    await call('PATCH', `/v1/admin/users/${user.id}`, admin.access_token, { status: 'disabled' })
    clock.advanceSeconds(60)
    await call('PATCH', `/v1/admin/users/${user.id}`, admin.access_token, { status: 'active' })
    clock.advanceSeconds(60)
    const t3 = clock.now()
    await call('POST', `/v1/admin/users/${user.id}/sessions/revoke`, admin.access_token)
    await call('PATCH', `/v1/admin/users/${user.id}`, admin.access_token, { roles: ['support'] })

    const { rows: expected } = await sql.query<{ id: number; type: string }>('SELECT id, type FROM audit_events WHERE account_id = $1 ORDER BY id DESC', [user.id])
    assert.ok(expected.length >= 7, 'registration, verification, login and four admin actions')
    const all = await call('GET', `/v1/admin/audit-events?account_id=${user.id}&limit=200`, admin.access_token)
    assert.equal(all.statusCode, 200, all.body)
    const events = all.json<{ events: AuditEvent[]; next_cursor: string | null }>()
    assert.deepEqual(events.events.map((e) => e.id), expected.map((e) => e.id))
    assert.equal(events.next_cursor, null)
    const newest = events.events[0]
    assert.equal(newest?.type, 'admin.user_updated')
    assert.equal(newest?.actor, `account:${admin.id}`)
    assert.equal(newest?.account_id, user.id)
    assert.equal(newest?.ip, '127.0.0.1')
    assert.deepEqual(newest?.data, { changes: { roles: { from: [], to: ['support'] } }, sessions_revoked: 0 })

    for (const limit of [1, 2, 3]) {
      const seen: number[] = []
      let cursor: string | null = null
      let pages = 0
      do {
        const res: LightMyRequestResponse = await call('GET', `/v1/admin/audit-events?account_id=${user.id}&limit=${limit}${cursor === null ? '' : `&cursor=${cursor}`}`, admin.access_token)
        assert.equal(res.statusCode, 200)
        const page = res.json<{ events: AuditEvent[]; next_cursor: string | null }>()
        seen.push(...page.events.map((e) => e.id))
        cursor = page.next_cursor
        pages++
      } while (cursor !== null && pages < 50)
      assert.deepEqual(seen, expected.map((e) => e.id), `pages of ${limit}`)
    }

    const typed = (await call('GET', `/v1/admin/audit-events?type=admin.user_updated&account_id=${user.id}`, admin.access_token)).json<{ events: AuditEvent[] }>().events
    assert.equal(typed.length, 3)
    assert.ok(typed.every((e) => e.type === 'admin.user_updated' && e.account_id === user.id))
    const everyType = (await call('GET', '/v1/admin/audit-events?type=admin.sessions_revoked&limit=200', admin.access_token)).json<{ events: AuditEvent[] }>().events
    assert.ok(everyType.length >= 1 && everyType.every((e) => e.type === 'admin.sessions_revoked'))

    // since is inclusive, until exclusive: [t1, t3) holds the disable and the enable only.
    const window = (await call('GET', `/v1/admin/audit-events?account_id=${user.id}&since=${t1.toISOString()}&until=${t3.toISOString()}`, admin.access_token)).json<{ events: AuditEvent[] }>().events
    assert.deepEqual(window.map((e) => (e.data.changes as { status: { to: string } }).status.to), ['active', 'disabled'])
    const sinceT3 = (await call('GET', `/v1/admin/audit-events?account_id=${user.id}&since=${encodeURIComponent(t3.toISOString().replace('Z', '+00:00'))}`, admin.access_token)).json<{ events: AuditEvent[] }>().events
    assert.deepEqual(sinceT3.map((e) => e.type), ['admin.user_updated', 'admin.sessions_revoked'])
    const untilT0 = (await call('GET', `/v1/admin/audit-events?account_id=${user.id}&until=${t0.toISOString()}`, admin.access_token)).json<{ events: AuditEvent[] }>().events
    assert.equal(untilT0.length, 0, 'everything of this user happened at or after t0')
    const none = (await call('GET', `/v1/admin/audit-events?account_id=${UNKNOWN_ID}`, admin.access_token)).json<{ events: AuditEvent[]; next_cursor: string | null }>()
    assert.deepEqual(none, { events: [], next_cursor: null })
  })

  it('left an audit event naming the acting administrator for every admin action, and none for reads', async () => {
    const user = await person()
    const before = await auditCount()
    await call('GET', '/v1/admin/users', admin.access_token)
    await call('GET', `/v1/admin/users/${user.id}`, admin.access_token)
    await call('GET', '/v1/admin/audit-events', admin.access_token)
    assert.equal(await auditCount(), before, 'reads are not audited')
    const actions: Array<[ 'PATCH' | 'POST' | 'DELETE', string, unknown?]> = [
      ['PATCH', `/v1/admin/users/${user.id}`, { status: 'disabled' }],
      ['PATCH', `/v1/admin/users/${user.id}`, { status: 'active', roles: ['support'] }],
      ['POST', `/v1/admin/users/${user.id}/sessions/revoke`],
      ['DELETE', `/v1/admin/users/${user.id}`],
    ]
    for (const [method, url, body] of actions) {
      const res = await call(method, url, admin.access_token, body)
      assert.ok(res.statusCode < 300, `${method} ${url}: ${res.statusCode}`)
    }
    const { rows } = await sql.query<{ type: string; actor: string; account_id: string; user_agent: string | null }>('SELECT * FROM (SELECT id, type, actor, account_id, user_agent FROM audit_events ORDER BY id DESC LIMIT 4) last ORDER BY id')
    assert.deepEqual(rows.map((r) => r.type), ['admin.user_updated', 'admin.user_updated', 'admin.sessions_revoked', 'admin.user_deleted'])
    assert.ok(rows.every((r) => r.actor === `account:${admin.id}` && r.account_id === user.id && r.user_agent === 'lightMyRequest'))
    assert.equal(await auditCount(), before + 4)
  })
})

describe('admin list cursors', () => {
  const createdAt = fc.date({ min: new Date('2000-01-01T00:00:00Z'), max: new Date('2999-12-31T23:59:59Z'), noInvalidDate: true })
    .chain((d) => fc.integer({ min: 0, max: 999 }).map((us) => `${d.toISOString().slice(0, 23)}${String(us).padStart(3, '0')}Z`))

  it('decodes exactly what it encodes, for every valid key', () => {
    fc.assert(fc.property(createdAt, fc.uuid(), (at, id) => {
      assert.deepEqual(decodeUserCursor(encodeUserCursor({ createdAt: at, id })), { createdAt: at, id })
    }))
    fc.assert(fc.property(fc.bigInt({ min: 1n, max: 2n ** 63n - 1n }), (id) => {
      assert.equal(decodeEventCursor(encodeEventCursor(id)), id)
    }))
  })

  it('never throws on arbitrary input, and anything it accepts is the canonical encoding of a valid key', () => {
    fc.assert(fc.property(fc.oneof(fc.string({ maxLength: 200 }), fc.base64String({ maxLength: 200 }), fc.string({ unit: 'binary', maxLength: 100 }).map((s) => Buffer.from(s).toString('base64url'))), (input) => {
      const user = decodeUserCursor(input)
      if (user !== undefined) assert.equal(encodeUserCursor(user), input)
      const event = decodeEventCursor(input)
      if (event !== undefined) {
        assert.equal(encodeEventCursor(event), input)
        assert.ok(event >= 1n && event <= 2n ** 63n - 1n)
      }
    }), { numRuns: 2000 })
  })
})
