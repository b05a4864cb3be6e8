/**
 * Planned key rotation rejects no valid token, for resource servers that honour the JWKS cache headers
 * and for jose's remote JWK set; an emergency revocation stops a key at Tessera at once and at resource
 * servers when their cached JWKS expires. Time is Tessera's fake clock; the JWKS travels over HTTP.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { createLocalJWKSet, createRemoteJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose'
import { FakeClock } from '../helpers/clock.ts'
import { bearer, createTestApp, refresh, signUp, type TestApp, type Tokens } from '../helpers/app.ts'
import { freePort } from '../helpers/process.ts'

/** A resource server that refetches the JWKS only when the max-age of its cached copy has passed. */
function strictResourceServer(jwksUrl: string, clock: FakeClock, verifyOptions: { issuer: string; audience: string }) {
  let cached: { jwks: JSONWebKeySet; until: number } | undefined
  let fetches = 0
  return {
    get fetches() { return fetches },
    async verify(token: string): Promise<boolean> {
      if (cached === undefined || clock.now().getTime() >= cached.until) {
        const res = await fetch(jwksUrl)
        const maxAge = Number(/max-age=(\d+)/.exec(res.headers.get('cache-control') ?? '')?.[1] ?? '0')
        cached = { jwks: (await res.json()) as JSONWebKeySet, until: clock.now().getTime() + maxAge * 1000 }
        fetches++
      }
      try {
        await jwtVerify(token, createLocalJWKSet(cached.jwks), { ...verifyOptions, typ: 'at+jwt', currentDate: clock.now() })
        return true
      } catch {
        return false
      }
    },
  }
}

describe('signing key rotation', () => {
  const clock = new FakeClock(new Date())
  let t: TestApp
  let base: string

  before(async () => {
    const port = await freePort()
    base = `http://127.0.0.1:${port}`
    t = await createTestApp({ clock, env: { TESSERA_PUBLIC_URL: base, TESSERA_KEY_ROTATION_DAYS: '0' } })
    await t.app.listen({ host: '127.0.0.1', port })
  })
  after(async () => { await t.close() })

  const kidOf = (token: string) => decodeProtectedHeader(token).kid
  const jwksKids = async () => ((await (await fetch(`${base}/.well-known/jwks.json`)).json()) as JSONWebKeySet).keys.map((k) => k.kid)

  it('publishes the new key a cache period before it signs, keeps the old one until its tokens expire, and rejects nothing', async () => {
    const verifyOptions = { issuer: t.config.jwt.issuer, audience: t.config.jwt.audience }
    const strict = strictResourceServer(`${base}/.well-known/jwks.json`, clock, verifyOptions)
    const remote = createRemoteJWKSet(new URL(`${base}/.well-known/jwks.json`))
    let session: Tokens = await signUp(t.app)
    const oldKid = kidOf(session.access_token)
    assert.ok(await strict.verify(session.access_token))

    clock.advanceSeconds(10)
    const { kid: newKid, activatesAt } = await t.deps.keys.rotate()
    assert.equal(activatesAt.getTime() - clock.now().getTime(), (t.config.keys.jwksMaxAgeSeconds + 60) * 1000)
    assert.deepEqual((await jwksKids()).sort(), [oldKid, newKid].sort(), 'the new key is published at once')

    let issued = 0
    let rejectedStrict = 0
    let rejectedRemote = 0
    const kidsSeen = new Set<string | undefined>()
    const stepSeconds = 30
    const span = t.config.keys.jwksMaxAgeSeconds + 60 + t.config.jwt.accessTokenTtlSeconds + t.config.jwt.leewaySeconds + 180
    for (let elapsed = 0; elapsed <= span; elapsed += stepSeconds) {
      clock.advanceSeconds(stepSeconds)
      const res = await refresh(t.app, session.refresh_token)
      assert.equal(res.statusCode, 200)
      session = res.json<Tokens>()
      issued++
      kidsSeen.add(kidOf(session.access_token))
      if (!(await strict.verify(session.access_token))) rejectedStrict++
      try {
        await jwtVerify(session.access_token, remote, { ...verifyOptions, typ: 'at+jwt', currentDate: clock.now() })
      } catch {
        rejectedRemote++
      }
      assert.equal((await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(session.access_token) })).statusCode, 200)
    }
    console.log(`# planned rotation: ${issued} tokens issued across it, rejected by a strict cache: ${rejectedStrict}, by jose remote JWKS: ${rejectedRemote}`)
    assert.equal(rejectedStrict, 0)
    assert.equal(rejectedRemote, 0)
    assert.deepEqual([...kidsSeen].sort(), [oldKid, newKid].sort(), 'signing moved from the old key to the new one')
    assert.equal(kidOf(session.access_token), newKid)
    // Every token the old key signed has expired: it has left the JWKS.
    await t.deps.keys.reload()
    assert.deepEqual(await jwksKids(), [newKid])
  })

  it('revokes a key in an emergency: Tessera refuses its tokens at once, resource servers after their cache period', async () => {
    const verifyOptions = { issuer: t.config.jwt.issuer, audience: t.config.jwt.audience }
    const strict = strictResourceServer(`${base}/.well-known/jwks.json`, clock, verifyOptions)
    const user = await signUp(t.app)
    const compromised = kidOf(user.access_token) ?? ''
    assert.ok(await strict.verify(user.access_token))

    const result = await t.deps.keys.revoke(compromised)
    assert.ok(result?.replacement, 'a replacement signs at once when no other key can')
    assert.equal((await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(user.access_token) })).statusCode, 401)
    assert.ok(!(await jwksKids()).includes(compromised))
    const fresh = (await refresh(t.app, user.refresh_token)).json<Tokens>()
    assert.equal(kidOf(fresh.access_token), result.replacement)
    assert.equal((await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(fresh.access_token) })).statusCode, 200)

    // A resource server with the old JWKS cached still accepts the revoked key until its copy expires...
    assert.ok(await strict.verify(user.access_token))
    clock.advanceSeconds(t.config.keys.jwksMaxAgeSeconds)
    // ...then refetches and refuses it.
    assert.equal(await strict.verify(user.access_token), false)
    assert.ok(await strict.verify(fresh.access_token))
  })

  it('lists keys with their state', async () => {
    const states = (await t.deps.keys.list()).map((k) => k.state)
    assert.ok(states.includes('revoked'))
    assert.equal(states.filter((s) => s === 'signing').length, 1)
  })
})
