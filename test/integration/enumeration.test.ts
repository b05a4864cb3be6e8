/**
 * No user enumeration: the answers for unknown, known-with-wrong-password and disabled accounts are
 * byte-identical (but for the request id), and each costs the same work — exactly one argon2id
 * verification — so the timing class is the same too. (Timing itself is measured by `npm run bench`,
 * never asserted in tests.)
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { LightMyRequestResponse } from 'fastify'
import type pg from 'pg'
import { testPool } from '../helpers/db.ts'
import { createPasswordHasher, type PasswordHasher } from '../../src/passwords/passwords.hasher.ts'
import { createTestApp, register, uniqueEmail, VALID_PASSWORD, type TestApp } from '../helpers/app.ts'

function countingHasher(inner: PasswordHasher) {
  const calls = { hash: 0, verify: 0 }
  const hasher: PasswordHasher = {
    hash: (p) => { calls.hash++; return inner.hash(p) },
    verify: (h, p) => { calls.verify++; return inner.verify(h, p) },
    verifyDummy: (p) => { calls.verify++; return inner.verifyDummy(p) },
    stats: inner.stats,
  }
  return { hasher, calls, reset: () => { calls.hash = 0; calls.verify = 0 } }
}

describe('enumeration resistance', () => {
  const counting = countingHasher(createPasswordHasher({ argon2: { memoryCost: 1024, timeCost: 1, parallelism: 1 }, concurrency: 2, queueLimit: 100 }))
  let t: TestApp
  let sql: pg.Pool

  before(async () => {
    t = await createTestApp({ hasher: counting.hasher })
    sql = testPool(t.db.url, 1)
  })
  after(async () => {
    await sql.end()
    await t.close()
  })

  const comparable = (res: LightMyRequestResponse) => ({
    status: res.statusCode,
    body: { ...res.json<Record<string, unknown>>(), request_id: null },
    headers: Object.fromEntries(Object.entries(res.headers).filter(([k]) => !['x-request-id', 'date', 'content-length'].includes(k))),
    length: res.body.length - (res.json<{ request_id?: string }>().request_id?.length ?? 0),
  })

  async function loginAttempt(email: string, password: string) {
    counting.reset()
    const res = await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email, password } })
    return { res: comparable(res), verifications: counting.calls.verify }
  }

  it('answers unknown, wrong-password and disabled accounts identically, after one verification each', async () => {
    const known = uniqueEmail('known')
    const disabled = uniqueEmail('disabled')
    await register(t.app, known)
    await register(t.app, disabled)
    await sql.query("UPDATE accounts SET status = 'disabled' WHERE email = $1", [disabled])

    const unknownAttempt = await loginAttempt(uniqueEmail('unknown'), 'a wrong password, long enough')
    const wrongAttempt = await loginAttempt(known, 'a wrong password, long enough')
    const disabledRightPassword = await loginAttempt(disabled, VALID_PASSWORD)
    const malformedEmail = await loginAttempt('not-an-email', 'a wrong password, long enough')

    for (const attempt of [wrongAttempt, disabledRightPassword, malformedEmail]) {
      assert.deepEqual(attempt.res, unknownAttempt.res)
      assert.equal(attempt.verifications, 1)
    }
    assert.equal(unknownAttempt.verifications, 1)
    assert.equal(unknownAttempt.res.status, 401)
  })

  it('registers a new and a taken address with the same answer after one hash each', async () => {
    const email = uniqueEmail()
    counting.reset()
    const fresh = await register(t.app, email)
    const freshHashes = counting.calls.hash
    counting.reset()
    const taken = await register(t.app, email.toUpperCase())
    assert.equal(counting.calls.hash, freshHashes)
    assert.equal(freshHashes, 1)
    assert.deepEqual(comparable(taken), comparable(fresh))
  })
})
