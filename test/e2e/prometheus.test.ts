/**
 * End-to-end: a real Prometheus (Debian's `prometheus` package) scrapes a real `tessera serve` that this
 * test exercises over HTTP, with the rules of deploy/observability/prometheus loaded; and promtool
 * checks and unit-tests those rules (so `npm test` runs them in CI).
 *
 * Where prometheus/promtool are not installed (a fresh laptop), the file is skipped with a visible
 * notice; in CI (CI=true) that is an error, never a skip (.ci/run installs the package).
 */
import assert from 'node:assert/strict'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { parse as parseYaml } from 'yaml'
import { uniqueEmail } from '../helpers/app.ts'
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts'
import { freePort, processEnv, repoRoot, type ServerProcess, startServer, verifyByEmail, waitFor } from '../helpers/process.ts'

const PROMETHEUS_DIR = path.join(repoRoot, 'deploy/observability/prometheus')
const RULES_FILE = path.join(PROMETHEUS_DIR, 'rules/tessera.rules.yml')
const RULES_TEST_FILE = path.join(PROMETHEUS_DIR, 'tests/tessera.rules.test.yml')
const EXAMPLE_CONFIG = path.join(PROMETHEUS_DIR, 'prometheus.yml')

function prometheusAvailable(): { ok: true } | { ok: false; reason: string } {
  const missing = ['prometheus', 'promtool'].filter((bin) => spawnSync(bin, ['--version'], { encoding: 'utf8' }).status !== 0)
  if (missing.length === 0) return { ok: true }
  const reason = `${missing.join(' and ')} not installed: Prometheus tests skipped (install the Debian package prometheus to run them)`
  if (process.env.CI === 'true') throw new Error(`${reason} — refusing to skip in CI`)
  return { ok: false, reason }
}

const availability = prometheusAvailable()
if (!availability.ok) console.log(`# NOTICE: ${availability.reason}`)
const skip = availability.ok ? false : availability.reason

function promtool(args: readonly string[]): { status: number | null; output: string } {
  const run = spawnSync('promtool', args, { cwd: repoRoot, encoding: 'utf8', timeout: 60_000 })
  return { status: run.status, output: `${run.stdout}\n${run.stderr}` }
}

describe('promtool on the shipped configuration', { skip }, () => {
  it('accepts the rule file with every lint enabled', () => {
    const run = promtool(['check', 'rules', '--lint=all', '--lint-fatal', RULES_FILE])
    assert.equal(run.status, 0, run.output)
    assert.match(run.output, /SUCCESS: \d+ rules found/)
  })

  it('passes the unit tests of every alert, firing and not firing', () => {
    const run = promtool(['test', 'rules', RULES_TEST_FILE])
    assert.equal(run.status, 0, run.output)
    assert.match(run.output, /SUCCESS/)
  })

  it('has a unit test for every alert of the rule file', async () => {
    const rules = parseYaml(await readFile(RULES_FILE, 'utf8')) as { groups: { rules: { alert?: string }[] }[] }
    const alerts = rules.groups.flatMap((g) => g.rules.flatMap((r) => (r.alert === undefined ? [] : [r.alert])))
    const tests = parseYaml(await readFile(RULES_TEST_FILE, 'utf8')) as { tests: { alert_rule_test?: { alertname: string; exp_alerts?: unknown[] }[] }[] }
    const cases = tests.tests.flatMap((t) => t.alert_rule_test ?? [])
    for (const alert of alerts) {
      const mine = cases.filter((c) => c.alertname === alert)
      assert.ok(mine.some((c) => (c.exp_alerts ?? []).length > 0), `${alert}: no test where it fires`)
      assert.ok(mine.some((c) => (c.exp_alerts ?? []).length === 0), `${alert}: no test where it stays quiet`)
    }
    console.log(`# promtool: ${alerts.length} alerts, ${cases.length} alert test cases`)
  })

  it('accepts the example prometheus.yml (and the rule files it loads)', () => {
    const run = promtool(['check', 'config', EXAMPLE_CONFIG])
    assert.equal(run.status, 0, run.output)
  })
})

// --- A real Prometheus scraping a real Tessera -------------------------------------------------

interface Tokens { access_token: string; refresh_token: string }
interface Sample { metric: Record<string, string>; value: [number, string] }
interface RuleState { name: string; health: string; lastError?: string; type: string }
interface RuleGroup { name: string; file: string; rules: RuleState[] }
interface Alert { labels: Record<string, string>; state: string }

function client(base: string) {
  return {
    json: (route: string, body: unknown) => fetch(new URL(route, base), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
    form: (route: string, fields: Record<string, string>) => fetch(new URL(route, base), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(fields).toString() }),
    get: (route: string, headers: Record<string, string> = {}) => fetch(new URL(route, base), { headers }),
  }
}

class PrometheusServer {
  readonly url: string
  readonly #child: ChildProcess
  #output = ''
  readonly #exited: Promise<void>

  constructor(url: string, child: ChildProcess) {
    this.url = url
    this.#child = child
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => { this.#output += chunk })
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => { this.#output += chunk })
    this.#exited = new Promise((resolve) => { child.once('close', () => resolve()) })
  }

  output(): string { return this.#output }
  running(): boolean { return this.#child.exitCode === null && this.#child.signalCode === null }

  async api<T>(route: string, params: Record<string, string> = {}): Promise<T> {
    const url = new URL(route, this.url)
    for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v)
    const res = await fetch(url)
    const body = await res.json() as { status: string; data: T; error?: string }
    assert.equal(body.status, 'success', `${url.href}: ${body.error ?? res.status}`)
    return body.data
  }

  async query(expr: string): Promise<Sample[]> {
    const data = await this.api<{ resultType: string; result: Sample[] }>('/api/v1/query', { query: expr })
    return data.result
  }

  async stop(): Promise<void> {
    if (this.running()) this.#child.kill('SIGTERM')
    const timer = setTimeout(() => { if (this.running()) this.#child.kill('SIGKILL') }, 10_000)
    await this.#exited
    clearTimeout(timer)
  }
}

/** Starts `prometheus` on a free loopback port with `config`; resolves once it answers /-/ready. */
async function startPrometheus(dir: string, config: string): Promise<PrometheusServer> {
  const configFile = path.join(dir, 'prometheus.yml')
  await writeFile(configFile, config)
  const port = await freePort()
  const child = spawn('prometheus', [
    `--config.file=${configFile}`,
    `--storage.tsdb.path=${path.join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--log.level=warn',
  ], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
  const server = new PrometheusServer(`http://127.0.0.1:${port}`, child)
  try {
    await waitFor('prometheus to be ready', async () => {
      if (!server.running()) throw new Error(`prometheus exited:\n${server.output()}`)
      return fetch(`${server.url}/-/ready`).then((r) => r.ok, () => false)
    }, 20_000)
  } catch (err) {
    await server.stop()
    throw err
  }
  return server
}

function value(samples: Sample[], labels: Record<string, string>): number | undefined {
  const hit = samples.find((s) => Object.entries(labels).every(([k, v]) => s.metric[k] === v))
  return hit === undefined ? undefined : Number(hit.value[1])
}

describe('Prometheus scraping a running Tessera, with the rules loaded', { skip }, () => {
  let db: TestDatabase
  let server: ServerProcess
  let prometheus: PrometheusServer
  let dir: string
  let http: ReturnType<typeof client>
  let metricsTarget: string
  const sent = { loginOk: 0, loginWrong: 0, refreshRotated: 0, reuse: 0, me: 0 }

  before(async () => {
    db = await createTestDatabase()
    server = await startServer(processEnv(db.url, {
      // Every replay of a used refresh token counts as reuse (no grace window), so the test can
      // trigger the reuse alert with real requests.
      TESSERA_REFRESH_GRACE_SECONDS: '0',
    }))
    await waitFor('the management listener log line', () => server.logLines().some((l) => l.msg === 'management listener (metrics) ready'))
    const address = server.logLines().find((l) => l.msg === 'management listener (metrics) ready')?.address
    assert.equal(typeof address, 'string')
    metricsTarget = new URL(address as string).host
    http = client(server.baseUrl)

    dir = await mkdtemp(path.join(tmpdir(), 'tessera-prometheus-'))
    // Scrape and evaluate every second, so the test sees data within seconds.
    prometheus = await startPrometheus(dir, [
      'global:',
      '  scrape_interval: 1s',
      '  scrape_timeout: 1s',
      '  evaluation_interval: 1s',
      'rule_files:',
      `  - ${JSON.stringify(RULES_FILE)}`,
      'scrape_configs:',
      '  - job_name: tessera',
      '    static_configs:',
      `      - targets: [${JSON.stringify(metricsTarget)}]`,
      '',
    ].join('\n'))
  })

  after(async () => {
    await prometheus?.stop()
    await server?.kill()
    await db?.drop()
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  async function login(email: string, password: string): Promise<Tokens> {
    const res = await http.json('/v1/auth/login', { email, password })
    assert.equal(res.status, 200, await res.clone().text())
    sent.loginOk++
    return await res.json() as Tokens
  }

  /** login → /v1/me → refresh (rotated) → replay of the first refresh token (reuse detected: the session ends). */
  async function reuseCycle(email: string, password: string): Promise<void> {
    const first = await login(email, password)
    const me = await http.get('/v1/me', { authorization: `Bearer ${first.access_token}` })
    assert.equal(me.status, 200)
    sent.me++
    const rotated = await http.form('/oauth/token', { grant_type: 'refresh_token', refresh_token: first.refresh_token })
    assert.equal(rotated.status, 200, await rotated.clone().text())
    sent.refreshRotated++
    const replay = await http.form('/oauth/token', { grant_type: 'refresh_token', refresh_token: first.refresh_token })
    assert.equal(replay.status, 400, await replay.clone().text())
    assert.equal((await replay.json() as { error: string }).error, 'invalid_grant')
    sent.reuse++
  }

  async function wrongLogin(email: string): Promise<void> {
    const res = await http.json('/v1/auth/login', { email, password: 'not the password at all' })
    assert.equal(res.status, 401)
    sent.loginWrong++
  }

  it('scrapes the management listener, then sees the counters of real requests and fires the refresh-reuse alert on them', async () => {
    await waitFor('prometheus to scrape tessera (up == 1)', async () => value(await prometheus.query('up'), { job: 'tessera', instance: metricsTarget }) === 1, 20_000)

    const email = uniqueEmail('prometheus')
    const password = `prometheus horse battery ${randomBytes(6).toString('hex')}`
    const reg = await http.json('/v1/accounts', { email, password })
    assert.equal(reg.status, 202, await reg.clone().text())
    await verifyByEmail(db.url, server.baseUrl, email)

    // Phase 1: every series the rules read comes into existence (a labelled counter appears at its first
    // event), and Prometheus scrapes it once.
    await reuseCycle(email, password)
    await wrongLogin(email)
    await waitFor('the first reuse to be scraped', async () => (value(await prometheus.query('tessera_token_refreshes_total'), { result: 'reuse_detected' }) ?? 0) >= 1, 20_000)

    // Phase 2: a burst of reuse (more than 10 in 15 minutes pages), and more of everything, so that the
    // 5-minute rates of the SLIs are not 0/0.
    for (let i = 0; i < 12; i++) await reuseCycle(email, password)
    for (let i = 0; i < 3; i++) await wrongLogin(email)

    // The scraped counters are exactly what this test sent (a fresh process counts from zero). The HTTP
    // counters move in the onResponse hook, which may run just after the client has its answer: wait for
    // a scrape that has everything.
    const scraped = async () => {
      const logins = await prometheus.query('tessera_logins_total')
      const refreshes = await prometheus.query('tessera_token_refreshes_total')
      const requests = await prometheus.query('tessera_http_requests_total{job="tessera"}')
      return {
        loginOk: value(logins, { result: 'success', reason: 'ok' }),
        loginWrong: value(logins, { result: 'failure', reason: 'wrong_password' }),
        refreshRotated: value(refreshes, { result: 'rotated' }),
        reuse: value(refreshes, { result: 'reuse_detected' }),
        loginOkHttp: value(requests, { method: 'POST', route: '/v1/auth/login', status_class: '2xx' }),
        loginWrongHttp: value(requests, { method: 'POST', route: '/v1/auth/login', status_class: '4xx' }),
        tokenOkHttp: value(requests, { method: 'POST', route: '/oauth/token', status_class: '2xx' }),
        tokenRefusedHttp: value(requests, { method: 'POST', route: '/oauth/token', status_class: '4xx' }),
        meHttp: value(requests, { method: 'GET', route: '/v1/me', status_class: '2xx' }),
        registrations: value(await prometheus.query('tessera_registrations_total'), { result: 'created' }),
        sessionRevocations: value(await prometheus.query('tessera_revocations_total'), { kind: 'session' }),
      }
    }
    const expected = {
      loginOk: sent.loginOk, loginWrong: sent.loginWrong, refreshRotated: sent.refreshRotated, reuse: sent.reuse,
      loginOkHttp: sent.loginOk, loginWrongHttp: sent.loginWrong, tokenOkHttp: sent.refreshRotated, tokenRefusedHttp: sent.reuse, meHttp: sent.me,
      registrations: 1, sessionRevocations: sent.reuse,
    }
    await waitFor('a scrape with every request of the test', async () => JSON.stringify(await scraped()) === JSON.stringify(expected), 20_000).catch(() => undefined)
    assert.deepEqual(await scraped(), expected)
    assert.ok((value(await prometheus.query('tessera_db_pool_max'), {}) ?? 0) > 0)

    // The alert, evaluated by Prometheus on the scraped data: no `for:`, so it fires at the next evaluation.
    await waitFor('TesseraRefreshTokenReuseSpike to fire', async () => {
      const alerts = await prometheus.api<{ alerts: Alert[] }>('/api/v1/alerts')
      return alerts.alerts.some((a) => a.labels.alertname === 'TesseraRefreshTokenReuseSpike' && a.state === 'firing')
    }, 20_000)
    const { alerts } = await prometheus.api<{ alerts: Alert[] }>('/api/v1/alerts')
    const reuse = alerts.find((a) => a.labels.alertname === 'TesseraRefreshTokenReuseSpike')
    assert.deepEqual({ job: reuse?.labels.job, severity: reuse?.labels.severity }, { job: 'tessera', severity: 'page' })
    // Not one 5xx was answered: no availability alert, pending or firing; the target is up.
    const unexpected = alerts.filter((a) => /^TesseraAvailability|^TesseraInstanceDown$|^TesseraAllInstancesDown$|^TesseraTargetsMissing$/.test(a.labels.alertname ?? ''))
    assert.deepEqual(unexpected, [])
  })

  it('records the SLIs from the scraped data: 0 availability errors for login and refresh, a latency ratio for login, refresh and getMe', async () => {
    const routes = (samples: Sample[]) => samples.map((s) => s.metric.route).sort()
    let availability: Sample[] = []
    let latency: Sample[] = []
    await waitFor('the SLI recording rules to produce numbers', async () => {
      availability = await prometheus.query('job_route:tessera_slo_availability_errors:ratio_rate5m{job="tessera"}')
      latency = await prometheus.query('job_route:tessera_slo_latency_slow:ratio_rate5m{job="tessera"}')
      return availability.length === 2 && latency.length === 3 && [...availability, ...latency].every((s) => Number.isFinite(Number(s.value[1])))
    }, 20_000)
    assert.deepEqual(routes(availability), ['/oauth/token', '/v1/auth/login'])
    for (const s of availability) assert.equal(Number(s.value[1]), 0, `${s.metric.route}: no request was answered with a 5xx`)
    assert.deepEqual(routes(latency), ['/oauth/token', '/v1/auth/login', '/v1/me'])
    for (const s of latency) {
      const ratio = Number(s.value[1])
      assert.ok(ratio >= 0 && ratio <= 1, `${s.metric.route}: slow ratio ${ratio}`)
    }
    const windows = ['30m', '1h', '6h', '3d', '30d']
    for (const window of windows) {
      const samples = await prometheus.query(`job_route:tessera_slo_availability_errors:ratio_rate${window}{job="tessera"}`)
      assert.deepEqual(routes(samples), ['/oauth/token', '/v1/auth/login'], `availability ${window}`)
    }
    const failures = await prometheus.query('job:tessera_login_failures:rate5m{job="tessera"}')
    assert.equal(failures.length, 1)
    assert.ok(Number(failures[0]?.value[1]) > 0)
  })

  it('evaluates every rule group of the file without an error', async () => {
    const file = parseYaml(await readFile(RULES_FILE, 'utf8')) as { groups: { name: string; rules: unknown[] }[] }
    let groups: RuleGroup[] = []
    // A rule's health is "unknown" until its group's first evaluation (every second here).
    await waitFor('every rule to be evaluated', async () => {
      groups = (await prometheus.api<{ groups: RuleGroup[] }>('/api/v1/rules')).groups
      return groups.length === file.groups.length && groups.every((g) => g.rules.every((r) => r.health !== 'unknown'))
    }, 20_000)
    assert.deepEqual(groups.map((g) => g.name).sort(), file.groups.map((g) => g.name).sort())
    for (const group of groups) {
      assert.equal(group.rules.length, file.groups.find((g) => g.name === group.name)?.rules.length, group.name)
      for (const rule of group.rules) assert.deepEqual({ rule: rule.name, health: rule.health, lastError: rule.lastError ?? '' }, { rule: rule.name, health: 'ok', lastError: '' })
    }
    console.log(`# prometheus: ${groups.reduce((n, g) => n + g.rules.length, 0)} rules in ${groups.length} groups evaluated on scraped data, no errors`)
  })

  it('evaluates every alert expression with promtool against the scraped data: the reuse alert matches, the availability, security, email and instance ones do not', async () => {
    const file = parseYaml(await readFile(RULES_FILE, 'utf8')) as { groups: { rules: { alert?: string; expr: string }[] }[] }
    const matching: string[] = []
    for (const rule of file.groups.flatMap((g) => g.rules).filter((r) => r.alert !== undefined)) {
      const run = promtool(['query', 'instant', '-o', 'json', prometheus.url, rule.expr])
      assert.equal(run.status, 0, `${rule.alert}: ${run.output}`)
      const result = JSON.parse(run.output) as Sample[] | { metric: Record<string, string> }[]
      if (result.length > 0) matching.push(rule.alert ?? '')
      if (rule.alert === 'TesseraRefreshTokenReuseSpike') {
        assert.deepEqual(result.map((s) => s.metric), [{ job: 'tessera' }])
        assert.ok(Number((result[0] as Sample).value[1]) > 10)
      }
    }
    // No 5xx, no email, no lockouts or refusals, one healthy instance: of the alerts that do not depend on
    // this machine's speed, only the reuse burst matches. (Latency, event-loop lag and a waiting pool
    // depend on how loaded the machine is: not asserted.)
    const timing = /^(TesseraLatencyBudgetBurn|TesseraEventLoopLagHigh|TesseraDbPoolSaturated)/
    assert.deepEqual(matching.filter((a) => !timing.test(a)), ['TesseraRefreshTokenReuseSpike'])
  })

  it('runs every Prometheus query of the Grafana dashboard on the scraped data without an error', async () => {
    interface Panel { title?: string; type?: string; targets?: { expr?: string; datasource?: { type?: string } }[]; panels?: Panel[] }
    const dashboard = JSON.parse(await readFile(path.join(repoRoot, 'deploy/observability/grafana/dashboards/tessera.json'), 'utf8')) as { panels: Panel[] }
    const flat = (panels: Panel[]): Panel[] => panels.flatMap((p) => [p, ...flat(p.panels ?? [])])
    const queries = flat(dashboard.panels).flatMap((p) => (p.targets ?? []).filter((t) => t.datasource?.type === 'prometheus').map((t) => ({ title: p.title ?? '', expr: t.expr ?? '' })))
    // Grafana's variables, as Grafana would substitute them for this one target.
    const substitute = (expr: string) => expr.replaceAll('$job', 'tessera').replaceAll('$instance', metricsTarget.replaceAll('.', '\\\\.')).replaceAll('$__rate_interval', '1m')
    let withData = 0
    for (const { title, expr } of queries) {
      const samples = await prometheus.query(substitute(expr)).catch((err: unknown) => assert.fail(`${title}: ${expr}\n${String(err)}`))
      if (samples.length > 0) withData++
    }
    const logins = queries.find((q) => q.title === 'Logins by result and reason')
    assert.ok(logins !== undefined && (await prometheus.query(substitute(logins.expr))).length >= 2)
    console.log(`# dashboard: ${queries.length} Prometheus queries ran on scraped data without an error, ${withData} returned series (the others read series that only events this test does not cause create)`)
  })

  it('exports metrics that pass promtool check metrics (but for three prom-client default gauges)', async () => {
    const text = await (await fetch(`http://${metricsTarget}/metrics`)).text()
    const run = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 30_000 })
    // prom-client's default metrics name three gauges `…_total`, which the linter reserves for counters;
    // the names are prom-client's (standard Node.js dashboards use them), not ours to change.
    const known = /^nodejs_active_(handles|requests|resources)_total non-counter metrics should not have "_total" suffix$/
    const problems = `${run.stdout}\n${run.stderr}`.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !known.test(l))
    assert.deepEqual(problems, [])
  })
})
