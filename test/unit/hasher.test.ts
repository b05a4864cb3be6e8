import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { hash } from '@node-rs/argon2'
import { AppError } from '../../src/errors.ts'
import { createPasswordHasher } from '../../src/passwords/passwords.hasher.ts'

const production = { memoryCost: 19_456, timeCost: 2, parallelism: 1 }

describe('password hasher', () => {
  it('produces argon2id PHC strings with the SECURITY.md parameters and a 16-byte salt', async () => {
    const hasher = createPasswordHasher({ argon2: production, concurrency: 2, queueLimit: 10 })
    const phc = await hasher.hash('correct horse battery staple')
    assert.match(phc, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$/)
    assert.notEqual(await hasher.hash('correct horse battery staple'), phc, 'salted')
    assert.deepEqual(await hasher.verify(phc, 'correct horse battery staple'), { ok: true, needsRehash: false })
    assert.deepEqual(await hasher.verify(phc, 'correct horse battery stapl'), { ok: false, needsRehash: false })
  })

  it('asks for a rehash when the stored parameters differ from the current ones', async () => {
    const old = await hash('pw-pw-pw-pw-pw-pw', { memoryCost: 1024, timeCost: 1, parallelism: 1, algorithm: 2 })
    const hasher = createPasswordHasher({ argon2: production, concurrency: 1, queueLimit: 10 })
    assert.deepEqual(await hasher.verify(old, 'pw-pw-pw-pw-pw-pw'), { ok: true, needsRehash: true })
  })

  it('refuses stored hashes whose parameters exceed the ceilings, without computing them', async () => {
    const forged = '$argon2id$v=19$m=4194304,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$' + 'A'.repeat(43)
    const hasher = createPasswordHasher({ argon2: { memoryCost: 1024, timeCost: 1, parallelism: 1 }, concurrency: 1, queueLimit: 10 })
    assert.deepEqual(await hasher.verify(forged, 'anything'), { ok: false, needsRehash: false })
    assert.deepEqual(await hasher.verify('not a phc string', 'anything'), { ok: false, needsRehash: false })
    assert.deepEqual(await hasher.verify('$argon2i$v=19$m=1024,t=1,p=1$c29tZXNhbHQ$' + 'A'.repeat(43), 'x'), { ok: false, needsRehash: false })
  })

  it('sheds work with `overloaded` once the wait queue is full, and recovers', async () => {
    const hasher = createPasswordHasher({ argon2: production, concurrency: 1, queueLimit: 2 })
    const results = await Promise.allSettled(Array.from({ length: 6 }, () => hasher.hash('correct horse battery staple')))
    const rejected = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 3, 'one running + two queued')
    assert.equal(rejected.length, 3)
    for (const r of rejected) {
      const reason: unknown = r.reason
      assert.ok(reason instanceof AppError)
      assert.equal(reason.code, 'overloaded')
      assert.equal(reason.retryAfterSeconds, 1)
    }
    await hasher.hash('correct horse battery staple')
    assert.deepEqual(hasher.stats(), { active: 0, queued: 0 })
  })
})
