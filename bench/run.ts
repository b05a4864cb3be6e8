/**
 * `npm run bench`: Tessera's throughput and latency on loopback, each operation next to a baseline
 * measured in the same run (PERFORMANCE.md: on a 2-core machine the load generator shares the cores
 * with the server, so only ratios measured together mean something). See docs/benchmarks.md.
 *
 * For each operation: closed-loop saturation (autocannon) of Tessera and of its baseline, in rounds that
 * alternate the two (B T, T B, …) so that a burst of noise from a neighbour on the host hits both
 * sides alike; the median of the per-round ratios is checked against the target. Then an open-loop
 * fixed-rate run of Tessera at 70 % of the saturation rate just measured, whose p95 (from each
 * request's scheduled send time) is checked against 100 ms.
 *
 * Environment:
 *   BENCH_DATABASE_URL   PostgreSQL server to create the throwaway database on
 *                        (default postgres://postgres@127.0.0.1:5432/postgres)
 *   BENCH_DURATION       measured seconds per side of each saturation comparison, and of each
 *                        fixed-rate run (default 10)
 *   BENCH_ROUNDS         alternating rounds the saturation seconds are split into (default: one
 *                        round per second of BENCH_DURATION)
 *   BENCH_WARMUP         unrecorded seconds of each side before its rounds (default 2)
 *   BENCH_QUICK=1        smoke mode: 1-second runs, one round, no warm-up, fewer seeded sessions
 *   BENCH_ONLY           comma-separated subset of login,refresh,getMe,jwks
 *   BENCH_FIXED_RATE     fraction of the saturation rate offered in the fixed-rate run (default 0.7)
 *   BENCH_CONNECTIONS    autocannon connections for refresh, getMe and jwks (default 32)
 *   BENCH_LOGIN_CONNECTIONS  autocannon connections for login (default 4 per core)
 *   BENCH_PG_CLIENTS     clients of the raw rotation baseline (default 8)
 *   BENCH_STRICT=1       exit with status 1 when a target is missed (default: 0 once the bench completed)
 *   BENCH_PROFILE=1      run Tessera and the baseline server under --cpu-prof (profiles in
 *                        bench/results/profiles/, named after the pids in the log; summarise one with
 *                        `node bench/profile-summary.ts <file>`)
 */
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { availableParallelism, cpus, loadavg, release, totalmem } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { argon2Side, pgRotationSide, stopBaselines, type Side } from './lib/baselines.ts'
import { freePort, startChild, stopAllChildren, type Child } from './lib/children.ts'
import { closedLoopSegment, stopClosedLoop, type ClosedLoopSpec } from './lib/closed-loop.ts'
import pg from 'pg'
import { DEFAULT_RULES } from '../src/limits/limits.rules.ts'
import { createBenchDatabase, type BenchDatabase } from './lib/database.ts'
import { runOpenLoop, stopOpenLoop, type OpenLoopResult, type OpenLoopWorkload } from './lib/open-loop.ts'
import { cpuBetween, snapshot, speedProbe, type CpuUse } from './lib/machine.ts'
import { baselineTable, cpuTable, fixedRateTable, p95Check, ratioCheck, saturationTable, writeJson, totalCpuUs, type CpuSummary, type OperationResult, type SaturationPair } from './lib/report.ts'
import { aggregate, median, type Aggregate, type Segment } from './lib/stats.ts'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

// ---------------------------------------------------------------------------------------------------
// Settings

function numberEnv(name: string, fallback: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name} must be a non-negative number, got "${raw}"`)
  return value
}

const OPERATIONS = ['login', 'refresh', 'getMe', 'jwks'] as const
type Operation = (typeof OPERATIONS)[number]

const quick = process.env.BENCH_QUICK === '1' || process.env.BENCH_QUICK === 'true'
const cores = availableParallelism()
const settings = {
  adminUrl: process.env.BENCH_DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres',
  quick,
  durationS: numberEnv('BENCH_DURATION', quick ? 1 : 10),
  warmupS: numberEnv('BENCH_WARMUP', quick ? 0 : 2),
  rounds: Math.max(1, Math.round(numberEnv('BENCH_ROUNDS', Math.max(1, Math.round(numberEnv('BENCH_DURATION', quick ? 1 : 10)))))),
  fixedRateFraction: numberEnv('BENCH_FIXED_RATE', 0.7),
  connections: Math.max(1, Math.round(numberEnv('BENCH_CONNECTIONS', 32))),
  loginConnections: Math.max(1, Math.round(numberEnv('BENCH_LOGIN_CONNECTIONS', 4 * cores))),
  pgClients: Math.max(1, Math.round(numberEnv('BENCH_PG_CLIENTS', 8))),
  /** Sessions the open-loop refresh run rotates (each holds its own current token). */
  openLoopSessions: quick ? 32 : 128,
  only: (process.env.BENCH_ONLY ?? OPERATIONS.join(','))
    .split(',').map((s) => s.trim()).filter((s): s is Operation => (OPERATIONS as readonly string[]).includes(s)),
  /** Production hashing parameters: the defaults of src/config.ts, never overridden by the bench. */
  argon2: { memoryCost: 19_456, timeCost: 2, parallelism: 1 },
  targets: { login: 0.9, refresh: 0.4, getMe: 0.7, jwks: 0.8, p95Ms: 100 },
}

const PASSWORD = 'correct horse battery staple'

// ---------------------------------------------------------------------------------------------------
// Cleanup: every child stopped and the database dropped, on success, failure, Ctrl-C or SIGTERM.

let database: BenchDatabase | undefined
let cleaning: Promise<void> | undefined

function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    stopClosedLoop()
    stopOpenLoop()
    stopBaselines()
    await stopAllChildren().catch((err: unknown) => { console.error('bench: stopping the child processes failed:', err) })
    if (database !== undefined) {
      const name = database.name
      await database.drop().then(
        () => { console.log(`Dropped database ${name}.`) },
        (err: unknown) => { console.error(`bench: could not drop database ${name}; drop it by hand:`, err) },
      )
    }
  })()
  return cleaning
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    console.error(`\nbench: ${signal}, cleaning up…`)
    void cleanup().finally(() => process.exit(130))
  })
}

// ---------------------------------------------------------------------------------------------------
// HTTP helpers (seeding uses fetch; the load generators have their own clients)

interface TokenPair {
  access_token: string
  refresh_token: string
}

async function call(base: string, method: string, urlPath: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: unknown }> {
  const res = await fetch(base + urlPath, {
    method,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    body: body === undefined ? null : JSON.stringify(body),
  })
  const text = await res.text()
  return { status: res.status, json: text === '' ? undefined : JSON.parse(text) }
}

async function login(base: string, email: string): Promise<TokenPair> {
  const res = await call(base, 'POST', '/v1/auth/login', { email, password: PASSWORD })
  if (res.status !== 200) throw new Error(`seeding: login of ${email} answered ${res.status}: ${JSON.stringify(res.json)}`)
  return res.json as TokenPair
}

/** Runs `fn` over `items`, `concurrency` at a time (seeding must stay under the hash queue limit). */
async function mapLimit<T, R>(items: readonly T[], concurrency: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length)
  let next = 0
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) {
      const i = next++
      out[i] = await fn(items[i] as T, i)
    }
  }))
  return out
}

function rawRequest(port: number, method: string, urlPath: string, headers: Record<string, string> = {}, body = ''): Buffer {
  const lines = [`${method} ${urlPath} HTTP/1.1`, `Host: 127.0.0.1:${port}`, 'Connection: keep-alive']
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`)
  if (body !== '') lines.push(`Content-Length: ${Buffer.byteLength(body)}`)
  return Buffer.from(`${lines.join('\r\n')}\r\n\r\n${body}`)
}

function refreshBody(token: string): string {
  return `grant_type=refresh_token&refresh_token=${encodeURIComponent(token)}`
}

const FORM = { 'content-type': 'application/x-www-form-urlencoded' }
const JSON_TYPE = { 'content-type': 'application/json' }

function roundRobin(requests: readonly Buffer[]): OpenLoopWorkload {
  let i = 0
  return { next: () => ({ bytes: requests[i++ % requests.length] as Buffer }) }
}

// ---------------------------------------------------------------------------------------------------

function log(message: string): void {
  console.log(`[${new Date().toISOString().slice(11, 19)}] ${message}`)
}

function describeAggregate(r: Aggregate): string {
  return `${Math.round(r.rps)}/s (rounds: ${r.perRound.map((x) => Math.round(x)).join(', ')}), p50 ${r.latencyMs.p50.toFixed(2)} ms, p95 ${r.latencyMs.p95.toFixed(2)} ms, p99 ${r.latencyMs.p99.toFixed(2)} ms` +
    (r.errors > 0 ? `, ${r.errors} errors ${JSON.stringify(r.statusCounts)}` : '')
}

function closedSide(description: string, serverPid: number, spec: ClosedLoopSpec, afterSegment?: () => Promise<void>): Side {
  return {
    description,
    serverPid,
    async measure(durationS) {
      const segment = await closedLoopSegment(spec, durationS)
      await afterSegment?.()
      return segment
    },
  }
}

function describeOpen(r: OpenLoopResult): string {
  return `offered ${Math.round(r.targetRate)} req/s, achieved ${Math.round(r.achievedRate)}, p50 ${r.latencyMs.p50.toFixed(2)} ms, ` +
    `p95 ${r.latencyMs.p95.toFixed(2)} ms, p99 ${r.latencyMs.p99.toFixed(2)} ms` +
    (r.errors + r.unfinished > 0 ? `, ${r.errors} errors, ${r.unfinished} unfinished ${JSON.stringify(r.statusCounts)}` : '')
}

function summariseCpu(uses: ReadonlyArray<CpuUse | undefined>, ops: number): CpuSummary {
  const known = uses.filter((u): u is CpuUse => u !== undefined)
  const perOp = (pick: (u: CpuUse) => number | undefined): number | undefined => {
    if (known.length === 0 || ops === 0) return undefined
    let sum = 0
    for (const u of known) {
      const v = pick(u)
      if (v === undefined) return undefined
      sum += v
    }
    return (sum / ops) * 1e6
  }
  return {
    serverUsPerOp: perOp((u) => u.serverS),
    postgresUsPerOp: perOp((u) => u.postgresS),
    benchUsPerOp: perOp((u) => u.benchS),
    othersCoresPerRound: uses.map((u) => (u === undefined ? undefined : u.othersS / u.wallS)),
  }
}

function cpuCostRatio(baselineCpu: CpuSummary, tesseraCpu: CpuSummary): number | undefined {
  const b = totalCpuUs(baselineCpu)
  const t = totalCpuUs(tesseraCpu)
  return b === undefined || t === undefined || t === 0 ? undefined : b / t
}

function describeSpread(values: readonly number[]): string {
  if (values.length === 0) return 'none'
  const min = Math.min(...values)
  const max = Math.max(...values)
  return `min ${min.toFixed(0)}, median ${median(values).toFixed(0)}, max ${max.toFixed(0)} work units/ms (max/min ${(max / min).toFixed(2)}×)`
}

function describeCpu(c: CpuSummary): string {
  const parts: string[] = []
  if (c.serverUsPerOp !== undefined) parts.push(`server ${Math.round(c.serverUsPerOp)} µs`)
  if (c.postgresUsPerOp !== undefined) parts.push(`PostgreSQL ${Math.round(c.postgresUsPerOp)} µs`)
  if (c.benchUsPerOp !== undefined) parts.push(`bench process ${Math.round(c.benchUsPerOp)} µs`)
  return parts.length > 0 ? `; CPU per op: ${parts.join(', ')}` : ''
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function main(): Promise<void> {
  const started = new Date()
  // The code under test, read before Tessera starts (the working tree may change while the bench runs).
  let commit: string | undefined
  let srcDiffersFromCommit: boolean | undefined
  try {
    commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
    // Read-only: lists the files of src/ and migrations/ that differ from the commit.
    srcDiffersFromCommit = execFileSync('git', ['diff', '--name-only', 'HEAD', '--', 'src', 'migrations'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim() !== ''
  } catch {
    commit = undefined
  }
  const cpuModel = cpus()[0]?.model ?? 'unknown'
  console.log(`Tessera bench${quick ? ' (QUICK smoke mode: figures are not meaningful)' : ''}`)
  console.log(`Code: ${commit === undefined ? 'unknown commit' : commit.slice(0, 7)}${srcDiffersFromCommit === true ? ' + uncommitted changes in src/ or migrations/' : ''}`)
  console.log(`Node ${process.version}, ${cores} cores (${cpuModel}), ${Math.round(totalmem() / 2 ** 30)} GiB, load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`)
  console.log(`Runs: ${settings.warmupS} s warm-up + ${settings.durationS} s measured per side (${settings.rounds} alternating rounds); fixed rate at ${settings.fixedRateFraction * 100} % of saturation for ${settings.durationS} s; operations: ${settings.only.join(', ')}`)

  database = await createBenchDatabase(settings.adminUrl)
  log(`Created database ${database.name} (PostgreSQL ${database.serverVersion})`)

  // Tessera with production settings: only what the bench must set, nothing inherited from the shell.
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(TESSERA_|DATABASE_)/.test(k) || ['HOST', 'PORT', 'LOG_LEVEL'].includes(k)) continue
    env[k] = v
  }
  // Variants for comparisons (e.g. BENCH_TESSERA_ENV="TESSERA_ACCESS_TOKEN_CACHE_SIZE=0" for the
  // verified-token cache off): space-separated KEY=VALUE pairs, applied over the production defaults.
  const variant: Record<string, string> = {}
  for (const pair of (process.env.BENCH_TESSERA_ENV ?? '').split(/\s+/).filter((p) => p.length > 0)) {
    const eq = pair.indexOf('=')
    if (eq < 1) throw new Error(`BENCH_TESSERA_ENV: expected KEY=VALUE, got ${pair}`)
    variant[pair.slice(0, eq)] = pair.slice(eq + 1)
  }
  if (Object.keys(variant).length > 0) console.log(`Tessera variant: ${Object.entries(variant).map(([k, v]) => `${k}=${v}`).join(' ')}`)
  const tesseraPort = await freePort()
  const profileDir = path.join(root, 'bench', 'results', 'profiles')
  const profile = process.env.BENCH_PROFILE === '1'
  const tessera: Child = await startChild({
    name: 'tessera',
    args: [...(profile ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []), 'src/cli.ts', 'serve'],
    cwd: root,
    port: tesseraPort,
    readyPath: '/readyz',
    env: {
      ...env,
      DATABASE_URL: database.url,
      TESSERA_KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
      // Messages stay in the database and no worker delivers them: the bench measures the API alone.
      TESSERA_EMAIL_OUTBOX: 'true',
      TESSERA_WORKER: 'separate',
      // The bench drives thousands of requests a second from one address: budgets it cannot reach (the
      // limiter still runs on every limited request, so its cost is in the figures).
      TESSERA_RATE_LIMITS: JSON.stringify(Object.fromEntries(Object.keys(DEFAULT_RULES).map((name) => [name, { points: 1_000_000, seconds: 60 }]))),
      HOST: '127.0.0.1',
      PORT: String(tesseraPort),
      METRICS_PORT: '0',
      LOG_LEVEL: 'warn',
      ...variant,
    },
  })
  log(`Tessera (pid ${tessera.pid}) ready at ${tessera.url}`)

  // Seeding: accounts for login and getMe, and sessions (each with its own refresh token) for refresh.
  const accountCount = Math.max(settings.loginConnections, settings.connections)
  const emails = Array.from({ length: accountCount }, (_, i) => `bench-${i}@example.com`)
  await mapLimit(emails, 2 * cores, async (email) => {
    const res = await call(tessera.url, 'POST', '/v1/accounts', { email, password: PASSWORD })
    if (res.status !== 202) throw new Error(`seeding: register answered ${res.status}: ${JSON.stringify(res.json)}`)
  })
  // Verification links are a flow of their own (tested in the suite); seeded accounts are verified directly.
  const seedClient = new pg.Client({ connectionString: database.url })
  await seedClient.connect()
  await seedClient.query('UPDATE accounts SET email_verified_at = now() WHERE email_verified_at IS NULL').finally(() => seedClient.end())
  const accountSessions = await mapLimit(emails, 2 * cores, (email) => login(tessera.url, email))
  const needRefresh = settings.only.includes('refresh')
  const refreshSessions = needRefresh
    ? await mapLimit(Array.from({ length: settings.connections + settings.openLoopSessions }, (_, i) => emails[i % emails.length] as string), 2 * cores, (email) => login(tessera.url, email))
    : []
  const accountIds = await mapLimit(accountSessions, 2 * cores, async (s) => {
    const res = await call(tessera.url, 'GET', '/v1/me', undefined, { authorization: `Bearer ${s.access_token}` })
    if (res.status !== 200) throw new Error(`seeding: GET /v1/me answered ${res.status}`)
    return (res.json as { id: string }).id
  })
  log(`Seeded ${emails.length} accounts and ${accountSessions.length + refreshSessions.length} sessions through the API`)

  const jwks = await call(tessera.url, 'GET', '/.well-known/jwks.json')
  const baselinePort = await freePort()
  const baseline = await startChild({
    name: 'baseline',
    args: [...(profile ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []), 'bench/baseline-server.ts'],
    cwd: root,
    port: baselinePort,
    readyPath: '/readyz',
    env: { ...env, BASELINE_PORT: String(baselinePort), BASELINE_DATABASE_URL: database.url, BASELINE_CONSTANT_JSON: JSON.stringify(jwks.json) },
  })
  log(`Bare Fastify baseline (pid ${baseline.pid}) ready at ${baseline.url}`)

  const postmasterPid = database.postmasterPid
  const allSpeeds: number[] = []
  // Other processes' CPU, summed over every measured window (a process that starts and ends between two
  // snapshots is invisible, so short windows catch more of them than one bench-long window would).
  const othersTotal = { cpuS: 0, wallS: 0, byName: new Map<string, number>() }
  const noteOthers = (cpu: CpuUse | undefined) => {
    if (cpu === undefined) return
    othersTotal.cpuS += cpu.othersS
    othersTotal.wallS += cpu.wallS
    for (const o of cpu.topOthers) othersTotal.byName.set(o.comm, (othersTotal.byName.get(o.comm) ?? 0) + o.cpuS)
  }
  const results: OperationResult[] = []
  const segmentS = settings.durationS / settings.rounds

  /** Saturation of both sides in alternating rounds (B T, T B, …), after a warm-up of each. */
  const saturation = async (name: string, baselineSide: Side, tesseraSide: Side, tesseraMethod: string, connections: number): Promise<SaturationPair> => {
    if (settings.warmupS > 0) {
      log(`${name}: warm-up, ${settings.warmupS} s each side…`)
      await baselineSide.measure(settings.warmupS)
      await pause(300)
      await tesseraSide.measure(settings.warmupS)
    }
    log(`${name}: saturation, ${settings.rounds} alternating rounds of ${segmentS.toFixed(1)} s per side…`)
    const base: Segment[] = []
    const tess: Segment[] = []
    const baseCpu: Array<CpuUse | undefined> = []
    const tessCpu: Array<CpuUse | undefined> = []
    const speeds: number[] = []
    const measure = async (side: Side): Promise<[Segment, CpuUse | undefined]> => {
      speeds.push(speedProbe())
      allSpeeds.push(speeds[speeds.length - 1] as number)
      const before = await snapshot()
      const segment = await side.measure(segmentS)
      const after = await snapshot()
      const cpu = before !== undefined && after !== undefined ? cpuBetween(before, after, { server: side.serverPid, postmaster: postmasterPid }) : undefined
      noteOthers(cpu)
      return [segment, cpu]
    }
    for (let round = 0; round < settings.rounds; round++) {
      const order = round % 2 === 0 ? (['b', 't'] as const) : (['t', 'b'] as const)
      for (const side of order) {
        await pause(300)
        const [segment, cpu] = await measure(side === 'b' ? baselineSide : tesseraSide)
        if (side === 'b') {
          base.push(segment)
          baseCpu.push(cpu)
        } else {
          tess.push(segment)
          tessCpu.push(cpu)
        }
        if (cpu !== undefined && cpu.othersS / cpu.wallS > 0.1) {
          log(`${name}: round ${round + 1} (${side === 'b' ? 'baseline' : 'Tessera'}): other processes used ${(cpu.othersS / cpu.wallS).toFixed(2)} cores (${cpu.topOthers.map((o) => `${o.comm} ${o.pid}`).join(', ')})`)
        }
      }
    }
    const b = aggregate(base)
    const t = aggregate(tess)
    const ratios = t.perRound.map((x, i) => x / (b.perRound[i] ?? Number.NaN))
    const tCpu = summariseCpu(tessCpu, t.ok)
    const bCpu = summariseCpu(baseCpu, b.ok)
    log(`${name} baseline: ${describeAggregate(b)}${describeCpu(bCpu)}`)
    log(`${name} Tessera:  ${describeAggregate(t)}${describeCpu(tCpu)}`)
    log(`${name}: ratio per round ${ratios.map((r) => `${(r * 100).toFixed(1)} %`).join(', ')}`)
    log(`${name}: machine speed probe between segments: ${describeSpread(speeds)}`)
    return {
      rounds: settings.rounds,
      segmentS,
      tessera: { ...t, method: tesseraMethod, connections },
      baseline: { ...b, description: baselineSide.description },
      ratios,
      medianRatio: median(ratios),
      aggregateRatio: b.rps > 0 ? t.rps / b.rps : 0,
      cpu: { tessera: tCpu, baseline: bCpu },
      cpuCostRatio: cpuCostRatio(bCpu, tCpu),
      speedProbes: speeds,
    }
  }

  const fixedRate = async (name: string, rps: number, workload: OpenLoopWorkload): Promise<OpenLoopResult & { othersCores: number | undefined }> => {
    await pause(500)
    const rate = Math.max(1, rps * settings.fixedRateFraction)
    log(`${name}: fixed rate ${Math.round(rate)} req/s for ${settings.durationS} s (open loop)…`)
    const before = await snapshot()
    const r = await runOpenLoop({ host: '127.0.0.1', port: tessera.port, rate, durationS: settings.durationS, workload })
    const after = await snapshot()
    const cpu = before !== undefined && after !== undefined ? cpuBetween(before, after, { server: tessera.pid, postmaster: postmasterPid }) : undefined
    noteOthers(cpu)
    const othersCores = cpu === undefined ? undefined : cpu.othersS / cpu.wallS
    log(`${name}: ${describeOpen(r)}${othersCores !== undefined && othersCores > 0.1 ? `; other processes used ${othersCores.toFixed(2)} cores` : ''}`)
    return { ...r, othersCores }
  }

  const record = (name: Operation, request: string, pair: SaturationPair, fixed: OpenLoopResult & { othersCores: number | undefined }, target: number) => {
    results.push({
      name, request, saturation: pair,
      ratioCheck: ratioCheck(`${name} throughput >= ${target * 100} % of the baseline (median of ${pair.rounds} rounds)`, pair, target),
      fixedRate: fixed,
      p95Check: p95Check(`${name} p95 < ${settings.targets.p95Ms} ms at ${settings.fixedRateFraction * 100} % of saturation`, fixed, settings.targets.p95Ms),
    })
  }
  const autocannonMethod = (connections: number) => `autocannon, ${connections} connections`

  // 1. login vs argon2id capacity
  if (settings.only.includes('login')) {
    const body = (slot: number) => JSON.stringify({ email: emails[slot % emails.length], password: PASSWORD })
    const tesseraSide = closedSide('Tessera', tessera.pid, {
      url: tessera.url,
      connections: settings.loginConnections,
      requests: (slot) => [{ method: 'POST', path: '/v1/auth/login', headers: JSON_TYPE, body: body(slot) }],
    })
    const pair = await saturation('login', argon2Side(settings.argon2, cores), tesseraSide, autocannonMethod(settings.loginConnections), settings.loginConnections)
    const fixed = await fixedRate('login', pair.tessera.rps, roundRobin(emails.map((_, i) => rawRequest(tessera.port, 'POST', '/v1/auth/login', JSON_TYPE, body(i)))))
    record('login', 'POST /v1/auth/login (JSON email + password; argon2id verify, session + refresh token insert, EdDSA-signed access token)', pair, fixed, settings.targets.login)
  }

  // 2. refresh vs the raw one-statement rotation
  if (settings.only.includes('refresh')) {
    // Closed loop: connection `slot` owns session `slot` and always presents its current refresh token.
    const tokens = refreshSessions.slice(0, settings.connections).map((s) => s.refresh_token)
    const inFlight = new Set<number>()
    // A request cut off when a segment stops may or may not have rotated its token: present it again at
    // once (inside the grace window), which returns the same child either way.
    const settle = async () => {
      await pause(200)
      await Promise.all([...inFlight].map(async (slot) => {
        const res = await fetch(`${tessera.url}/oauth/token`, { method: 'POST', headers: FORM, body: refreshBody(tokens[slot] as string) })
        const text = await res.text()
        if (res.status === 200) tokens[slot] = (JSON.parse(text) as TokenPair).refresh_token
        else log(`refresh: could not settle session ${slot} (${res.status} ${text})`)
        inFlight.delete(slot)
      }))
    }
    const tesseraSide = closedSide('Tessera', tessera.pid, {
      url: tessera.url,
      connections: settings.connections,
      requests: (slot) => [{
        method: 'POST', path: '/oauth/token', headers: FORM,
        setupRequest: (req) => {
          inFlight.add(slot)
          return { ...req, body: refreshBody(tokens[slot] as string) }
        },
        onResponse: (status, resBody) => {
          inFlight.delete(slot)
          if (status === 200) tokens[slot] = (JSON.parse(resBody) as TokenPair).refresh_token
        },
      }],
    }, settle)
    const rotation = await pgRotationSide(database.url, settings.pgClients)
    let pair: SaturationPair
    try {
      pair = await saturation('refresh', rotation, tesseraSide, autocannonMethod(settings.connections), settings.connections)
    } finally {
      await rotation.close?.()
    }

    // Open loop: a pool of idle sessions; a request takes one and gives it back rotated.
    const idle = refreshSessions.slice(settings.connections).map((s) => s.refresh_token)
    let lost = 0
    const workload: OpenLoopWorkload = {
      next() {
        const token = idle.pop()
        if (token === undefined) return undefined
        return {
          bytes: rawRequest(tessera.port, 'POST', '/oauth/token', FORM, refreshBody(token)),
          done: (status, resBody) => {
            if (status === 200) idle.push((JSON.parse(resBody.toString('utf8')) as TokenPair).refresh_token)
            else if (status === 0) idle.push(token) // connection lost: a retry within the grace window is safe
            else lost++
          },
        }
      },
    }
    const fixed = await fixedRate('refresh', pair.tessera.rps, workload)
    if (lost > 0) log(`refresh: ${lost} sessions lost to failed rotations in the fixed-rate run`)
    record('refresh', 'POST /oauth/token grant_type=refresh_token (form; one-statement rotation, EdDSA-signed access token)', pair, fixed, settings.targets.refresh)
  }

  // 3. getMe vs a bare Fastify route doing one primary-key SELECT
  if (settings.only.includes('getMe')) {
    const baselineSide = closedSide(`bare Fastify route, one primary-key SELECT through pg (pool of 10), autocannon, ${settings.connections} connections`, baseline.pid, {
      url: baseline.url, connections: settings.connections,
      requests: (slot) => [{ method: 'GET', path: `/account/${accountIds[slot % accountIds.length]}` }],
    })
    const auth = (slot: number) => ({ authorization: `Bearer ${accountSessions[slot % accountSessions.length]?.access_token}` })
    const tesseraSide = closedSide('Tessera', tessera.pid, {
      url: tessera.url, connections: settings.connections,
      requests: (slot) => [{ method: 'GET', path: '/v1/me', headers: auth(slot) }],
    })
    const pair = await saturation('getMe', baselineSide, tesseraSide, autocannonMethod(settings.connections), settings.connections)
    const fixed = await fixedRate('getMe', pair.tessera.rps, roundRobin(accountSessions.map((_, i) => rawRequest(tessera.port, 'GET', '/v1/me', auth(i)))))
    record('getMe', 'GET /v1/me (Bearer access token; cached signature check, revocation check, one session-checking SELECT)', pair, fixed, settings.targets.getMe)
  }

  // 4. JWKS vs a bare Fastify route returning a small constant JSON
  if (settings.only.includes('jwks')) {
    const baselineSide = closedSide(`bare Fastify route returning the same JWKS as a constant, autocannon, ${settings.connections} connections`, baseline.pid, {
      url: baseline.url, connections: settings.connections, requests: () => [{ method: 'GET', path: '/constant' }],
    })
    const tesseraSide = closedSide('Tessera', tessera.pid, {
      url: tessera.url, connections: settings.connections, requests: () => [{ method: 'GET', path: '/.well-known/jwks.json' }],
    })
    const pair = await saturation('jwks', baselineSide, tesseraSide, autocannonMethod(settings.connections), settings.connections)
    const fixed = await fixedRate('jwks', pair.tessera.rps, roundRobin([rawRequest(tessera.port, 'GET', '/.well-known/jwks.json')]))
    record('jwks', 'GET /.well-known/jwks.json (in-memory key set)', pair, fixed, settings.targets.jwks)
  }

  const othersCores = othersTotal.wallS > 0 ? othersTotal.cpuS / othersTotal.wallS : undefined
  const busiestOthers = [...othersTotal.byName].sort((a, b) => b[1] - a[1]).slice(0, 5).map(([comm, cpuS]) => ({ comm, cpuS }))
  if (tessera.exited()) throw new Error(`Tessera exited during the bench:\n${tessera.output()}`)
  if (tessera.lineCount() > 0) {
    // Usually 503 `overloaded` warnings when the login queue overflowed; the last few, shortened.
    const last = tessera.output().split('\n').slice(-3).map((l) => (l.length > 240 ? `${l.slice(0, 240)}…` : l))
    log(`Tessera wrote ${tessera.lineCount()} log lines at LOG_LEVEL=warn; the last ${last.length}:\n${last.join('\n')}`)
  }

  // Report
  const checks = results.flatMap((r) => (r.p95Check === undefined ? [r.ratioCheck] : [r.ratioCheck, r.p95Check]))
  const passed = checks.filter((c) => c.pass).length
  console.log('')
  console.log(`Saturation (closed loop; ${settings.rounds} alternating rounds of ${segmentS.toFixed(1)} s per side; latencies of 2xx responses; ratio = Tessera / baseline per round, median checked)`)
  console.log(saturationTable(results))
  console.log('')
  console.log(baselineTable(results))
  console.log('')
  console.log('CPU time per operation during the saturation rounds (from /proc). CPU-cost ratio = baseline total / Tessera total (server + PostgreSQL + bench process,')
  console.log('since the load generator shares the cores): what the throughput ratio would be if both sides were limited by CPU alone; much steadier than')
  console.log('throughput on a noisy machine. Informational, not checked.')
  console.log('\'Others\' = processes outside the bench, i.e. other users of the machine.')
  console.log(cpuTable(results))
  console.log('')
  console.log(`Fixed rate (open loop at ${settings.fixedRateFraction * 100} % of the saturation rate above; latency from each request's scheduled send time)`)
  console.log(fixedRateTable(results))
  console.log('')
  console.log(`Machine: other processes used ${othersCores === undefined ? 'an unknown share' : `${othersCores.toFixed(2)} cores on average (at least)`} during the measured windows` +
    `${busiestOthers.length > 0 ? ` (mostly ${busiestOthers.slice(0, 3).map((o) => o.comm).join(', ')})` : ''}; ` +
    `speed probe between segments: ${describeSpread(allSpeeds)}.`)
  if ((othersCores ?? 0) > 0.1 || (allSpeeds.length > 0 && Math.max(...allSpeeds) / Math.min(...allSpeeds) > 1.3)) {
    console.log('  The machine was not quiet: absolute figures are unreliable; the per-round ratios (baseline and Tessera alternate) are the figures to rely on.')
  }
  console.log('')
  console.log(`${passed} of ${checks.length} targets met${quick ? ' (QUICK mode: smoke test only, not a measurement)' : ''}.`)
  for (const c of checks.filter((x) => !x.pass)) {
    const gap = c.comparison === '>=' ? `${(c.threshold - c.measured).toFixed(2)} points short` : `${(c.measured - c.threshold).toFixed(2)} ms over`
    console.log(`  MISS: ${c.description}: measured ${c.measured.toFixed(3)} ${c.unit} (${gap})${c.note !== undefined ? `; ${c.note}` : ''}`)
  }

  const file = path.join(root, 'bench', 'results', 'latest.json')
  await writeJson(file, {
    startedAt: started.toISOString(),
    commit,
    srcDiffersFromCommit,
    finishedAt: new Date().toISOString(),
    quick,
    machine: {
      node: process.version, cores, cpuModel, platform: process.platform, kernel: release(),
      memoryGiB: totalmem() / 2 ** 30, loadAverageAtEnd: loadavg(), postgres: database.serverVersion,
      uvThreadpoolSize: process.env.UV_THREADPOOL_SIZE ?? 'default (4)',
      othersCoresDuringMeasurements: othersCores,
      busiestOtherProcesses: busiestOthers,
      speedProbe: { unit: 'SHA-256 of 1 KiB per ms, bench main thread, before each saturation segment', min: Math.min(...allSpeeds), median: median(allSpeeds), max: Math.max(...allSpeeds) },
    },
    settings: { ...settings, adminUrl: undefined },
    methods: {
      saturation: 'closed loop, autocannon 9 in the bench process (in-process loops for the argon2 and raw-rotation baselines); each connection sends its next request when the previous answer arrives; throughput = 2xx responses / measured interval; latency percentiles (nearest rank) over every 2xx response; baseline and Tessera alternate in rounds (B T, T B, ...) and the median of the per-round ratios is checked',
      fixedRate: 'open loop, own raw-socket HTTP/1.1 generator; request i scheduled at start + i/rate; latency from the scheduled send time, so queueing in the server or the generator counts; unanswered requests count at the drain deadline; non-2xx responses fail the check',
    },
    tesseraLogLines: tessera.lineCount(),
    passed,
    total: checks.length,
    operations: results,
  })
  log(`Wrote ${path.relative(root, file)}`)
  if (process.env.BENCH_STRICT === '1' && passed < checks.length) process.exitCode = 1
}

try {
  await main()
} catch (err) {
  console.error('bench failed:', err)
  process.exitCode = 2
} finally {
  await cleanup()
}
