/**
 * Database faults: PostgreSQL unreachable or frozen. Requests that need it answer 503 problem+json with
 * Retry-After (never a 500, never a hang), readiness flips, liveness does not, and everything recovers
 * without a restart.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { createTestApp, signUp, uniqueEmail, VALID_PASSWORD, bearer, type TestApp } from '../helpers/app.ts'
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts'
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.ts'

describe('database faults', () => {
  let db: TestDatabase
  let proxy: TcpProxy
  let t: TestApp
  let faultsSurvived = 0

  before(async () => {
    db = await createTestDatabase()
    const url = new URL(db.url)
    proxy = await startTcpProxy({ host: url.hostname, port: Number(url.port || 5432) })
    url.port = String(proxy.port)
    url.hostname = '127.0.0.1'
    t = await createTestApp({
      db: { ...db, url: url.toString() },
      env: { DATABASE_CONNECT_TIMEOUT_MS: '500', DATABASE_STATEMENT_TIMEOUT_MS: '500', TESSERA_REVOCATION_POLL_MS: '60000' },
    })
  })
  after(async () => {
    await t.close()
    await proxy.close()
    await db.drop()
    console.log(`# database faults injected and survived: ${faultsSurvived}`)
  })

  const loginRequest = (app: FastifyInstance, email: string) => app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email, password: VALID_PASSWORD } })

  async function assertUnavailable(app: FastifyInstance, email: string, access: string): Promise<void> {
    for (const res of [await loginRequest(app, email), await app.inject({ method: 'GET', url: '/v1/me', headers: bearer(access) })]) {
      assert.equal(res.statusCode, 503, res.body)
      assert.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8')
      assert.equal(res.json<{ code: string }>().code, 'service_unavailable')
      assert.equal(res.headers['retry-after'], '1')
    }
    assert.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 503)
    assert.equal((await app.inject({ method: 'GET', url: '/livez' })).statusCode, 200)
    // Token verification needs no database.
    assert.equal((await app.inject({ method: 'GET', url: '/.well-known/jwks.json' })).statusCode, 200)
  }

  async function assertRecovered(app: FastifyInstance, email: string): Promise<void> {
    // The pool reconnects on its own; allow it a few attempts.
    let ready = 0
    for (let i = 0; i < 40 && ready !== 200; i++) {
      ready = (await app.inject({ method: 'GET', url: '/readyz' })).statusCode
      if (ready !== 200) await new Promise((r) => setTimeout(r, 100))
    }
    assert.equal(ready, 200)
    assert.equal((await loginRequest(app, email)).statusCode, 200)
    faultsSurvived++
  }

  it('answers 503 while PostgreSQL is unreachable, and recovers without a restart', async () => {
    const { email, access_token } = await signUp(t.app, uniqueEmail())
    await proxy.cut()
    await assertUnavailable(t.app, email, access_token)
    await proxy.restore()
    await assertRecovered(t.app, email)
  })

  it('answers 503 within the timeouts while PostgreSQL is frozen, and recovers', async () => {
    const { email, access_token } = await signUp(t.app, uniqueEmail())
    proxy.freeze()
    await assertUnavailable(t.app, email, access_token)
    await proxy.restore()
    await assertRecovered(t.app, email)
  })

  it('never half-writes: a registration interrupted by the outage leaves no account behind', async () => {
    const email = uniqueEmail('outage')
    await proxy.cut()
    const res = await t.app.inject({ method: 'POST', url: '/v1/accounts', payload: { email, password: VALID_PASSWORD } })
    assert.equal(res.statusCode, 503)
    await proxy.restore()
    await assertRecovered(t.app, (await signUp(t.app)).email)
    const login = await loginRequest(t.app, email)
    assert.equal(login.statusCode, 401)
  })
})
