/**
 * The tamper-evident audit log: every security event of a real scenario is chained (HMAC, key from the
 * KEK), the chain verifies, and edits, deletions and forgeries made in SQL are reported at the right
 * row. Also: concurrent appends never fork the chain, retention cuts only the head, and each event is
 * also one structured log line.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { Writable } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import type pg from 'pg'
import { buildApp } from '../../src/app.ts'
import { auditChainKey } from '../../src/audit/audit.chain.ts'
import { insertEvent } from '../../src/audit/audit.repository.ts'
import { expireAuditEvents, startAuditRetention, verifyChain, type ChainReport } from '../../src/audit/audit.service.ts'
import { withTransaction } from '../../src/db/pool.ts'
import { createDeps } from '../../src/deps.ts'
import { createLogger } from '../../src/logger.ts'
import { bearer, createTestApp, login, signUp, testConfig, tokenFromInbox, uniqueEmail, VALID_PASSWORD, type TestApp, type Tokens } from '../helpers/app.ts'
import { FakeClock } from '../helpers/clock.ts'
import { createTestDatabase, testPool } from '../helpers/db.ts'

interface Row {
  id: string
  type: string
  account_id: string | null
  actor: string
  ip: string | null
  user_agent: string | null
  request_id: string | null
  occurred_at: Date
  data: Record<string, unknown>
  prev_hash: Buffer | null
  hash: Buffer | null
}

const ROW_SQL = 'SELECT id::text AS id, type, account_id, actor, host(ip) AS ip, user_agent, request_id, occurred_at, data, prev_hash, hash FROM audit_events'
const DAY_MS = 86_400_000

describe('audit log: hash chain, tamper detection, retention', () => {
  const clock = new FakeClock(new Date())
  let t: TestApp
  let sql: pg.Pool
  let verify: () => Promise<ChainReport>

  before(async () => {
    t = await createTestApp({ clock })
    sql = testPool(t.db.url, 4)
    const key = auditChainKey(t.config.keyEncryptionKey as string)
    verify = () => verifyChain(t.deps.db, key, { batchSize: 7 }) // small batches: the keyset paging is exercised
  })
  after(async () => {
    await sql.end()
    await t.close()
  })

  async function rows(where = 'TRUE', values: unknown[] = []): Promise<Row[]> {
    return (await sql.query<Row>(`${ROW_SQL} WHERE ${where} ORDER BY audit_events.id`, values)).rows
  }
  async function maxId(): Promise<string> {
    return (await sql.query<{ id: string }>('SELECT coalesce(max(id), 0)::text AS id FROM audit_events')).rows[0]?.id ?? '0'
  }
  function assertLinked(all: Row[]): void {
    for (let i = 1; i < all.length; i++) {
      assert.ok(all[i]?.prev_hash?.equals(all[i - 1]?.hash as Buffer), `event ${all[i]?.id} is chained to event ${all[i - 1]?.id}`)
    }
  }

  it('chains every event of a full scenario, each with actor, IP, user agent and request id, and the chain verifies', async () => {
    const start = await maxId()
    const email = uniqueEmail('audit')
    let n = 0
    const ctx = () => ({ remoteAddress: '203.0.113.7', headers: { 'user-agent': 'audit-test/1', 'x-request-id': `audit-scn-${++n}` } })
    const call = async (method: 'POST' | 'DELETE', url: string, payload?: object, auth?: string): Promise<number> => {
      const c = ctx()
      const res = await t.app.inject({ method, url, payload, ...c, headers: { ...c.headers, ...(auth === undefined ? {} : bearer(auth)) } })
      return res.statusCode
    }
    assert.equal(await call('POST', '/v1/accounts', { email, password: VALID_PASSWORD }), 202)
    assert.equal(await call('POST', '/v1/email-verification/confirm', { token: await tokenFromInbox(t.app, email, '/verify-email') }), 204)
    assert.equal(await call('POST', '/v1/auth/login', { email, password: 'not the password at all' }), 401)
    assert.equal(await call('POST', '/v1/auth/login', { email: uniqueEmail('nobody'), password: VALID_PASSWORD }), 401)
    const c = ctx()
    const logged = await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email, password: VALID_PASSWORD }, ...c })
    assert.equal(logged.statusCode, 200)
    const tokens = logged.json<Tokens>()
    const r = ctx()
    const refreshed = await t.app.inject({
      method: 'POST', url: '/oauth/token', ...r,
      headers: { ...r.headers, 'content-type': 'application/x-www-form-urlencoded' },
      payload: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token }).toString(),
    })
    assert.equal(refreshed.statusCode, 200)
    const newPassword = 'another correct horse battery'
    assert.equal(await call('POST', '/v1/me/password', { current_password: VALID_PASSWORD, new_password: newPassword }, tokens.access_token), 204)
    assert.equal(await call('POST', '/v1/password-reset', { email }), 202)
    assert.equal(await call('POST', '/v1/auth/logout', undefined, tokens.access_token), 204)

    const scenario = await rows('id > $1', [start])
    const types = scenario.map((e) => e.type)
    for (const type of ['account.registered', 'email.verified', 'login.failed', 'login.succeeded', 'password.changed', 'password.reset_requested', 'session.logout']) {
      assert.ok(types.includes(type), `a ${type} event was recorded (got ${types.join(', ')})`)
    }
    assert.equal(types.filter((x) => x === 'login.failed').length, 2, 'the wrong password and the unknown account')
    for (const e of scenario) {
      assert.ok(e.actor.length > 0, `event ${e.id} (${e.type}) has an actor`)
      assert.match(e.request_id ?? '', /^audit-scn-\d+$/, `event ${e.id} (${e.type}) carries the request id it was written for`)
      assert.equal(e.ip, '203.0.113.7', `event ${e.id} (${e.type}) has the client's IP`)
      assert.equal(e.user_agent, 'audit-test/1')
      assert.equal(e.hash?.length, 32, `event ${e.id} has a hash`)
    }
    const all = await rows()
    assertLinked(all)
    const report = await verify()
    assert.deepEqual(report.problems, [])
    assert.equal(report.ok, true)
    assert.equal(report.checked, all.length)
    assert.equal(report.firstId, all[0]?.id)
    assert.equal(report.lastId, all.at(-1)?.id)
    assert.equal(report.head, all.at(-1)?.hash?.toString('hex'))
    console.log(`# audit: ${scenario.length} events from a ${n}-request scenario, ${all.length} in the chain, verified`)
  })

  it('refuses to write an event outside a transaction (the chain lock would not be held)', async () => {
    const before = await maxId()
    await assert.rejects(
      insertEvent(t.deps.db, { type: 'test.event', accountId: null, actor: 'system', ip: null, userAgent: null, requestId: null, occurredAt: clock.now() }),
      /transaction client/,
    )
    assert.equal(await maxId(), before, 'nothing was written')
  })

  it('reports an event edited in SQL by its id, and verifies again once the row is restored', async () => {
    const all = await rows()
    const target = all[Math.floor(all.length / 2)] as Row
    await sql.query(`UPDATE audit_events SET data = data || '{"reason":"edited"}' WHERE id = $1`, [target.id])
    const edited = await verify()
    assert.equal(edited.ok, false)
    assert.deepEqual(edited.problems, [{ id: target.id, problem: 'hash mismatch' }], 'only the edited row is reported: the next one chains to its stored hash')

    // A change PostgreSQL would normalise away still counts when it changes the value: an IP's netmask.
    await sql.query('UPDATE audit_events SET data = $2 WHERE id = $1', [target.id, target.data])
    assert.equal((await verify()).ok, true, 'restored')
    const withIp = all.find((e) => e.ip !== null) as Row
    await sql.query(`UPDATE audit_events SET ip = '203.0.113.0/24' WHERE id = $1`, [withIp.id])
    assert.deepEqual((await verify()).problems, [{ id: withIp.id, problem: 'hash mismatch' }])
    await sql.query('UPDATE audit_events SET ip = $2 WHERE id = $1', [withIp.id, withIp.ip])

    // Editing the time by a microsecond (below JavaScript's Date resolution) is seen too.
    await sql.query(`UPDATE audit_events SET occurred_at = occurred_at + interval '1 microsecond' WHERE id = $1`, [target.id])
    assert.deepEqual((await verify()).problems, [{ id: target.id, problem: 'hash mismatch' }])
    await sql.query('UPDATE audit_events SET occurred_at = $2 WHERE id = $1', [target.id, target.occurred_at])

    // Replacing the hash as well (without the key, any value) breaks the link of the next row instead.
    const next = all[all.indexOf(target) + 1] as Row
    await sql.query(`UPDATE audit_events SET hash = sha256(hash) WHERE id = $1`, [target.id])
    assert.deepEqual((await verify()).problems, [
      { id: target.id, problem: 'hash mismatch' },
      { id: next.id, problem: 'chain broken (previous row missing or changed)' },
    ])
    await sql.query('UPDATE audit_events SET hash = $2 WHERE id = $1', [target.id, target.hash])
    const restored = await verify()
    assert.deepEqual(restored.problems, [])
    assert.equal(restored.ok, true)
  })

  it('reports a row deleted from the middle as a break at the next id, and verifies again once it is put back', async () => {
    const all = await rows()
    const i = Math.floor(all.length / 3)
    const victim = all[i] as Row
    const next = all[i + 1] as Row
    const { rows: [copy] } = await sql.query<Record<string, unknown>>('SELECT * FROM audit_events WHERE id = $1', [victim.id])
    await sql.query('DELETE FROM audit_events WHERE id = $1', [victim.id])
    const report = await verify()
    assert.equal(report.ok, false)
    assert.deepEqual(report.problems, [{ id: next.id, problem: 'chain broken (previous row missing or changed)' }])
    assert.equal(report.checked, all.length - 1)

    const c = copy as Record<string, unknown>
    await sql.query(
      `INSERT INTO audit_events (id, occurred_at, type, account_id, actor, ip, user_agent, request_id, data, prev_hash, hash)
       OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
      [c.id, c.occurred_at, c.type, c.account_id, c.actor, c.ip, c.user_agent, c.request_id, c.data, c.prev_hash, c.hash],
    )
    assert.equal((await verify()).ok, true, 'the very same row put back closes the chain again')
  })

  it('detects events inserted in SQL without the key, with no hash, a made-up hash or a plain SHA-256 chain', async () => {
    const last = (await rows()).at(-1) as Row
    const forge = async (hash: string): Promise<string> => {
      const { rows: [r] } = await sql.query<{ id: string }>(
        `INSERT INTO audit_events (occurred_at, type, account_id, actor, data, prev_hash, hash)
         VALUES (now(), 'password.changed', $1, $2, '{}', $3, ${hash}) RETURNING id::text AS id`,
        [last.account_id, last.actor, last.hash],
      )
      return (r as { id: string }).id
    }
    const cases: Array<[string, string]> = [
      ['NULL', 'unchained row after chained rows'],
      [`'\\x${randomBytes(32).toString('hex')}'::bytea`, 'hash mismatch'],
      [`sha256($3::bytea || convert_to('password.changed' || $2::text, 'UTF8'))`, 'hash mismatch'],
    ]
    for (const [hash, problem] of cases) {
      const id = await forge(hash)
      const report = await verify()
      assert.equal(report.ok, false, hash)
      assert.deepEqual(report.problems, [{ id, problem }], hash)
      await sql.query('DELETE FROM audit_events WHERE id = $1', [id])
    }
    assert.equal((await verify()).ok, true, 'the forged tail rows removed, nothing chains to them')
  })

  it('keeps one unforked chain under 30 parallel logins', async () => {
    const accounts = await Promise.all(Array.from({ length: 6 }, () => signUp(t.app)))
    const start = await maxId()
    const results = await Promise.allSettled(Array.from({ length: 30 }, (_, i) => login(t.app, (accounts[i % accounts.length] as { email: string }).email)))
    assert.deepEqual(results.filter((r) => r.status === 'rejected'), [])
    const added = await rows('id > $1', [start])
    assert.equal(added.filter((e) => e.type === 'login.succeeded').length, 30)
    const all = await rows()
    const prevs = all.map((e) => e.prev_hash?.toString('hex') ?? 'none')
    assert.equal(new Set(prevs).size, prevs.length, 'no two events share a predecessor')
    assertLinked(all)
    const report = await verify()
    assert.deepEqual(report.problems, [])
    assert.equal(report.checked, all.length)
  })

  it('never deadlocks: 40 concurrent logins to one account, half with a wrong password, lock-taking and all (5 rounds)', async () => {
    // Regression: an audit append holds the chain lock until commit; a transaction that took another
    // lock after it (the account row, an email lock) deadlocked against one taking them the other way.
    const user = await signUp(t.app)
    const codes: Record<number, number> = {}
    for (let round = 0; round < 5; round++) {
      const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => t.app.inject({
        method: 'POST', url: '/v1/auth/login', payload: { email: user.email, password: i % 2 === 0 ? VALID_PASSWORD : 'a wrong password, long enough' },
      })))
      for (const a of answers) codes[a.statusCode] = (codes[a.statusCode] ?? 0) + 1
      await t.deps.db.query('UPDATE accounts SET failed_login_attempts = 0, locked_until = NULL WHERE email = $1', [user.email])
    }
    // Failures reach the lock threshold inside a round: some right passwords then meet a lock (401).
    assert.deepEqual(Object.keys(codes).sort(), ['200', '401'], JSON.stringify(codes))
    assert.deepEqual((await verify()).problems, [])
  })

  it('retention deletes only the old head of the chain, records it, and what remains verifies', async () => {
    const old = await rows()
    // An instance with a slow clock writes an old event after newer ones: it must not open a hole.
    clock.advance(2 * DAY_MS)
    await signUp(t.app)
    const firstNew = (await rows('occurred_at >= $1', [new Date(clock.now().getTime() - 1000)]))[0] as Row
    await withTransaction(t.deps.db, (tx) => insertEvent(tx, {
      type: 'test.late_clock', accountId: null, actor: 'system', ip: null, userAgent: null, requestId: null, occurredAt: old[0]?.occurred_at as Date,
    }))
    const lateId = await maxId()
    await signUp(t.app)

    const warnings: object[] = []
    const stop = startAuditRetention({ db: t.deps.db, clock, retentionDays: 1, logger: { info: () => undefined, warn: (o) => { warnings.push(o) } }, initialDelayMs: 0, intervalMs: 3_600_000 })
    let retention: Row | undefined
    for (let i = 0; i < 200 && retention === undefined; i++) {
      await new Promise((r) => setTimeout(r, 25))
      retention = (await rows(`type = 'audit.retention'`))[0]
    }
    await stop()
    assert.deepEqual(warnings, [])
    assert.ok(retention, 'the retention run recorded itself in the chain')
    assert.deepEqual(retention.data, { deleted: old.length, first_kept_id: firstNew.id, cutoff: new Date(clock.now().getTime() - DAY_MS).toISOString(), retention_days: 1 })
    const left = await rows()
    assert.equal(left[0]?.id, firstNew.id, 'everything before the first recent event is gone')
    assert.ok(left.some((e) => e.id === lateId), 'the old event written after recent ones is kept')
    assert.equal((await sql.query('SELECT 1 FROM audit_events WHERE id < $1', [firstNew.id])).rowCount, 0)
    const report = await verify()
    assert.deepEqual(report.problems, [])
    assert.equal(report.firstId, firstNew.id, 'the first kept event starts the chain from its own prev_hash')
    assert.equal(report.checked, left.length)

    // Nothing more is old enough: a second run deletes nothing and records nothing.
    assert.deepEqual(await expireAuditEvents({ db: t.deps.db, clock, retentionDays: 1 }), { deleted: 0, firstKeptId: firstNew.id })
    assert.deepEqual(await expireAuditEvents({ db: t.deps.db, clock, retentionDays: 0 }), { deleted: 0, firstKeptId: null }, '0 keeps events forever')
    assert.equal((await rows(`type = 'audit.retention'`)).length, 1)

    // Deleting more of the head in SQL than retention did is reported against its record.
    await sql.query('DELETE FROM audit_events WHERE id = $1', [firstNew.id])
    const cut = await verify()
    assert.deepEqual(cut.problems, [{ id: left[1]?.id, problem: 'head missing (rows deleted beyond the last retention run)' }])
  })
})

describe('audit log: every event is also a structured log line', () => {
  it('writes one "audit event" line per row, with its fields and hash, and no secret', async () => {
    const db = await createTestDatabase()
    const lines: Array<Record<string, unknown>> = []
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString('utf8').split('\n')) if (line.trim() !== '') lines.push(JSON.parse(line) as Record<string, unknown>)
        done()
      },
    })
    // Load shedding is not this test's subject: the first request comes right after start-up, whose event
    // loop lag on a busy 2-core runner can exceed the default threshold.
    const deps = await createDeps(testConfig(db.url, { TESSERA_MAX_EVENT_LOOP_DELAY_MS: '0' }), { logger: createLogger('info', sink) })
    await deps.start()
    const app = await buildApp(deps)
    const sql = testPool(db.url)
    try {
      const email = uniqueEmail('logged')
      const post = async (url: string, payload: object, status: number) => {
        const res = await app.inject({ method: 'POST', url, payload })
        assert.equal(res.statusCode, status, res.body)
      }
      await post('/v1/auth/login', { email, password: VALID_PASSWORD }, 401)
      await post('/v1/accounts', { email, password: VALID_PASSWORD }, 202)
      await post('/v1/auth/login', { email, password: 'not the password at all' }, 401)
      const stored = (await sql.query<Row>(`${ROW_SQL} ORDER BY audit_events.id`)).rows
      const logged = lines.filter((l) => l.msg === 'audit event').map((l) => l.audit as Record<string, unknown>)
      assert.ok(stored.length >= 3)
      assert.deepEqual(logged.map((l) => l.id), stored.map((r) => r.id), 'one line per event, in chain order')
      for (const [i, r] of stored.entries()) {
        const l = logged[i] as Record<string, unknown>
        assert.equal(l.type, r.type)
        assert.equal(l.actor, r.actor)
        assert.equal(l.account_id, r.account_id)
        assert.equal(l.request_id, r.request_id)
        assert.equal(l.hash, r.hash?.toString('hex'), 'the log keeps a copy of each hash, so of the head')
        assert.deepEqual(l.data, r.data)
      }
      const text = JSON.stringify(lines)
      for (const secret of [VALID_PASSWORD, 'not the password at all']) assert.ok(!text.includes(secret), 'no password in the log')
    } finally {
      await sql.end()
      await app.close()
      await deps.close()
      await db.drop()
    }
  })
})
