import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import type pg from 'pg'
import { createTestApp, login, registerVerified, type TestApp, uniqueEmail } from '../helpers/app.ts'
import { createTestDatabase, type TestDatabase, testPool } from '../helpers/db.ts'

describe('rehash on login when the hashing parameters change', () => {
  let db: TestDatabase
  let sql: pg.Pool
  let old: TestApp
  let current: TestApp

  before(async () => {
    db = await createTestDatabase()
    sql = testPool(db.url, 1)
    const kek = randomBytes(32).toString('base64')
    old = await createTestApp({ db, env: { TESSERA_KEY_ENCRYPTION_KEY: kek, TESSERA_ARGON2_MEMORY_KIB: '1024', TESSERA_ARGON2_TIME_COST: '1' } })
    current = await createTestApp({ db, env: { TESSERA_KEY_ENCRYPTION_KEY: kek, TESSERA_ARGON2_MEMORY_KIB: '2048', TESSERA_ARGON2_TIME_COST: '2' } })
  })
  after(async () => {
    await Promise.all([old.close(), current.close(), sql.end()])
    await db.drop()
  })

  const storedHash = async (email: string) => (await sql.query<{ password_hash: string }>('SELECT password_hash FROM accounts WHERE email = $1', [email])).rows[0]?.password_hash ?? ''

  it('upgrades the stored hash on the next successful login, and only then', async () => {
    const email = uniqueEmail()
    await registerVerified(old.app, email)
    assert.match(await storedHash(email), /\$m=1024,t=1,p=1\$/)
    const failed = await current.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email, password: 'not the password, but long' } })
    assert.equal(failed.statusCode, 401)
    assert.match(await storedHash(email), /\$m=1024,t=1,p=1\$/, 'a failed login changes nothing')
    await login(current.app, email)
    assert.match(await storedHash(email), /^\$argon2id\$v=19\$m=2048,t=2,p=1\$/)
    await login(current.app, email) // still the same password
  })
})
