/**
 * Several instances on one database: they share signing keys (one generated, whoever starts first),
 * and a revocation made on one reaches the others through the periodic PostgreSQL read.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { bearer, createTestApp, signUp, type TestApp } from '../helpers/app.ts'
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts'
import { randomBytes } from 'node:crypto'

describe('several instances sharing one database', () => {
  let db: TestDatabase
  let a: TestApp
  let b: TestApp
  const kek = randomBytes(32).toString('base64')

  before(async () => {
    db = await createTestDatabase()
    const env = { TESSERA_KEY_ENCRYPTION_KEY: kek, TESSERA_REVOCATION_POLL_MS: '100' }
    ;[a, b] = await Promise.all([createTestApp({ db, env }), createTestApp({ db, env })])
  })
  after(async () => {
    await Promise.all([a.close(), b.close()])
    await db.drop()
  })

  it('generate one signing key between them, so each verifies the other\'s tokens', async () => {
    const jwksA = (await a.app.inject({ method: 'GET', url: '/.well-known/jwks.json' })).json<{ keys: Array<{ kid: string }> }>()
    const jwksB = (await b.app.inject({ method: 'GET', url: '/.well-known/jwks.json' })).json<{ keys: Array<{ kid: string }> }>()
    assert.equal(jwksA.keys.length, 1)
    assert.deepEqual(jwksA, jwksB)
    const tokens = await signUp(a.app)
    assert.equal((await b.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(tokens.access_token) })).statusCode, 200)
  })

  it('refuses on B, within the poll bound, an access token whose session was ended on A', async () => {
    const tokens = await signUp(a.app)
    // B has verified (and cached) the token before the logout.
    assert.equal((await b.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(tokens.access_token) })).statusCode, 200)
    assert.equal((await a.app.inject({ method: 'POST', url: '/v1/auth/logout', headers: bearer(tokens.access_token) })).statusCode, 204)
    // Instant on A; on B, after its next read of the revocations.
    assert.equal((await a.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(tokens.access_token) })).statusCode, 401)
    await b.deps.revocations.refresh()
    const { sid } = JSON.parse(Buffer.from(tokens.access_token.split('.')[1] ?? '', 'base64url').toString()) as { sid: string }
    assert.ok(b.deps.revocations.isSessionRevoked(sid))
  })

  it('refuses a revoked session on B even before B has polled, on routes that read the account', async () => {
    const tokens = await signUp(a.app)
    b.deps.revocations.stop() // B will not poll again in this test
    await a.app.inject({ method: 'POST', url: '/v1/auth/logout', headers: bearer(tokens.access_token) })
    assert.equal((await b.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(tokens.access_token) })).statusCode, 401)
  })
})
