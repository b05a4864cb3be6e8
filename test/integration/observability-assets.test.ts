/**
 * The observability assets under deploy/observability/ against the service that exists: the Grafana
 * dashboard's structure, and every metric named by a dashboard query or a Prometheus rule is one that a
 * running Tessera exports (names from the `# TYPE` lines of its /metrics, which prom-client prints for
 * every registered metric, with or without samples). Also: the log pipeline's assumptions about
 * Tessera's log lines, its labels (bounded), and the docs that list metrics and alerts.
 *
 * Runs without Prometheus; test/e2e/prometheus.test.ts runs the rules on a real one.
 */
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { Writable } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import { parse as parseYaml } from 'yaml'
import { createLogger } from '../../src/logger.ts'
import { buildManagementApp } from '../../src/observability/management.ts'
import { createTestApp, type TestApp } from '../helpers/app.ts'
import { repoRoot } from '../helpers/process.ts'

const OBS = path.join(repoRoot, 'deploy/observability')
const read = (...parts: string[]) => readFile(path.join(...parts), 'utf8')

// --- PromQL: the metric names an expression reads ----------------------------------------------

const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'offset', 'bool', 'inf', 'nan', 'atan2'])

/**
 * Metric names read by a PromQL expression (with Grafana variables). Not a parser: strings, label
 * matchers, ranges, `by (…)`-style label lists, variables and numbers are blanked out; what remains is
 * identifiers, and those not followed by `(` (functions, aggregations) nor keywords are metric names.
 */
function metricNames(expr: string): Set<string> {
  const s = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\$\{?\w+\}?/g, ' ')
    .replace(/\boffset\s+-?\w+/g, ' ')
    .replace(/(?<![\w:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g, ' ')
  const names = new Set<string>()
  for (const m of s.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    if (/^\s*\(/.test(s.slice(m.index + m[0].length))) continue
    if (KEYWORDS.has(m[0].toLowerCase())) continue
    names.add(m[0])
  }
  return names
}

/** Metric names from a Prometheus exposition: every `# TYPE` line, histograms and summaries with their series suffixes. */
function exportedNames(exposition: string): Map<string, string> {
  const names = new Map<string, string>()
  for (const [, name = '', type = ''] of exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    names.set(name, type)
    if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.set(name + suffix, `${type} series`)
    if (type === 'summary') for (const suffix of ['_sum', '_count']) names.set(name + suffix, `${type} series`)
  }
  return names
}

// --- The assets ---------------------------------------------------------------------------------

interface Target { refId?: string; expr?: string; datasource?: { type?: string; uid?: string } }
interface Panel {
  id?: number; type?: string; title?: string
  gridPos?: { x: number; y: number; w: number; h: number }
  datasource?: { type?: string; uid?: string }
  targets?: Target[]
  panels?: Panel[]
}
interface Variable { name: string; type: string; query?: string | { query?: string }; datasource?: { type?: string; uid?: string } }
interface Dashboard { title?: string; uid?: string; schemaVersion?: number; panels?: Panel[]; templating?: { list?: Variable[] } }
interface Rule { record?: string; alert?: string; expr: string; labels?: Record<string, string> }
interface RuleFile { groups: { name: string; rules: Rule[] }[] }

const dashboard = JSON.parse(await read(OBS, 'grafana/dashboards/tessera.json')) as Dashboard
const rules = parseYaml(await read(OBS, 'prometheus/rules/tessera.rules.yml')) as RuleFile
const allRules = rules.groups.flatMap((g) => g.rules)
const recorded = new Set(allRules.flatMap((r) => (r.record === undefined ? [] : [r.record])))

function allPanels(panels: Panel[] = dashboard.panels ?? []): Panel[] {
  return panels.flatMap((p) => [p, ...allPanels(p.panels ?? [])])
}
const dataPanels = () => allPanels().filter((p) => p.type !== 'row')
const datasourceOf = (panel: Panel, target: Target) => target.datasource ?? panel.datasource
const prometheusTargets = () => dataPanels().flatMap((p) => (p.targets ?? []).filter((t) => datasourceOf(p, t)?.type === 'prometheus').map((t) => ({ panel: p.title ?? '', expr: t.expr ?? '' })))
const variableQuery = (v: Variable) => (typeof v.query === 'string' ? v.query : v.query?.query ?? '')

/** Every PromQL expression of the assets, with where it comes from. */
function allExpressions(): { where: string; expr: string }[] {
  const fromPanels = prometheusTargets().map((t) => ({ where: `dashboard panel "${t.panel}"`, expr: t.expr }))
  const fromVariables = (dashboard.templating?.list ?? []).filter((v) => v.type === 'query').map((v) => {
    // label_values(<series selector>, <label>): the label is not a metric.
    const q = variableQuery(v)
    const m = /^label_values\((.*),\s*\w+\)$/.exec(q.trim())
    return { where: `dashboard variable $${v.name}`, expr: m?.[1] ?? q }
  })
  const fromRules = allRules.map((r) => ({ where: `rule ${r.record ?? r.alert ?? '?'}`, expr: r.expr }))
  return [...fromPanels, ...fromVariables, ...fromRules]
}

describe('metricNames (the PromQL name extractor the checks below rely on)', () => {
  it('finds the metrics and skips functions, label lists, matchers, strings, ranges, numbers and variables', () => {
    assert.deepEqual([...metricNames('histogram_quantile(0.95, sum by (le, route) (rate(tessera_http_request_duration_seconds_bucket{job=~"$job", route="/v1/me"}[$__rate_interval])))')], ['tessera_http_request_duration_seconds_bucket'])
    assert.deepEqual([...metricNames('sum(rate(a_total[5m] offset 1d)) / on (job) group_left sum(b) > bool 14.4 * 0.001 or vector(0)')].sort(), ['a_total', 'b'])
    assert.deepEqual([...metricNames('job_route:x:ratio_rate1h > (6 * 0.001) and ignoring (le) up{job="tessera"} == 0 unless absent(c)')].sort(), ['c', 'job_route:x:ratio_rate1h', 'up'])
    assert.deepEqual([...metricNames('max by (job) (d) > 100 * 86400 or label_replace(e, "dst", "$1", "src", "(.*)") unless f offset 5m')].sort(), ['d', 'e', 'f'])
  })
})

describe('observability assets against a running Tessera', () => {
  let t: TestApp
  let exported: Map<string, string>

  before(async () => {
    t = await createTestApp()
    const management = await buildManagementApp(t.deps)
    try {
      const res = await management.inject({ method: 'GET', url: '/metrics' })
      assert.equal(res.statusCode, 200)
      exported = exportedNames(res.body)
    } finally {
      await management.close()
    }
  })
  after(async () => { await t?.close() })

  it('reads the exported metric names from /metrics (TYPE lines, histogram series expanded)', () => {
    assert.equal(exported.get('tessera_http_requests_total'), 'counter')
    assert.equal(exported.get('tessera_http_request_duration_seconds'), 'histogram')
    assert.ok(exported.has('tessera_http_request_duration_seconds_bucket'))
    assert.equal(exported.get('tessera_db_pool_connections'), 'gauge')
    assert.ok(exported.has('nodejs_eventloop_lag_p99_seconds'))
    // Labelled counters have no sample before their first event, yet are listed.
    assert.equal(exported.get('tessera_lockouts_total'), 'counter')
  })

  it('names, in every dashboard query and rule expression, only metrics the service exports (or recording rules of the file, or up)', () => {
    const expressions = allExpressions()
    const unknown: string[] = []
    const used = new Set<string>()
    for (const { where, expr } of expressions) {
      assert.notEqual(expr.trim(), '', `${where}: empty expression`)
      const names = metricNames(expr)
      assert.ok(names.size > 0, `${where}: no metric found in ${expr}`)
      for (const name of names) {
        used.add(name)
        if (!exported.has(name) && !recorded.has(name) && name !== 'up') unknown.push(`${where}: ${name}`)
      }
    }
    assert.deepEqual(unknown, [])
    const raw = [...used].filter((n) => !recorded.has(n))
    console.log(`# observability assets: ${expressions.length} PromQL expressions, ${raw.length} distinct exported metrics, ${[...used].filter((n) => recorded.has(n)).length} recording rules — all exported or defined`)
  })

  it('shows every tessera_* metric the service exports on the dashboard', () => {
    const shown = new Set(prometheusTargets().flatMap((t) => [...metricNames(t.expr)]))
    const base = (n: string) => n.replace(/_(bucket|sum|count)$/, '')
    const shownBases = new Set([...shown].map(base))
    const missing = [...exported].filter(([name, type]) => name.startsWith('tessera_') && !type.endsWith(' series') && !shown.has(name) && !shownBases.has(name)).map(([n]) => n)
    assert.deepEqual(missing, [], 'exported but on no dashboard panel')
  })

  it('lists every exported tessera_* metric in the reference of docs/observability.md', async () => {
    const doc = await read(repoRoot, 'docs/observability.md')
    const missing = [...exported].filter(([name, type]) => name.startsWith('tessera_') && !type.endsWith(' series') && !doc.includes(`\`${name}\``)).map(([n]) => n)
    assert.deepEqual(missing, [])
  })
})

describe('the Grafana dashboard', () => {
  it('has a title, a stable uid, a datasource variable for Prometheus (and Loki), and job and instance variables', () => {
    assert.equal(dashboard.title, 'Tessera')
    assert.equal(dashboard.uid, 'tessera-overview')
    assert.ok((dashboard.schemaVersion ?? 0) >= 36)
    const vars = new Map((dashboard.templating?.list ?? []).map((v) => [v.name, v]))
    assert.deepEqual({ type: vars.get('datasource')?.type, query: vars.get('datasource')?.query }, { type: 'datasource', query: 'prometheus' })
    assert.deepEqual({ type: vars.get('loki_datasource')?.type, query: vars.get('loki_datasource')?.query }, { type: 'datasource', query: 'loki' })
    for (const name of ['job', 'instance']) {
      const v = vars.get(name)
      assert.equal(v?.type, 'query', name)
      assert.equal(v?.datasource?.uid, '${datasource}', name)
      assert.match(variableQuery(v), /^label_values\(/)
    }
    // No data source is hard-wired anywhere: a provisioned dashboard works whatever the data sources are called.
    const uids = new Set<string>()
    const walk = (node: unknown): void => {
      if (Array.isArray(node)) { node.forEach(walk); return }
      if (node === null || typeof node !== 'object') return
      for (const [key, child] of Object.entries(node)) {
        if (key === 'datasource' && child !== null && typeof child === 'object') uids.add(String((child as { uid?: unknown }).uid))
        walk(child)
      }
    }
    walk(dashboard)
    assert.deepEqual([...uids].sort(), ['${datasource}', '${loki_datasource}', '-- Grafana --'])
  })

  it('has unique panel ids, and panels placed on the 24-column grid without overlapping', () => {
    const panels = allPanels()
    const ids = panels.map((p) => p.id)
    assert.ok(ids.every((id) => Number.isInteger(id)), 'every panel has an integer id')
    assert.equal(new Set(ids).size, ids.length, 'panel ids are unique')
    const boxes = panels.map((p) => ({ title: p.title, ...p.gridPos }))
    for (const b of boxes) {
      assert.ok(b.x !== undefined && b.y !== undefined && b.w !== undefined && b.h !== undefined, `${b.title}: gridPos`)
      assert.ok(b.x >= 0 && b.w > 0 && b.x + b.w <= 24 && b.h > 0, `${b.title}: inside the grid`)
    }
    for (const [i, a] of boxes.entries()) {
      for (const b of boxes.slice(i + 1)) {
        const overlap = a.x! < b.x! + b.w! && b.x! < a.x! + a.w! && a.y! < b.y! + b.h! && b.y! < a.y! + a.h!
        assert.ok(!overlap, `"${a.title}" and "${b.title}" overlap`)
      }
    }
  })

  it('has, in every data panel, targets with unique refIds and non-empty queries on a variable data source', () => {
    const panels = dataPanels()
    assert.ok(panels.length >= 30, `${panels.length} panels`)
    for (const p of panels) {
      const targets = p.targets ?? []
      assert.ok(targets.length > 0, `${p.title}: no target`)
      assert.equal(new Set(targets.map((t) => t.refId)).size, targets.length, `${p.title}: refIds`)
      for (const t of targets) {
        assert.ok((t.expr ?? '').trim().length > 0, `${p.title}: empty expr`)
        assert.ok(['${datasource}', '${loki_datasource}'].includes(datasourceOf(p, t)?.uid ?? ''), `${p.title}: data source ${JSON.stringify(datasourceOf(p, t))}`)
      }
    }
  })

  it('filters every Prometheus query by $job, and every query on raw metrics by $instance too', () => {
    for (const { panel, expr } of prometheusTargets()) {
      assert.match(expr, /job=~"\$job"/, `${panel}: ${expr}`)
      const raw = [...metricNames(expr)].filter((n) => !recorded.has(n))
      if (raw.length > 0) assert.match(expr, /instance=~"\$instance"/, `${panel}: ${expr}`)
      // Counters are always read through rate/increase over Grafana's rate interval.
      if (/_total\b|_bucket\b|_sum\b/.test(expr.replace(/\{[^}]*\}/g, ''))) assert.match(expr, /\[\$__rate_interval\]/, `${panel}: ${expr}`)
    }
  })

  it('has panels for what the issue asks: traffic, errors, latency percentiles, logins, lockouts, rate limits, refresh reuse, email, pool, event loop', () => {
    const exprs = prometheusTargets().map((t) => t.expr).join('\n')
    for (const needle of ['tessera_http_requests_total', 'status_class="5xx"', 'histogram_quantile(0.5,', 'histogram_quantile(0.95,', 'histogram_quantile(0.99,',
      'tessera_logins_total', 'tessera_lockouts_total', 'tessera_rate_limited_total', 'result="reuse_detected"', 'tessera_email_queue_depth',
      'tessera_email_oldest_pending_seconds', 'tessera_email_dead_letters', 'tessera_email_delivery_attempts_total', 'tessera_db_pool_connections',
      'tessera_password_hash_queue', 'nodejs_eventloop_lag_p99_seconds', 'nodejs_heap_size_used_bytes', 'nodejs_gc_duration_seconds_sum',
      'tessera_redis_up', 'tessera_revocation_propagation_seconds_bucket', 'tessera_signing_key_age_seconds']) {
      assert.ok(exprs.includes(needle), needle)
    }
  })

  it('is provisioned from the path the provisioning file names, with Prometheus and Loki data sources', async () => {
    const provider = parseYaml(await read(OBS, 'grafana/provisioning/dashboards/tessera.yaml')) as { apiVersion: number; providers: { type: string; options: { path: string } }[] }
    assert.equal(provider.apiVersion, 1)
    assert.equal(provider.providers[0]?.type, 'file')
    assert.match(provider.providers[0]?.options.path ?? '', /^\//)
    const sources = parseYaml(await read(OBS, 'grafana/provisioning/datasources/tessera.yaml')) as { datasources: { type: string; url: string }[] }
    assert.deepEqual(sources.datasources.map((d) => d.type).sort(), ['loki', 'prometheus'])
  })
})

describe('the Prometheus rules', () => {
  it('define each recording rule once, and use only recording rules defined in the file (earlier in their own group)', () => {
    const names = allRules.flatMap((r) => (r.record === undefined ? [] : [r.record]))
    assert.equal(new Set(names).size, names.length)
    for (const name of names) assert.match(name, /^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$/, `${name}: level:metric:operation`)
    // A group evaluates its rules in order: a rule reading a later rule of its group would read the
    // previous evaluation's value.
    for (const group of rules.groups) {
      const later = new Set(group.rules.flatMap((r) => (r.record === undefined ? [] : [r.record])))
      for (const rule of group.rules) {
        if (rule.record !== undefined) later.delete(rule.record)
        for (const name of metricNames(rule.expr)) {
          if (!name.includes(':')) continue
          assert.ok(recorded.has(name), `${rule.record ?? rule.alert}: ${name} is not defined`)
          assert.ok(!later.has(name), `${rule.record ?? rule.alert}: ${name} is defined later in ${group.name}`)
        }
      }
    }
    const alerts = allRules.flatMap((r) => (r.alert === undefined ? [] : [r.alert]))
    assert.equal(new Set(alerts).size, alerts.length)
  })

  it('give every alert a severity (page or ticket), a summary, a description and a runbook section that exists in docs/slo.md', async () => {
    const slo = await read(repoRoot, 'docs/slo.md')
    const anchors = new Set([...slo.matchAll(/^#+ (.+)$/gm)].map(([, heading = '']) => heading.toLowerCase().replace(/[^a-z0-9 -]/g, '').replace(/ /g, '-')))
    for (const group of rules.groups) {
      for (const rule of group.rules.filter((r) => r.alert !== undefined) as (Rule & { annotations?: Record<string, string> })[]) {
        assert.ok(['page', 'ticket'].includes(rule.labels?.severity ?? ''), `${rule.alert}: severity`)
        assert.ok(rule.annotations?.summary && rule.annotations.description, `${rule.alert}: summary and description`)
        const anchor = /^docs\/slo\.md#(.+)$/.exec(rule.annotations.runbook ?? '')?.[1]
        assert.ok(anchor !== undefined && anchors.has(anchor), `${rule.alert}: runbook ${rule.annotations.runbook} is a section of docs/slo.md`)
        assert.ok(slo.includes(`\`${rule.alert}\``), `${rule.alert} is in docs/slo.md`)
      }
    }
  })
})

describe('the log pipeline (Grafana Alloy to Loki)', () => {
  const alloyPath = path.join(OBS, 'alloy/tessera.alloy')

  /** The keys of `values = { … }` (or `expressions = { … }`) in the first `<block> { … }` of the Alloy file. */
  function blockKeys(alloy: string, block: string): string[] {
    const start = alloy.indexOf(`${block} {`)
    assert.notEqual(start, -1, `${block} block`)
    const body = /(?:values|expressions)\s*=\s*\{([^}]*)\}/.exec(alloy.slice(start))?.[1] ?? ''
    return [...body.matchAll(/^\s*(\w+)\s*=/gm)].map(([, k = '']) => k)
  }

  it('parses the fields Tessera writes: a JSON line with a string level, an RFC 3339 time, service and msg', async () => {
    let out = ''
    const sink = new Writable({ write(chunk: Buffer, _enc, done) { out += chunk.toString('utf8'); done() } })
    const logger = createLogger('info', sink)
    logger.info({ route: '/v1/auth/login', status: 200, duration_ms: 1.5 }, 'request')
    await new Promise((r) => setImmediate(r))
    const line = JSON.parse(out.trim().split('\n')[0] ?? '{}') as Record<string, unknown>
    assert.equal(line.level, 'info')
    assert.equal(line.service, 'tessera')
    assert.equal(line.msg, 'request')
    assert.match(String(line.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/)
    const alloy = await readFile(alloyPath, 'utf8')
    const extracted = blockKeys(alloy, 'stage.json')
    for (const field of ['level', 'time', 'service', 'msg', 'request_id', 'trace_id']) assert.ok(extracted.includes(field), field)
    assert.match(alloy, /stage\.timestamp \{\s*source = "time"\s*format\s*= "RFC3339Nano"/)
  })

  it('labels streams only with bounded values, and keeps request and trace ids as structured metadata', async () => {
    const alloy = await readFile(alloyPath, 'utf8')
    const labels = blockKeys(alloy, 'stage.labels')
    assert.deepEqual(labels.sort(), ['level', 'log_type', 'service'])
    const relabelled = [...alloy.matchAll(/target_label\s*=\s*"(\w+)"/g)].map(([, l]) => l).sort()
    assert.deepEqual(relabelled, ['instance', 'unit'])
    for (const unbounded of ['request_id', 'trace_id', 'span_id', 'account_id', 'ip', 'route', 'status', 'msg']) {
      assert.ok(!labels.includes(unbounded) && !relabelled.includes(unbounded), `${unbounded} must never be a label`)
    }
    assert.deepEqual(blockKeys(alloy, 'stage.structured_metadata').sort(), ['request_id', 'span_id', 'trace_id'])
  })

  it('queries Loki (dashboard and retention) only by labels the shipper sets, with structured metadata enabled', async () => {
    // `job` is added by Alloy's journal source (its component name).
    const shipperLabels = new Set(['service', 'level', 'log_type', 'instance', 'unit', 'job'])
    const loki = parseYaml(await read(OBS, 'loki/loki.yaml')) as {
      schema_config: { configs: { store: string; schema: string }[] }
      limits_config: { allow_structured_metadata: boolean; retention_period: string; retention_stream: { selector: string; period: string }[] }
      compactor: { retention_enabled: boolean }
    }
    const latest = loki.schema_config.configs.at(-1)
    assert.deepEqual({ store: latest?.store, schema: latest?.schema }, { store: 'tsdb', schema: 'v13' })
    assert.equal(loki.limits_config.allow_structured_metadata, true)
    assert.equal(loki.compactor.retention_enabled, true)
    const selectors = [
      ...loki.limits_config.retention_stream.map((r) => r.selector),
      ...dataPanels().flatMap((p) => (p.targets ?? []).filter((t) => datasourceOf(p, t)?.type === 'loki').map((t) => t.expr ?? '')),
    ]
    assert.ok(selectors.length >= 2)
    for (const selector of selectors) {
      const used = [...(/\{([^}]*)\}/.exec(selector)?.[1] ?? '').matchAll(/(\w+)\s*(?:=~|!=|!~|=)/g)].map(([, l = '']) => l)
      assert.ok(used.length > 0, selector)
      for (const label of used) assert.ok(shipperLabels.has(label), `${selector}: ${label} is not a label the shipper sets`)
    }
    // The audit copy is kept at least as long as Tessera keeps audit events by default (400 days).
    const audit = loki.limits_config.retention_stream.find((r) => r.selector.includes('log_type="audit"'))
    assert.ok(audit !== undefined && Number.parseInt(audit.period, 10) >= 400 * 24)
  })
})
