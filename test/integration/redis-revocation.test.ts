/**
 * Revocation across instances through Redis (real redis-server, real PostgreSQL): fast with Redis,
 * bounded by PostgreSQL polling while Redis is down, and convergent when it returns.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { bearer, createTestApp, signUp, type TestApp } from '../helpers/app.ts'
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts'
import { freePort } from '../helpers/process.ts'
import { redisAvailable, startTestRedis, type TestRedis } from '../helpers/redis.ts'

const availability = redisAvailable()
if (!availability.ok) console.log(`# NOTICE: ${availability.reason}`)
const POLL_MS = 3000

function sidOf(token: string): string {
  return (JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as { sid: string }).sid
}

describe('revocation across instances with Redis', { skip: availability.ok ? false : availability.reason }, () => {
  let db: TestDatabase
  let redis: TestRedis
  let a: TestApp
  let b: TestApp
  let baseA = ''
  let baseB = ''
  const lags: number[] = []
  const http = async (base: string, method: string, path: string, token?: string, body?: unknown): Promise<number> => {
    const headers: Record<string, string> = token === undefined ? {} : bearer(token)
    if (body !== undefined) headers['content-type'] = 'application/json'
    const res = await fetch(base + path, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) })
    await res.arrayBuffer()
    return res.status
  }

  before(async () => {
    db = await createTestDatabase()
    redis = await startTestRedis()
    const env = { TESSERA_KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64'), REDIS_URL: redis.url, TESSERA_REVOCATION_POLL_MS: String(POLL_MS) }
    a = await createTestApp({ db, env })
    b = await createTestApp({ db, env })
    // Real sockets between the test and each instance.
    baseA = await a.app.listen({ host: '127.0.0.1', port: 0 })
    baseB = await b.app.listen({ host: '127.0.0.1', port: 0 })
    for (const t of [a, b]) {
      for (let i = 0; i < 100 && t.deps.bus?.connected() !== true; i++) await new Promise((r) => setTimeout(r, 20))
    }
  })
  after(async () => {
    await Promise.all([a.close(), b.close()])
    await redis.stop()
    await db.drop()
    if (lags.length > 0) {
      const sorted = [...lags].sort((x, y) => x - y)
      console.log(`# revocation propagation A→B with Redis over ${lags.length} revocations: median ${sorted[Math.floor(sorted.length / 2)]} ms, max ${sorted.at(-1)} ms`)
    }
  })

  /** Milliseconds until B refuses the session, or -1 if it still accepts after `limitMs`. */
  async function timeUntilRefusedOnB(sessionId: string, start: number, limitMs: number): Promise<number> {
    while (performance.now() - start < limitMs) {
      if (b.deps.revocations.isSessionRevoked(sessionId)) return performance.now() - start
      await new Promise((r) => setTimeout(r, 2))
    }
    return -1
  }

  it('refuses on B, well within a second, a session logged out on A', async () => {
    for (let i = 0; i < 10; i++) {
      const user = await signUp(a.app)
      assert.equal(await http(baseB, 'POST', '/v1/auth/login', undefined, { email: user.email, password: 'correct horse battery staple' }), 200)
      const start = performance.now()
      assert.equal(await http(baseA, 'POST', '/v1/auth/logout', user.access_token), 204)
      const lag = await timeUntilRefusedOnB(sidOf(user.access_token), start, 1000)
      assert.ok(lag >= 0, 'B refused the token within 1 s')
      // And over HTTP: B's bearer check (no database read) refuses it.
      assert.equal(await http(baseB, 'POST', '/v1/auth/logout', user.access_token), 401)
      lags.push(Math.round(lag * 10) / 10)
    }
    const metric = await b.deps.metrics.registry.getSingleMetricAsString('tessera_revocation_propagation_seconds')
    assert.match(metric, /tessera_revocation_propagation_seconds_count 10/)
  })

  it('with Redis killed: A refuses at once, B within the polling bound, and nothing revoked is accepted after it', async () => {
    await redis.stop()
    const user = await signUp(a.app)
    const sid = sidOf(user.access_token)
    const start = performance.now()
    assert.equal(await http(baseA, 'POST', '/v1/auth/logout', user.access_token), 204)
    assert.equal(await http(baseA, 'GET', '/v1/me', user.access_token), 401)
    // Routes that read the account re-check the session in PostgreSQL: refused on B at once as well.
    assert.equal(await http(baseB, 'GET', '/v1/me', user.access_token), 401)
    const lag = await timeUntilRefusedOnB(sid, start, POLL_MS + 1500)
    assert.ok(lag >= 0, `B learned the revocation from PostgreSQL within ${POLL_MS} ms + slack`)
    console.log(`# without Redis, B learned a revocation from PostgreSQL after ${Math.round(lag)} ms (poll every ${POLL_MS} ms)`)
  })

  it('converges when Redis returns: instances rebuild from PostgreSQL and propagate through Redis again', async () => {
    const missed = await signUp(a.app)
    assert.equal(await http(baseA, 'POST', '/v1/auth/logout', missed.access_token), 204)
    await redis.start()
    for (let i = 0; i < 200 && !(a.deps.bus?.connected() === true && b.deps.bus?.connected() === true); i++) await new Promise((r) => setTimeout(r, 25))
    assert.ok(a.deps.bus?.connected() && b.deps.bus?.connected(), 'both reconnected')
    assert.ok(b.deps.revocations.isSessionRevoked(sidOf(missed.access_token)), 'revocation made while Redis was down is known after the rebuild')
    const user = await signUp(a.app)
    const start = performance.now()
    assert.equal(await http(baseA, 'POST', '/v1/auth/logout', user.access_token), 204)
    const lag = await timeUntilRefusedOnB(sidOf(user.access_token), start, 1000)
    assert.ok(lag >= 0, 'propagation through Redis works again')
  })

  it('tells every instance about a key rotation through Redis', async () => {
    const before = b.deps.keys.jwks().keys.length
    await a.deps.keys.rotate()
    for (let i = 0; i < 100 && b.deps.keys.jwks().keys.length === before; i++) await new Promise((r) => setTimeout(r, 10))
    assert.equal(b.deps.keys.jwks().keys.length, before + 1)
  })

  it('starts and serves with Redis unreachable from the start, falling back to PostgreSQL polling', async () => {
    const dead = `redis://127.0.0.1:${await freePort()}`
    const c = await createTestApp({ db, env: { TESSERA_KEY_ENCRYPTION_KEY: a.config.keyEncryptionKey ?? '', REDIS_URL: dead, TESSERA_REVOCATION_POLL_MS: '200' } })
    try {
      assert.equal(c.deps.bus?.connected(), false)
      const user = await signUp(c.app)
      assert.equal((await c.app.inject({ method: 'POST', url: '/v1/auth/logout', headers: bearer(user.access_token) })).statusCode, 204)
      assert.equal((await c.app.inject({ method: 'POST', url: '/v1/auth/logout', headers: bearer(user.access_token) })).statusCode, 401)
      // A revocation made elsewhere reaches it through PostgreSQL.
      const other = await signUp(a.app)
      assert.equal((await c.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(other.access_token) })).statusCode, 200)
      await a.app.inject({ method: 'POST', url: '/v1/auth/logout', headers: bearer(other.access_token) })
      const start = performance.now()
      while (!c.deps.revocations.isSessionRevoked(sidOf(other.access_token)) && performance.now() - start < 2000) await new Promise((r) => setTimeout(r, 10))
      assert.ok(c.deps.revocations.isSessionRevoked(sidOf(other.access_token)))
    } finally {
      await c.close()
    }
  })
})
