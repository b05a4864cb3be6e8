import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { createTestApp, uniqueEmail, VALID_PASSWORD, type TestApp } from '../helpers/app.ts'

describe('overload: hashing admission control', () => {
  let t: TestApp
  before(async () => {
    // Production hashing cost, one hash at a time, two may wait.
    t = await createTestApp({ env: { TESSERA_ARGON2_MEMORY_KIB: '19456', TESSERA_ARGON2_TIME_COST: '2', TESSERA_HASH_CONCURRENCY: '1', TESSERA_HASH_QUEUE_LIMIT: '2' } })
  })
  after(async () => { await t.close() })

  it('sheds the excess at once with 503 overloaded and Retry-After, keeps the rest, and stays healthy', async () => {
    const burst = Array.from({ length: 12 }, () => t.app.inject({ method: 'POST', url: '/v1/accounts', payload: { email: uniqueEmail('burst'), password: VALID_PASSWORD } }))
    const health = await t.app.inject({ method: 'GET', url: '/livez' })
    const results = await Promise.all(burst)
    const accepted = results.filter((r) => r.statusCode === 202)
    const shed = results.filter((r) => r.statusCode === 503)
    assert.equal(accepted.length + shed.length, results.length, 'nothing but 202 or 503')
    assert.equal(accepted.length, 3, 'one hashing and two waiting')
    for (const r of shed) {
      assert.equal(r.json<{ code: string }>().code, 'overloaded')
      assert.equal(r.headers['retry-after'], '1')
    }
    assert.equal(health.statusCode, 200)
    const later = await t.app.inject({ method: 'POST', url: '/v1/accounts', payload: { email: uniqueEmail('later'), password: VALID_PASSWORD } })
    assert.equal(later.statusCode, 202, 'capacity is back once the burst is through')
  })
})
