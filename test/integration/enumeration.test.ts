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
import { createTestApp, register, registerVerified, uniqueEmail, VALID_PASSWORD, type TestApp } from '../helpers/app.ts'

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
    // `ratelimit` counts down the caller's own per-address budget: it differs between any two requests,
    // whatever the account (the per-account budgets are never shown).
    headers: Object.fromEntries(Object.entries(res.headers).filter(([k]) => !['x-request-id', 'date', 'content-length', 'ratelimit'].includes(k))),
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

  it('answers password-reset and resend-verification requests identically for unknown, unverified, verified, disabled and throttled addresses', async () => {
    const unverified = uniqueEmail('unverified')
    const verified = uniqueEmail('verified')
    const disabled = uniqueEmail('disabled')
    await register(t.app, unverified)
    await registerVerified(t.app, verified)
    await registerVerified(t.app, disabled)
    await sql.query("UPDATE accounts SET status = 'disabled' WHERE email = $1", [disabled])
    const cases = { unknown: uniqueEmail('nobody'), unverified, verified, disabled, malformed: 'not-an-email' }
    const timings: string[] = []
    for (const url of ['/v1/password-reset', '/v1/email-verification']) {
      const answers: Record<string, ReturnType<typeof comparable>> = {}
      for (const [name, email] of Object.entries(cases)) {
        // Twice: the second request of each address is throttled, and must look the same too.
        for (const round of [1, 2]) {
          const res = await t.app.inject({ method: 'POST', url, payload: { email } })
          answers[`${name} #${round}`] = comparable(res)
        }
      }
      const reference = answers['unknown #1']
      assert.equal(reference?.status, 202)
      for (const [name, answer] of Object.entries(answers)) assert.deepEqual(answer, reference, `${url}: ${name}`)

      // Timing is reported, never asserted: median over 10 requests per case (throttled after the first).
      const medians: string[] = []
      for (const [name, email] of Object.entries(cases)) {
        const samples: number[] = []
        for (let i = 0; i < 10; i++) {
          const started = process.hrtime.bigint()
          await t.app.inject({ method: 'POST', url, payload: { email } })
          samples.push(Number(process.hrtime.bigint() - started) / 1e6)
        }
        samples.sort((a, b) => a - b)
        medians.push(`${name} ${(samples[5] ?? 0).toFixed(2)} ms`)
      }
      timings.push(`${url}: ${medians.join(', ')}`)
    }
    console.log(`# enumeration timing (medians, in-process, floor ${t.config.email.enumerationFloorMs} ms): ${timings.join('; ')}`)
  })
})
