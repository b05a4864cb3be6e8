import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { describe, it } from 'node:test'
import { ConfigError, loadConfig } from '../../src/config.ts'
import { renderEnvExample, renderReference } from '../../scripts/gen-config-doc.ts'

describe('loadConfig', () => {
  it('has safe defaults for an embedded single node', () => {
    const c = loadConfig({})
    assert.equal(c.http.port, 8080)
    assert.equal(c.database.url, undefined)
    assert.equal(c.jwt.algorithm, 'EdDSA')
    assert.equal(c.jwt.accessTokenTtlSeconds, 600)
    assert.ok(c.jwt.leewaySeconds <= 60)
    assert.equal(c.sessions.idleTtlSeconds, 14 * 86_400)
    assert.equal(c.sessions.absoluteTtlSeconds, 90 * 86_400)
    assert.equal(c.sessions.refreshGraceSeconds, 10)
    assert.equal(c.passwords.minLength, 15)
    assert.deepEqual(c.passwords.argon2, { memoryCost: 19_456, timeCost: 2, parallelism: 1 })
    assert.equal(c.http.bodyLimit, 65_536)
  })

  it('converts types and derives issuer and audience from the public URL', () => {
    const c = loadConfig({ PORT: '9000', TESSERA_PUBLIC_URL: 'https://auth.example.com/', TESSERA_MIGRATE_ON_START: 'false' })
    assert.equal(c.http.port, 9000)
    assert.equal(c.jwt.issuer, 'https://auth.example.com')
    assert.equal(c.jwt.audience, 'https://auth.example.com')
    assert.equal(c.database.migrateOnStart, false)
  })

  it('reports every invalid key at once', () => {
    try {
      loadConfig({ PORT: 'eighty', TESSERA_PASSWORD_MIN_LENGTH: '4', TESSERA_JWT_ALGORITHM: 'HS256', DATABASE_URL: 'postgres://u:hunter2@db/x' })
      assert.fail('expected a ConfigError')
    } catch (err) {
      assert.ok(err instanceof ConfigError)
      const text = err.problems.join('\n')
      assert.match(text, /PORT/)
      assert.match(text, /TESSERA_PASSWORD_MIN_LENGTH/)
      assert.match(text, /TESSERA_JWT_ALGORITHM/)
      assert.match(text, /TESSERA_KEY_ENCRYPTION_KEY is required/)
      assert.match(text, /SMTP_URL is required when DATABASE_URL is set/)
      assert.equal(err.problems.length, 5)
      assert.ok(!err.message.includes('hunter2'), 'secrets are never echoed')
    }
  })

  it('requires a 32-byte base64 key-encryption key with DATABASE_URL', () => {
    assert.throws(() => loadConfig({ DATABASE_URL: 'postgres://db/x', TESSERA_KEY_ENCRYPTION_KEY: 'c2hvcnQ=' }), ConfigError)
    const c = loadConfig({ DATABASE_URL: 'postgres://db/x', TESSERA_KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64'), SMTP_URL: 'smtp://mail.example.com:587' })
    assert.equal(c.database.url, 'postgres://db/x')
  })

  it('refuses production (DATABASE_URL) without a mail transport, and two transports at once', () => {
    const kek = randomBytes(32).toString('base64')
    assert.throws(() => loadConfig({ DATABASE_URL: 'postgres://db/x', TESSERA_KEY_ENCRYPTION_KEY: kek }), /SMTP_URL is required/)
    assert.throws(() => loadConfig({ SMTP_URL: 'smtp://mail.example.com', TESSERA_EMAIL_OUTBOX: 'true' }), /choose one transport/)
    assert.equal(loadConfig({ DATABASE_URL: 'postgres://db/x', TESSERA_KEY_ENCRYPTION_KEY: kek, TESSERA_EMAIL_OUTBOX: 'true' }).email.transport, 'outbox')
    // Embedded mode (no DATABASE_URL, no SMTP_URL): the development outbox.
    assert.equal(loadConfig({}).email.transport, 'outbox')
    const smtp = loadConfig({ SMTP_URL: 'smtps://u:p@mail.example.com:465', TESSERA_PUBLIC_URL: 'https://auth.example.com/' })
    assert.equal(smtp.email.transport, 'smtp')
    assert.equal(smtp.email.smtp.from, 'Tessera <no-reply@auth.example.com>')
    assert.equal(smtp.email.smtp.requireTls, true, 'STARTTLS is required by default')
    assert.throws(() => loadConfig({ SMTP_FROM: 'a@b.c\r\nBcc: x@y.z' }), /SMTP_FROM/)
    assert.throws(() => loadConfig({ TESSERA_EMAIL_RETRY_DELAY_SECONDS: '60', TESSERA_EMAIL_RETRY_DELAY_MAX_SECONDS: '30' }), /RETRY_DELAY_MAX/)
  })

  it('rejects inconsistent lifetimes and lengths', () => {
    assert.throws(() => loadConfig({ TESSERA_REFRESH_IDLE_TTL_SECONDS: '86400', TESSERA_REFRESH_ABSOLUTE_TTL_SECONDS: '3600' }), /ABSOLUTE/)
    assert.throws(() => loadConfig({ TESSERA_JWT_LEEWAY_SECONDS: '120' }), /LEEWAY/)
  })

  it('returns a deeply frozen object', () => {
    const c = loadConfig({})
    assert.ok(Object.isFrozen(c))
    assert.ok(Object.isFrozen(c.passwords.argon2))
    assert.throws(() => { (c.http as { port: number }).port = 1 }, TypeError)
  })

  it('is documented: docs/configuration.md and .env.example match the schema', async () => {
    const root = new URL('../../', import.meta.url)
    assert.equal(await readFile(new URL('docs/configuration.md', root), 'utf8'), renderReference(), 'run `npm run docs:config`')
    assert.equal(await readFile(new URL('.env.example', root), 'utf8'), renderEnvExample(), 'run `npm run docs:config`')
  })
})
