import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { bearer, createTestApp, signUp, type TestApp } from '../helpers/app.ts'

for (const size of ['0', '10000']) {
  describe(`verified-token cache of ${size}`, () => {
    let t: TestApp
    before(async () => { t = await createTestApp({ env: { TESSERA_ACCESS_TOKEN_CACHE_SIZE: size } }) })
    after(async () => { await t.close() })

    it('accepts a valid token on every use and refuses it after logout either way', async () => {
      const user = await signUp(t.app)
      for (let i = 0; i < 3; i++) assert.equal((await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(user.access_token) })).statusCode, 200)
      // The cache never answers for revocation: the session check runs on every request.
      await t.app.inject({ method: 'POST', url: '/v1/auth/logout', headers: bearer(user.access_token) })
      for (let i = 0; i < 2; i++) assert.equal((await t.app.inject({ method: 'POST', url: '/v1/auth/logout', headers: bearer(user.access_token) })).statusCode, 401)
    })

    it('refuses a token whose signature was altered even after the genuine one was cached', async () => {
      const user = await signUp(t.app)
      await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(user.access_token) })
      const forged = user.access_token.slice(0, -4) + (user.access_token.endsWith('AAAA') ? 'BBBB' : 'AAAA')
      assert.equal((await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(forged) })).statusCode, 401)
    })
  })
}
