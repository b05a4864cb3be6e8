/**
 * `tessera audit verify` as a real process: it verifies the chain that a running server and other CLI
 * commands wrote, exits 0 then, and exits 1 with the tampered row named once the table is edited in SQL
 * or when it is given another KEK.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import type pg from 'pg'
import { createTestDatabase, testPool, type TestDatabase } from '../helpers/db.ts'
import { processEnv, runCli, type ServerProcess, startServer } from '../helpers/process.ts'

interface Report {
  ok: boolean
  checked: number
  firstId: string | null
  lastId: string | null
  head: string | null
  problems: Array<{ id: string; problem: string }>
}

describe('tessera audit verify', () => {
  let db: TestDatabase
  let sql: pg.Pool
  let server: ServerProcess
  let env: Record<string, string>

  before(async () => {
    db = await createTestDatabase()
    sql = testPool(db.url)
    env = processEnv(db.url)
    server = await startServer(env)
  })
  after(async () => {
    await server.kill()
    await sql.end()
    await db.drop()
  })

  it('exits 0 on the chain written by the server and by CLI commands, and prints its head', async () => {
    const email = `audit.${randomBytes(4).toString('hex')}@example.com`
    const post = (path: string, body: object) => fetch(`${server.baseUrl}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    assert.equal((await post('/v1/accounts', { email, password: 'correct horse battery staple' })).status, 202)
    assert.equal((await post('/v1/auth/login', { email, password: 'not the right password' })).status, 401)
    const created = await runCli(['clients', 'create', '--id', 'reports', '--name', 'Reports'], env)
    assert.equal(created.code, 0, created.stderr)
    const rotated = await runCli(['keys', 'rotate'], env)
    assert.equal(rotated.code, 0, rotated.stderr)

    const res = await runCli(['audit', 'verify'], env)
    assert.equal(res.code, 0, res.stderr)
    const report = JSON.parse(res.stdout) as Report
    const { rows } = await sql.query<{ id: string; type: string; hash: Buffer }>('SELECT id::text AS id, type, hash FROM audit_events ORDER BY audit_events.id')
    assert.ok(rows.some((r) => r.type === 'client.created') && rows.some((r) => r.type === 'key.rotated'), 'the CLI commands wrote their events (chained)')
    assert.ok(rows.some((r) => r.type === 'account.registered'))
    assert.equal(report.ok, true)
    assert.deepEqual(report.problems, [])
    assert.equal(report.checked, rows.length)
    assert.equal(report.lastId, rows.at(-1)?.id)
    assert.equal(report.head, rows.at(-1)?.hash.toString('hex'))
    // The server also wrote each event to its log, hash included: a copy of the head outside the table.
    const logged = server.logLines().filter((l) => l.msg === 'audit event').map((l) => (l.audit as { hash: string }).hash)
    assert.ok(logged.includes(rows.find((r) => r.type === 'account.registered')?.hash.toString('hex') as string))
  })

  it('exits 1 and names the row once an event is edited in SQL, and with another key', async () => {
    const { rows: [target] } = await sql.query<{ id: string }>(`SELECT id::text AS id FROM audit_events WHERE type = 'login.failed' LIMIT 1`)
    await sql.query(`UPDATE audit_events SET data = '{"reason":"nothing happened"}' WHERE id = $1`, [target?.id])
    const res = await runCli(['audit', 'verify'], env)
    assert.equal(res.code, 1, res.stderr)
    const report = JSON.parse(res.stdout) as Report
    assert.equal(report.ok, false)
    assert.deepEqual(report.problems, [{ id: target?.id, problem: 'hash mismatch' }])
    assert.match(res.stderr, new RegExp(`audit event ${target?.id}: hash mismatch`))

    const otherKey = await runCli(['audit', 'verify'], { ...env, TESSERA_KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64') })
    assert.equal(otherKey.code, 1)
    const all = JSON.parse(otherKey.stdout) as Report
    assert.equal(all.problems.length, all.checked, 'without the right key no row verifies')
  })

  it('answers an unknown audit action with usage and exit status 64', async () => {
    const res = await runCli(['audit', 'frobnicate'], env)
    assert.equal(res.code, 64)
    assert.match(res.stderr, /audit verify/)
  })
})
