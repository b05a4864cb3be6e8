/**
 * The operator commands of the `tessera` CLI, run as real processes against a real database, and their
 * effect seen by a running server over HTTP.
 */
import assert from 'node:assert/strict'

import { after, before, describe, it } from 'node:test'
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts'
import { processEnv, runCli, type ServerProcess, startServer } from '../helpers/process.ts'

describe('tessera CLI: clients and keys', () => {
  let db: TestDatabase
  let server: ServerProcess
  let env: Record<string, string>

  before(async () => {
    db = await createTestDatabase()
    env = processEnv(db.url, {
      TESSERA_KEY_RELOAD_SECONDS: '1',
      TESSERA_JWKS_MAX_AGE_SECONDS: '10',
    })
    server = await startServer(env)
  })
  after(async () => {
    await server.stop()
    await db.drop()
  })

  it('creates a service client whose secret works at the token endpoint, once', async () => {
    const created = await runCli(['clients', 'create', '--id', 'reports', '--name', 'Reports', '--scope', 'reports:read', '--audience', 'https://reports.internal'], env)
    assert.equal(created.code, 0, created.stderr)
    const client = JSON.parse(created.stdout) as { client_id: string; client_secret: string; scopes: string[] }
    assert.equal(client.client_id, 'reports')
    assert.match(client.client_secret, /^tcs_[A-Za-z0-9_-]{43}$/)
    assert.match(created.stderr, /shown once/)
    const res = await fetch(`${server.baseUrl}/oauth/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`reports:${client.client_secret}`).toString('base64')}` },
      body: 'grant_type=client_credentials',
    })
    assert.equal(res.status, 200)
    assert.equal(((await res.json()) as { scope: string }).scope, 'reports:read')
    const again = await runCli(['clients', 'create', '--id', 'reports', '--name', 'Again'], env)
    assert.notEqual(again.code, 0)
    assert.match(again.stderr, /already exists/)
    const listed = await runCli(['clients', 'list'], env)
    assert.ok(!listed.stdout.includes(client.client_secret), 'the secret is never shown again')
    assert.equal((JSON.parse(listed.stdout) as unknown[]).length, 1)
  })

  it('rotates and revokes keys; the running server picks the changes up without a restart', async () => {
    const jwks = async () => ((await (await fetch(`${server.baseUrl}/.well-known/jwks.json`)).json()) as { keys: Array<{ kid: string }> }).keys.map((k) => k.kid)
    const before = await jwks()
    assert.equal(before.length, 1)
    const rotated = await runCli(['keys', 'rotate'], env)
    assert.equal(rotated.code, 0, rotated.stderr)
    const { kid } = JSON.parse(rotated.stdout) as { kid: string }
    let kids = before
    for (let i = 0; i < 60 && !kids.includes(kid); i++) { await new Promise((r) => setTimeout(r, 100)); kids = await jwks() }
    assert.deepEqual(kids.sort(), [...before, kid].sort(), 'the new key is published by the running server')
    const revoked = await runCli(['keys', 'revoke', kid], env)
    assert.equal(revoked.code, 0, revoked.stderr)
    for (let i = 0; i < 60 && kids.includes(kid); i++) { await new Promise((r) => setTimeout(r, 100)); kids = await jwks() }
    assert.ok(!kids.includes(kid))
    const states = JSON.parse((await runCli(['keys', 'list'], env)).stdout) as Array<{ kid: string; state: string }>
    assert.equal(states.find((k) => k.kid === kid)?.state, 'revoked')
    const unknown = await runCli(['keys', 'revoke', 'no-such-kid'], env)
    assert.equal(unknown.code, 64)
  })

  it('answers an unknown command with usage and exit status 64', async () => {
    const res = await runCli(['frobnicate'], env)
    assert.equal(res.code, 64)
    assert.match(res.stderr, /Usage: tessera/)
  })
})
