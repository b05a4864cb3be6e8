import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { bearer, createTestApp, refresh, registerVerified, signUp, type TestApp, type Tokens, uniqueEmail, VALID_PASSWORD } from '../helpers/app.ts'

const FIREFOX_MAC = 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:128.0) Gecko/20100101 Firefox/128.0'
const CHROME_ANDROID = 'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36'

interface SessionView { id: string; current: boolean; device: string; ip: string | null; user_agent: string | null; created_at: string; last_used_at: string }

async function loginAs(app: FastifyInstance, email: string, userAgent: string): Promise<Tokens> {
  const res = await app.inject({ method: 'POST', url: '/v1/auth/login', headers: { 'user-agent': userAgent }, payload: { email, password: VALID_PASSWORD } })
  assert.equal(res.statusCode, 200)
  return res.json<Tokens>()
}

describe('session management', () => {
  let t: TestApp
  before(async () => { t = await createTestApp() })
  after(async () => { await t.close() })

  const list = async (token: string) => {
    const res = await t.app.inject({ method: 'GET', url: '/v1/sessions', headers: bearer(token) })
    assert.equal(res.statusCode, 200)
    return res.json<{ sessions: SessionView[] }>().sessions
  }
  const meStatus = async (token: string) => (await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(token) })).statusCode

  it('lists the live sessions with device, IP and times, marking the current one', async () => {
    const email = uniqueEmail()
    await registerVerified(t.app, email)
    const mac = await loginAs(t.app, email, FIREFOX_MAC)
    const phone = await loginAs(t.app, email, CHROME_ANDROID)
    const sessions = await list(mac.access_token)
    assert.equal(sessions.length, 2)
    const current = sessions.filter((s) => s.current)
    assert.equal(current.length, 1)
    assert.equal(current[0]?.device, 'Firefox 128 on macOS Sonoma')
    const other = sessions.find((s) => !s.current)
    assert.match(other?.device ?? '', /^Chrome 126 on Android/)
    assert.equal(other?.ip, '127.0.0.1')
    assert.equal(other?.user_agent, CHROME_ANDROID)
    assert.ok(!('refresh_token' in (other ?? {})))
    // The phone sees the same two, with itself as current.
    const fromPhone = await list(phone.access_token)
    assert.deepEqual(fromPhone.map((s) => s.id).sort(), sessions.map((s) => s.id).sort())
    assert.equal(fromPhone.find((s) => s.current)?.id, other?.id)
  })

  it('ends one session by id: its access and refresh tokens stop at once, the others go on', async () => {
    const first = await signUp(t.app)
    const second = await loginAs(t.app, first.email, CHROME_ANDROID)
    const target = (await list(first.access_token)).find((s) => !s.current)
    const res = await t.app.inject({ method: 'DELETE', url: `/v1/sessions/${target?.id ?? ''}`, headers: bearer(first.access_token) })
    assert.equal(res.statusCode, 204)
    assert.equal(await meStatus(second.access_token), 401)
    assert.equal((await refresh(t.app, second.refresh_token)).statusCode, 400)
    assert.equal(await meStatus(first.access_token), 200)
    assert.equal((await list(first.access_token)).length, 1)
  })

  it('ends the current session when asked to', async () => {
    const user = await signUp(t.app)
    const current = (await list(user.access_token)).find((s) => s.current)
    assert.equal((await t.app.inject({ method: 'DELETE', url: `/v1/sessions/${current?.id ?? ''}`, headers: bearer(user.access_token) })).statusCode, 204)
    assert.equal(await meStatus(user.access_token), 401)
  })

  it('answers another account\'s session id exactly like an unknown one, and leaves it alive', async () => {
    const alice = await signUp(t.app)
    const bob = await signUp(t.app)
    const bobSession = (await list(bob.access_token))[0]?.id ?? ''
    const foreign = await t.app.inject({ method: 'DELETE', url: `/v1/sessions/${bobSession}`, headers: bearer(alice.access_token) })
    const unknown = await t.app.inject({ method: 'DELETE', url: '/v1/sessions/00000000-0000-4000-8000-000000000000', headers: bearer(alice.access_token) })
    assert.equal(foreign.statusCode, 404)
    const strip = (body: string) => ({ ...(JSON.parse(body) as Record<string, unknown>), request_id: null })
    assert.deepEqual(strip(foreign.body), strip(unknown.body))
    assert.equal(await meStatus(bob.access_token), 200)
    const malformed = await t.app.inject({ method: 'DELETE', url: '/v1/sessions/not-a-uuid', headers: bearer(alice.access_token) })
    assert.equal(malformed.statusCode, 400)
  })

  it('ends every other session, keeping this one', async () => {
    const user = await signUp(t.app)
    const others = [await loginAs(t.app, user.email, FIREFOX_MAC), await loginAs(t.app, user.email, CHROME_ANDROID)]
    const res = await t.app.inject({ method: 'POST', url: '/v1/sessions/revoke-others', headers: bearer(user.access_token) })
    assert.deepEqual(res.json(), { revoked: 2 })
    for (const o of others) assert.equal(await meStatus(o.access_token), 401)
    assert.equal(await meStatus(user.access_token), 200)
    assert.equal((await list(user.access_token)).length, 1)
  })

  it('logs out everywhere, this session included', async () => {
    const user = await signUp(t.app)
    const other = await loginAs(t.app, user.email, FIREFOX_MAC)
    const res = await t.app.inject({ method: 'POST', url: '/v1/auth/logout-all', headers: bearer(user.access_token) })
    assert.deepEqual(res.json(), { revoked: 2 })
    assert.equal(await meStatus(user.access_token), 401)
    assert.equal(await meStatus(other.access_token), 401)
    assert.equal((await refresh(t.app, other.refresh_token)).statusCode, 400)
  })
})
