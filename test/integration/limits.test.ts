/**
 * Abuse resistance: rate limits (atomic under concurrency, the same for known and unknown accounts,
 * keyed by the right client address, shared through Redis and still enforced when Redis dies), the
 * lockout (progressive, bounded, indistinguishable, never in the way of a reset) and load shedding.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { LightMyRequestResponse } from 'fastify'
import { ipKey } from '../../src/limits/limits.rules.ts'
import { createPasswordHasher, type PasswordHasher } from '../../src/passwords/passwords.hasher.ts'
import {
  bearer, createTestApp, inbox, login, RELAXED_LIMITS, signUp, tokenFromInbox, uniqueEmail, VALID_PASSWORD, type TestApp,
} from '../helpers/app.ts'
import { FakeClock } from '../helpers/clock.ts'
import { createTestDatabase } from '../helpers/db.ts'
import { redisAvailable, startTestRedis, type TestRedis } from '../helpers/redis.ts'

const WRONG = 'definitely not the right password'

function countingHasher() {
  const inner = createPasswordHasher({ argon2: { memoryCost: 1024, timeCost: 1, parallelism: 1 }, concurrency: 2, queueLimit: 200 })
  const calls = { verify: 0 }
  const hasher: PasswordHasher = {
    hash: (p) => inner.hash(p),
    verify: (h, p) => { calls.verify++; return inner.verify(h, p) },
    verifyDummy: (p) => { calls.verify++; return inner.verifyDummy(p) },
    stats: inner.stats,
  }
  return { hasher, calls }
}

/** Relaxed budgets everywhere but the rules given. */
function limitsEnv(rules: Record<string, { points: number; seconds: number }>): Record<string, string> {
  return { ...RELAXED_LIMITS, TESSERA_RATE_LIMITS: JSON.stringify({ ...JSON.parse(RELAXED_LIMITS.TESSERA_RATE_LIMITS) as object, ...rules }) }
}

const loginAs = (t: TestApp, email: string, password: string, remoteAddress = '203.0.113.7', headers: Record<string, string> = {}) =>
  t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email, password }, remoteAddress, headers })

const statuses = (responses: LightMyRequestResponse[]) => {
  const counts: Record<number, number> = {}
  for (const r of responses) counts[r.statusCode] = (counts[r.statusCode] ?? 0) + 1
  return counts
}

describe('rate limits', () => {
  it('lets at most the failure budget of 100 parallel wrong passwords reach the password check, for known and unknown accounts alike', async () => {
    const counting = countingHasher()
    const t = await createTestApp({ hasher: counting.hasher, env: limitsEnv({ 'login.account_ip.fail': { points: 5, seconds: 900 } }) })
    try {
      const known = (await signUp(t.app)).email
      const results: Record<string, { verifications: number; statuses: Record<number, number> }> = {}
      for (const [name, email] of [['known', known], ['unknown', uniqueEmail('ghost')]] as const) {
        counting.calls.verify = 0
        const responses = await Promise.all(Array.from({ length: 100 }, () => loginAs(t, email, WRONG)))
        results[name] = { verifications: counting.calls.verify, statuses: statuses(responses) }
        const refused = responses.find((r) => r.statusCode === 429)
        assert.ok(refused)
        assert.equal(refused.json<{ code: string }>().code, 'rate_limited')
        assert.match(String(refused.headers['retry-after']), /^[1-9]\d*$/)
        assert.match(String(refused.headers['ratelimit-policy']), /^"login\.account_ip\.fail";q=5;w=900$/)
        assert.match(String(refused.headers.ratelimit), /^"login\.account_ip\.fail";r=0;t=\d+$/)
      }
      assert.deepEqual(results.known, { verifications: 5, statuses: { 401: 5, 429: 95 } })
      assert.deepEqual(results.unknown, results.known, 'the same answers and work for an unknown account')
      // Another address is not affected by this address's failures on the account…
      assert.equal((await loginAs(t, known, VALID_PASSWORD, '198.51.100.20')).statusCode, 200)
    } finally {
      await t.close()
    }
  })

  it('gives failure points back on success: the right password is never limited by its own successes', async () => {
    const t = await createTestApp({ env: limitsEnv({ 'login.account_ip.fail': { points: 3, seconds: 900 } }) })
    try {
      const { email } = await signUp(t.app)
      for (let i = 0; i < 10; i++) assert.equal((await loginAs(t, email, VALID_PASSWORD)).statusCode, 200)
    } finally {
      await t.close()
    }
  })

  it('counts every attempt per address, and groups IPv6 addresses by /64', async () => {
    const t = await createTestApp({ env: limitsEnv({ 'register.ip': { points: 3, seconds: 3600 } }) })
    try {
      const register = (remoteAddress: string) => t.app.inject({ method: 'POST', url: '/v1/accounts', payload: { email: uniqueEmail('r'), password: VALID_PASSWORD }, remoteAddress })
      const sameNetwork = ['2001:db8:1:2::1', '2001:db8:1:2:ffff::9', '2001:0db8:0001:0002:0:0:0:3', '2001:db8:1:2::4']
      const answers = []
      for (const address of sameNetwork) answers.push((await register(address)).statusCode)
      assert.deepEqual(answers, [202, 202, 202, 429], 'one /64 is one client')
      assert.equal((await register('2001:db8:1:3::1')).statusCode, 202, 'the next /64 is another client')
      // Malformed bodies count too (the limit runs before validation).
      const t2 = (await t.app.inject({ method: 'POST', url: '/v1/accounts', payload: { nope: true }, remoteAddress: '2001:db8:1:2::5' }))
      assert.equal(t2.statusCode, 429)
    } finally {
      await t.close()
    }
  })

  it('ignores forwarding headers unless the proxy is trusted, and then takes the rightmost untrusted hop', async () => {
    const rules = limitsEnv({ 'login.ip': { points: 2, seconds: 60 } })
    const direct = await createTestApp({ env: rules })
    const proxied = await createTestApp({ env: { ...rules, TESSERA_TRUSTED_PROXIES: '10.0.0.0/8, 127.0.0.1' } })
    try {
      // No trusted proxy: X-Forwarded-For is ignored, however it is spoofed.
      const spoofed = []
      for (let i = 0; i < 3; i++) spoofed.push((await loginAs(direct, uniqueEmail(), WRONG, '192.0.2.50', { 'x-forwarded-for': `198.51.100.${i}` })).statusCode)
      assert.deepEqual(spoofed, [401, 401, 429])
      // Behind the proxy: the client is the hop the proxy saw; rotating a forged left-hand entry changes nothing.
      const viaProxy = []
      for (let i = 0; i < 3; i++) viaProxy.push((await loginAs(proxied, uniqueEmail(), WRONG, '10.1.2.3', { 'x-forwarded-for': `6.6.6.${i}, 192.0.2.77` })).statusCode)
      assert.deepEqual(viaProxy, [401, 401, 429])
      // A different real client behind the same proxy has its own budget.
      assert.equal((await loginAs(proxied, uniqueEmail(), WRONG, '10.1.2.3', { 'x-forwarded-for': '192.0.2.78' })).statusCode, 401)
    } finally {
      await direct.close()
      await proxied.close()
    }
  })

  it('answers 429 on the OAuth token endpoint in the RFC 6749 shape', async () => {
    const t = await createTestApp({ env: limitsEnv({ 'refresh.ip': { points: 1, seconds: 60 } }) })
    try {
      const send = () => t.app.inject({ method: 'POST', url: '/oauth/token', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: `grant_type=refresh_token&refresh_token=tsr_${'A'.repeat(43)}` })
      assert.equal((await send()).statusCode, 400)
      const refused = await send()
      assert.equal(refused.statusCode, 429)
      assert.deepEqual(Object.keys(refused.json<object>()).sort(), ['error', 'error_description'])
      assert.equal(refused.json<{ error: string }>().error, 'temporarily_unavailable')
      assert.ok(refused.headers['retry-after'])
    } finally {
      await t.close()
    }
  })

  it('refuses TESSERA_RATE_LIMITS that is not JSON, names an unknown rule, or has out-of-range values', async () => {
    for (const bad of ['{', '{"login.nobody":{"points":1,"seconds":1}}', '{"login.ip":{"points":0,"seconds":1}}', '{"login.ip":{"points":1}}']) {
      await assert.rejects(createTestApp({ env: { TESSERA_RATE_LIMITS: bad } }), /TESSERA_RATE_LIMITS/, bad)
    }
  })
})

const redis = redisAvailable()
if (!redis.ok) console.log(`# NOTICE: ${redis.reason}`)

describe('rate limits shared through Redis', { skip: !redis.ok }, () => {
  let server: TestRedis
  before(async () => { server = await startTestRedis() })
  after(async () => { await server.stop() })

  it('holds one budget across two instances, and keeps limiting (locally) when Redis dies', async () => {
    const db = await createTestDatabase()
    const env = { ...limitsEnv({ 'login.ip': { points: 6, seconds: 60 } }), REDIS_URL: server.url, TESSERA_KEY_ENCRYPTION_KEY: (await import('node:crypto')).randomBytes(32).toString('base64') }
    const [a, b] = await Promise.all([createTestApp({ db, env }), createTestApp({ db, env })])
    try {
      await new Promise((r) => setTimeout(r, 300)) // both limiters connected
      const answers = []
      for (let i = 0; i < 8; i++) answers.push((await loginAs(i % 2 === 0 ? a : b, uniqueEmail(), WRONG, '192.0.2.200')).statusCode)
      assert.deepEqual(answers, [401, 401, 401, 401, 401, 401, 429, 429], 'six attempts in all, whichever instance')

      await server.stop()
      // Redis is gone: each instance enforces the budget alone (its in-memory insurance), never a 500.
      const during = []
      for (let i = 0; i < 8; i++) during.push((await loginAs(a, uniqueEmail(), WRONG, '192.0.2.201')).statusCode)
      assert.deepEqual(during, [401, 401, 401, 401, 401, 401, 429, 429])
      await server.start()
    } finally {
      await Promise.all([a.close(), b.close()])
      await db.drop()
    }
  })
})

describe('lockout', () => {
  const clock = new FakeClock(new Date('2026-05-01T08:00:00Z'))
  const counting = countingHasher()
  let t: TestApp

  before(async () => {
    t = await createTestApp({ clock, hasher: counting.hasher, env: { TESSERA_LOCKOUT_THRESHOLD: '5', TESSERA_LOCKOUT_BASE_SECONDS: '30', TESSERA_LOCKOUT_MAX_SECONDS: '120', TESSERA_LOCKOUT_HARD_LIMIT: '10' } })
  })
  after(async () => { await t.close() })

  const comparable = (res: LightMyRequestResponse) => ({
    status: res.statusCode,
    body: { ...res.json<Record<string, unknown>>(), request_id: null },
    headers: Object.fromEntries(Object.entries(res.headers).filter(([k]) => !['x-request-id', 'date', 'content-length', 'ratelimit'].includes(k))),
  })
  const lockedUntil = async (email: string) => (await t.deps.db.query<{ locked_until: Date | null; failed_login_attempts: number }>('SELECT locked_until, failed_login_attempts FROM accounts WHERE email = $1', [email])).rows[0]

  it('locks progressively, answers a locked account exactly like a wrong password or an unknown one, and unlocks on time', async () => {
    const { email } = await signUp(t.app)
    for (let i = 0; i < 4; i++) assert.equal((await loginAs(t, email, WRONG)).statusCode, 401)
    assert.equal((await lockedUntil(email))?.locked_until, null, 'below the threshold: no lock')
    await loginAs(t, email, WRONG) // the 5th failure: locked for 30 s
    const first = await lockedUntil(email)
    assert.equal(first?.locked_until?.getTime(), clock.now().getTime() + 30_000)

    counting.calls.verify = 0
    const lockedRight = await loginAs(t, email, VALID_PASSWORD)
    const lockedWrong = await loginAs(t, email, WRONG)
    const unknown = await loginAs(t, uniqueEmail('ghost'), WRONG)
    assert.equal(counting.calls.verify, 3, 'one verification each (a dummy one while locked)')
    assert.deepEqual(comparable(lockedRight), comparable(unknown))
    assert.deepEqual(comparable(lockedWrong), comparable(unknown))
    assert.equal((await lockedUntil(email))?.failed_login_attempts, 5, 'attempts during a lock are not password checks')

    clock.advanceSeconds(31)
    await loginAs(t, email, WRONG) // 6th: 60 s
    assert.equal((await lockedUntil(email))?.locked_until?.getTime(), clock.now().getTime() + 60_000)
    clock.advanceSeconds(61)
    await loginAs(t, email, WRONG) // 7th: 120 s (the ceiling)
    clock.advanceSeconds(121)
    await loginAs(t, email, WRONG) // 8th: still 120 s
    assert.equal((await lockedUntil(email))?.locked_until?.getTime(), clock.now().getTime() + 120_000, 'the ceiling holds')
    clock.advanceSeconds(121)
    assert.equal((await loginAs(t, email, VALID_PASSWORD)).statusCode, 200, 'unlocked on time')
    assert.deepEqual(await lockedUntil(email), { locked_until: null, failed_login_attempts: 0 })
    assert.ok((await inbox(t.app, email)).some((m) => m.subject === 'Sign-in to your account was locked for a while'))
  })

  it('counts parallel wrong guesses one by one', async () => {
    const { email } = await signUp(t.app)
    await Promise.all(Array.from({ length: 4 }, () => loginAs(t, email, WRONG)))
    assert.equal((await lockedUntil(email))?.failed_login_attempts, 4)
  })

  it('never locks the owner out of a reset, and a reset ends the lock, even one until reset', async () => {
    const { email } = await signUp(t.app)
    for (let i = 0; i < 10; i++) {
      await loginAs(t, email, WRONG)
      clock.advanceSeconds(121)
    }
    const state = await lockedUntil(email)
    assert.equal(state?.failed_login_attempts, 10)
    assert.equal(state?.locked_until?.toISOString(), '9999-12-31T00:00:00.000Z', 'the hard limit locks until a reset')
    clock.advanceSeconds(86_400)
    assert.equal((await loginAs(t, email, VALID_PASSWORD)).statusCode, 401, 'time does not end it')

    assert.equal((await t.app.inject({ method: 'POST', url: '/v1/password-reset', payload: { email } })).statusCode, 202)
    const token = await tokenFromInbox(t.app, email, '/reset-password')
    const reset = await t.app.inject({ method: 'POST', url: '/v1/password-reset/confirm', payload: { token, new_password: 'the owner is back with a new passphrase' } })
    assert.equal(reset.statusCode, 204)
    const tokens = await login(t.app, email, 'the owner is back with a new passphrase')
    const me = await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(tokens.access_token) })
    assert.deepEqual(
      { failed: me.json<{ failed_login_attempts: number }>().failed_login_attempts, locked: me.json<{ locked_until: string | null }>().locked_until },
      { failed: 0, locked: null },
    )
  })
})

describe('load shedding', () => {
  it('sheds requests with 503 and Retry-After while the event loop lags; health endpoints still answer', async () => {
    const t = await createTestApp({ env: { TESSERA_MAX_EVENT_LOOP_DELAY_MS: '20' } })
    try {
      let shed: LightMyRequestResponse | undefined
      let health: number[] = []
      for (let i = 0; i < 5 && shed === undefined; i++) {
        const until = Date.now() + 1200
        while (Date.now() < until) { /* block the event loop, as a CPU-bound handler would */ }
        await new Promise((r) => setTimeout(r, 50)) // let under-pressure take its (overdue) sample
        const res = await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: uniqueEmail(), password: WRONG } })
        if (res.statusCode === 503) {
          shed = res
          health = [(await t.app.inject({ method: 'GET', url: '/livez' })).statusCode, (await t.app.inject({ method: 'GET', url: '/readyz' })).statusCode]
        }
      }
      assert.ok(shed, 'a request was shed while the loop lagged')
      assert.equal(shed.json<{ code: string }>().code, 'overloaded')
      assert.equal(shed.headers['retry-after'], '5')
      assert.deepEqual(health, [200, 200])
    } finally {
      await t.close()
    }
  })
})

describe('ipKey', () => {
  it('keeps IPv4, unwraps IPv4-mapped IPv6, and reduces IPv6 to its /64', () => {
    assert.equal(ipKey('192.0.2.1'), '192.0.2.1')
    assert.equal(ipKey('::ffff:192.0.2.1'), '192.0.2.1')
    assert.equal(ipKey('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64')
    assert.equal(ipKey('2001:0db8:0001:0002::9'), '2001:db8:1:2::/64')
    assert.equal(ipKey('2001:db8::1'), '2001:db8:0:0::/64')
    assert.equal(ipKey('::1'), '0:0:0:0::/64')
    assert.equal(ipKey('fe80::1:2:3:4'), 'fe80:0:0:0::/64')
  })
})
