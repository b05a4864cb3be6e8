/**
 * The profiling endpoints of the management listener, on real apps and a real database: absent without
 * TESSERA_PROFILING, admin-only with it (401, 403, revoked tokens), strict `seconds`, one operation at a
 * time, and profiles that parse as the formats Chrome DevTools loads. Plus what the log says, and that a
 * client that goes away ends its profile.
 */
import assert from 'node:assert/strict'
import { readdir } from 'node:fs/promises'
import { request as httpRequest } from 'node:http'
import { tmpdir } from 'node:os'
import { Writable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { after, before, describe, it } from 'node:test'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { createLogger } from '../../src/logger.ts'
import { buildManagementApp } from '../../src/observability/management.ts'
import { profilingInProgress } from '../../src/observability/profiling.ts'
import { bearer, createTestApp, login, signUp, type TestApp, type Tokens } from '../helpers/app.ts'

interface Person extends Tokens { email: string; id: string }
interface LogLine { msg: string; level: string; account_id?: string; profile?: string; seconds?: number; outcome?: string; running?: string }

const PATHS = ['/debug/pprof/profile', '/debug/pprof/heap', '/debug/pprof/heapsnapshot'] as const

function subOf(token: string): string {
  return (JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { sub: string }).sub
}

/** Polls until `condition` holds; the test's timeout bounds the wait. */
async function until(condition: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await condition())) await sleep(10)
}

async function snapshotDirs(): Promise<string[]> {
  return (await readdir(tmpdir())).filter((name) => name.startsWith('tessera-heapsnapshot-'))
}

interface HeapNode { callFrame: { functionName: string; url: string }; selfSize: number; id: number; children: HeapNode[] }

function functionNames(node: HeapNode, into = new Set<string>()): Set<string> {
  into.add(node.callFrame.functionName)
  for (const child of node.children) functionNames(child, into)
  return into
}

function allocateDuringHeapProfile(): Array<{ index: number; text: string }> {
  const kept: Array<{ index: number; text: string }> = []
  for (let i = 0; i < 100_000; i++) kept.push({ index: i, text: `retained object number ${i}` })
  return kept
}

async function makeAdmin(t: TestApp): Promise<Person> {
  const p = await signUp(t.app)
  await t.deps.db.query("UPDATE accounts SET roles = '{admin}' WHERE email = $1", [p.email])
  return { ...p, ...(await login(t.app, p.email)), id: subOf(p.access_token) }
}

describe('profiling endpoints', () => {
  let on: TestApp
  let off: TestApp
  let management: FastifyInstance
  let managementOff: FastifyInstance
  let admin: Person
  let user: Person
  const logLines: string[] = []
  let refusalsTried = 0
  let badInputs = 0

  before(async () => {
    on = await createTestApp({ env: { TESSERA_PROFILING: 'true' } })
    off = await createTestApp()
    // The management app logs through deps.logger: an info-level logger that records its lines.
    const sink = new Writable({ write(chunk: Buffer, _encoding, done) { logLines.push(...chunk.toString('utf8').split('\n').filter(Boolean)); done() } })
    management = await buildManagementApp({ ...on.deps, logger: createLogger('info', sink) })
    managementOff = await buildManagementApp(off.deps)
    admin = await makeAdmin(on)
    const u = await signUp(on.app)
    user = { ...u, id: subOf(u.access_token) }
  })
  after(async () => {
    console.log(`# profiling: refusals tried: ${refusalsTried}, bad inputs tried: ${badInputs}`)
    await management.close()
    await managementOff.close()
    await on.close()
    await off.close()
  })

  const get = (app: FastifyInstance, url: string, token?: string): Promise<LightMyRequestResponse> =>
    app.inject({ method: 'GET', url, headers: token === undefined ? {} : bearer(token) })
  const logs = (): LogLine[] => logLines.map((line) => JSON.parse(line) as LogLine)
  const problem = (res: LightMyRequestResponse, status: number, code: string, what: string) => {
    assert.equal(res.statusCode, status, `${what}: ${res.body}`)
    assert.match(String(res.headers['content-type']), /^application\/problem\+json/, what)
    assert.equal(res.json<{ code: string }>().code, code, what)
  }

  it('answers 404 on every profiling path when TESSERA_PROFILING is off, even to an administrator', async () => {
    assert.equal(off.config.management.profiling, false, 'profiling is off by default')
    const offAdmin = await makeAdmin(off)
    for (const path of PATHS) {
      for (const url of [path, `${path}?seconds=1`]) {
        problem(await get(managementOff, url, offAdmin.access_token), 404, 'not_found', `${url} as an admin`)
        problem(await get(managementOff, url), 404, 'not_found', `${url} anonymously`)
        refusalsTried += 2
      }
    }
    // The listener itself is up: metrics are served, nothing was profiled.
    assert.equal((await get(managementOff, '/metrics')).statusCode, 200)
    assert.equal(profilingInProgress(), undefined)
  })

  it('refuses callers without a valid admin token before looking at the input: 401 without or with a bad token, 403 for a non-admin, 401 once the admin logged out', async () => {
    const revoked = await makeAdmin(on)
    const logout = await on.app.inject({ method: 'POST', url: '/v1/auth/logout', headers: bearer(revoked.access_token) })
    assert.equal(logout.statusCode, 204)
    const linesBefore = logLines.length
    for (const path of PATHS) {
      for (const url of [path, `${path}?seconds=1`, `${path}?seconds=abc`]) {
        const anonymous = await get(management, url)
        problem(anonymous, 401, 'invalid_token', `${url} without a token`)
        assert.equal(anonymous.headers['www-authenticate'], 'Bearer realm="tessera"')
        const garbage = await get(management, url, 'not.a.jwt')
        problem(garbage, 401, 'invalid_token', `${url} with a garbage token`)
        assert.match(String(garbage.headers['www-authenticate']), /error="invalid_token"/)
        problem(await management.inject({ method: 'GET', url, headers: { authorization: `Basic ${admin.access_token}` } }), 401, 'invalid_token', `${url} with a non-bearer scheme`)
        problem(await get(management, url, user.access_token), 403, 'forbidden', `${url} as a non-admin`)
        problem(await get(management, url, revoked.access_token), 401, 'invalid_token', `${url} with a logged-out admin's token`)
        refusalsTried += 5
      }
    }
    // Nothing was profiled for them.
    assert.equal(profilingInProgress(), undefined)
    assert.deepEqual(logLines.slice(linesBefore).filter((l) => l.includes('profiling')), [])
  })

  it('refuses a seconds value that is not a whole number from 1 to 60 (400)', async () => {
    for (const path of ['/debug/pprof/profile', '/debug/pprof/heap']) {
      for (const value of ['0', '61', 'abc', '-1', '1.5', '', '01', '600', '1e1', '%201', '100000000000000000000']) {
        const res = await get(management, `${path}?seconds=${value}`, admin.access_token)
        problem(res, 400, 'validation_failed', `${path}?seconds=${value}`)
        assert.deepEqual(res.json<{ errors: Array<{ pointer: string }> }>().errors.map((e) => e.pointer), ['/querystring/seconds'], `${path}?seconds=${value}`)
        badInputs++
      }
    }
    assert.equal(profilingInProgress(), undefined)
  })

  it('returns a CPU profile that parses as a .cpuprofile, as an attachment, and logs who asked without the token', async () => {
    const linesBefore = logLines.length
    const res = await get(management, '/debug/pprof/profile?seconds=1', admin.access_token)
    assert.equal(res.statusCode, 200, res.body)
    assert.match(String(res.headers['content-type']), /^application\/json/)
    assert.match(String(res.headers['content-disposition']), /^attachment; filename="tessera-[A-Za-z0-9._-]+-\d+-\d{8}T\d{6}Z\.cpuprofile"$/)
    assert.equal(res.headers['cache-control'], 'no-store')
    const profile = res.json<{ nodes: Array<{ id: number; callFrame: { functionName: string; url: string }; children?: number[] }>; startTime: number; endTime: number; samples: number[]; timeDeltas: number[] }>()
    assert.ok(profile.nodes.length > 0)
    assert.equal(profile.nodes[0]?.callFrame.functionName, '(root)')
    assert.ok(profile.samples.length > 0, 'the profile has samples')
    assert.equal(profile.timeDeltas.length, profile.samples.length)
    const ids = new Set(profile.nodes.map((n) => n.id))
    assert.ok(profile.samples.every((id) => ids.has(id)), 'every sample points at a node')
    // Timestamps are in microseconds: the profile covers the second that was asked for (give or take
    // timer granularity: this checks the duration was applied, not how fast anything is).
    assert.ok(profile.endTime - profile.startTime >= 900_000, `covers ${profile.endTime - profile.startTime} µs`)

    const lines = logs().slice(linesBefore)
    const started = lines.find((l) => l.msg === 'profiling started')
    assert.deepEqual([started?.level, started?.account_id, started?.profile, started?.seconds], ['info', admin.id, 'cpu', 1])
    const ended = lines.find((l) => l.msg === 'profiling ended')
    assert.deepEqual([ended?.account_id, ended?.profile, ended?.outcome], [admin.id, 'cpu', 'completed'])
    assert.ok(!logLines.some((l) => l.includes(admin.access_token)), 'the token is never logged')
    assert.equal(profilingInProgress(), undefined)
  })

  it('returns a sampling heap profile that parses as a .heapprofile and shows where live memory was allocated', async () => {
    const pending = get(management, '/debug/pprof/heap?seconds=1', admin.access_token)
    await until(() => profilingInProgress() === 'heap')
    // ~8 MB kept alive across the sampling window (one sample per ~32 KB on average): the profile
    // reports objects still alive at its end, so these must appear under this function's name.
    const retained = allocateDuringHeapProfile()
    const res = await pending
    assert.equal(retained.length, 100_000)
    assert.equal(res.statusCode, 200, res.body)
    assert.match(String(res.headers['content-disposition']), /^attachment; filename="tessera-.+\.heapprofile"$/)
    const profile = res.json<{ head: HeapNode; samples: Array<{ size: number; nodeId: number }> }>()
    assert.equal(profile.head.callFrame.functionName, '(root)')
    assert.ok(profile.head.children.length > 0, 'the call tree has children')
    assert.ok(profile.samples.length > 0, 'the profile has samples')
    assert.ok(functionNames(profile.head).has('allocateDuringHeapProfile'), 'the allocation site is in the call tree')
    assert.equal(logs().filter((l) => l.msg === 'profiling ended' && l.profile === 'heap').at(-1)?.outcome, 'completed')
  })

  it('returns a full heap snapshot that parses as a .heapsnapshot, and leaves no file behind', async () => {
    const dirsBefore = new Set(await snapshotDirs())
    const res = await get(management, '/debug/pprof/heapsnapshot', admin.access_token)
    assert.equal(res.statusCode, 200, res.body)
    assert.match(String(res.headers['content-disposition']), /^attachment; filename="tessera-.+\.heapsnapshot"$/)
    assert.equal(Number(res.headers['content-length']), res.rawPayload.length)
    const snapshot = JSON.parse(res.body) as { snapshot: { meta: { node_fields: string[]; edge_fields: string[] }; node_count: number }; nodes: number[]; edges: number[]; strings: string[] }
    assert.ok(snapshot.snapshot.meta.node_fields.includes('name'))
    assert.equal(snapshot.nodes.length, snapshot.snapshot.node_count * snapshot.snapshot.meta.node_fields.length)
    assert.ok(snapshot.strings.length > 0)
    // The temporary file (it holds every secret in memory) is deleted once sent.
    await until(async () => (await snapshotDirs()).every((d) => dirsBefore.has(d)))
    assert.equal(logs().filter((l) => l.msg === 'profiling started' && l.profile === 'heapsnapshot').at(-1)?.account_id, admin.id)
  })

  it('runs one profiling operation at a time: 409 on every route while a profile runs, then accepts again', async () => {
    const first = get(management, '/debug/pprof/profile?seconds=2', admin.access_token)
    await until(() => profilingInProgress() === 'cpu')
    for (const url of ['/debug/pprof/profile?seconds=1', '/debug/pprof/heap?seconds=1', '/debug/pprof/heapsnapshot']) {
      const res = await get(management, url, admin.access_token)
      problem(res, 409, 'conflict', `${url} during a CPU profile`)
    }
    assert.equal((await first).statusCode, 200)
    assert.ok(logs().some((l) => l.msg === 'profiling refused: another profile is running' && l.running === 'cpu' && l.account_id === admin.id))
    assert.equal((await get(management, '/debug/pprof/heap?seconds=1', admin.access_token)).statusCode, 200)
  })

  it('serves profiles over a real socket, and ends the profile and frees the inspector when the client goes away', { timeout: 30_000 }, async () => {
    const address = await management.listen({ host: '127.0.0.1', port: 0 })
    // A client that stays gets its profile.
    const served = await fetch(new URL('/debug/pprof/heap?seconds=1', address), { headers: bearer(admin.access_token) })
    assert.equal(served.status, 200)
    assert.ok('head' in (await served.json() as object))
    const url = new URL('/debug/pprof/profile?seconds=60', address)
    const req = httpRequest(url, { headers: bearer(admin.access_token) })
    req.on('error', () => undefined)
    req.end()
    await until(() => profilingInProgress() === 'cpu')
    req.destroy()
    // Well before the 60 s asked for: the abort, not the timer, ended it.
    await until(() => profilingInProgress() === undefined)
    assert.equal(logs().filter((l) => l.msg === 'profiling ended').at(-1)?.outcome, 'client_gone')
    const next = await get(management, '/debug/pprof/profile?seconds=1', admin.access_token)
    assert.equal(next.statusCode, 200, next.body)
  })
})
