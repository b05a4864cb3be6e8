/**
 * OpenTelemetry tracing (docs/tracing.md).
 *
 * In this process: the SDK started by `startTracing` (the production set-up) on an in-memory exporter,
 * then the real app on a real socket — the HTTP instrumentation sees real requests only, never
 * `app.inject`. A login carrying a W3C `traceparent` yields a server span that continues that trace,
 * named after the route template, with the Fastify request span, the PostgreSQL queries, the password
 * verification (and, where redis-server exists, the rate limiter's Redis commands) under it; the
 * request's log line carries its trace id; no span carries the email, the password or a query value.
 * A job attempt is a trace of its own (pg-boss's `process` span) with the delivery's queries under it;
 * a failed attempt's span is marked failed, without the error's message.
 *
 * In child processes: with no OTEL_* variable the real entry (`node src/cli.ts serve`) loads nothing of
 * the SDK; with an OTLP endpoint it exports the request's spans over OTLP/HTTP to a collector stub.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { Writable } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import { SpanKind, SpanStatusCode } from '@opentelemetry/api'
import { InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace'
import type { FastifyInstance } from 'fastify'
import type pg from 'pg'
import type { Deps } from '../../src/deps.ts'
import { createLogger } from '../../src/logger.ts'
import { startTracing, shutdownTracing, tracingRequested } from '../../src/observability/tracing.ts'
import type * as AppHelpers from '../helpers/app.ts'
import type { TestDatabase } from '../helpers/db.ts'
import type { ServerProcess } from '../helpers/process.ts'
import { redisAvailable, startTestRedis, type TestRedis } from '../helpers/redis.ts'

const PASSWORD = 'correct horse battery staple'

function hex(bytes: number): string {
  return randomBytes(bytes).toString('hex')
}

async function until<T>(what: string, probe: () => T | undefined, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = probe()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

describe('tracing rule: off unless OTEL_* configure it', () => {
  it('starts only with an OTLP endpoint or a traces exporter other than none, and never with OTEL_SDK_DISABLED=true', () => {
    const cases: Array<[NodeJS.ProcessEnv, boolean]> = [
      [{}, false],
      [{ OTEL_SERVICE_NAME: 'tessera-eu' }, false],
      [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }, true],
      [{ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://collector:4318/v1/traces' }, true],
      [{ OTEL_EXPORTER_OTLP_ENDPOINT: '  ' }, false],
      [{ OTEL_TRACES_EXPORTER: 'otlp' }, true],
      [{ OTEL_TRACES_EXPORTER: 'console' }, true],
      [{ OTEL_TRACES_EXPORTER: 'none' }, false],
      [{ OTEL_TRACES_EXPORTER: 'none', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }, false],
      [{ OTEL_SDK_DISABLED: 'true', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }, false],
      [{ OTEL_SDK_DISABLED: 'TRUE', OTEL_TRACES_EXPORTER: 'otlp' }, false],
      [{ OTEL_SDK_DISABLED: 'false', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }, true],
    ]
    for (const [env, expected] of cases) assert.equal(tracingRequested(env), expected, JSON.stringify(env))
  })
})

const redis = redisAvailable()
if (!redis.ok) console.log(`# NOTICE: ${redis.reason}`)

describe('tracing with an in-memory exporter', () => {
  const exporter = new InMemorySpanExporter()
  const logLines: Array<Record<string, unknown>> = []
  let db: TestDatabase
  let deps: Deps
  let app: FastifyInstance
  let sql: pg.Pool
  let redisServer: TestRedis | undefined
  let baseUrl: string
  let helpers: typeof AppHelpers
  const email = `traced.${hex(4)}@example.com`

  before(async () => {
    await startTracing({ spanProcessors: [new SimpleSpanProcessor({ exporter })] })
    // Loaded only now: the instrumentations patch pg, ioredis, node:http and Fastify as they load.
    const [{ buildApp }, { createDeps }, { createOperatorAccount }, { systemClock }, dbHelpers] = await Promise.all([
      import('../../src/app.ts'), import('../../src/deps.ts'), import('../../src/admin/admin.service.ts'),
      import('../../src/clock.ts'), import('../helpers/db.ts'),
    ])
    helpers = await import('../helpers/app.ts')
    redisServer = redis.ok ? await startTestRedis() : undefined
    db = await dbHelpers.createTestDatabase()
    sql = dbHelpers.testPool(db.url)
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString('utf8').split('\n')) if (line.trim() !== '') logLines.push(JSON.parse(line) as Record<string, unknown>)
        done()
      },
    })
    const config = helpers.testConfig(db.url, redisServer === undefined ? {} : { REDIS_URL: redisServer.url })
    deps = await createDeps(config, { logger: createLogger('info', sink) })
    await deps.start({ worker: true })
    app = await buildApp(deps)
    await app.listen({ host: '127.0.0.1', port: 0 })
    baseUrl = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
    // An active, verified account without any email (so no job runs before the job test).
    await createOperatorAccount({ db: deps.db, clock: systemClock, hasher: deps.hasher, policy: config.passwords }, { email, password: PASSWORD, roles: [] }, 'test')
  })
  after(async () => {
    await app.close()
    await deps.close()
    await sql.end()
    await db.drop()
    await redisServer?.stop()
    await shutdownTracing()
  })

  /** Sends one request over the socket as the continuation of a fresh upstream trace. */
  async function tracedRequest(method: string, path: string, body?: object): Promise<{ traceId: string; parentId: string; status: number; server: ReadableSpan; spans: ReadableSpan[] }> {
    const traceId = hex(16)
    const parentId = hex(8)
    exporter.reset()
    const res = await fetch(`${baseUrl}${path}`, {
      method,
      headers: { traceparent: `00-${traceId}-${parentId}-01`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    })
    await res.arrayBuffer()
    // The server span ends when the response has been written; the client may see it a moment before.
    const server = await until('the server span', () => exporter.getFinishedSpans().find((s) => s.kind === SpanKind.SERVER && s.spanContext().traceId === traceId))
    return { traceId, parentId, status: res.status, server, spans: exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId) }
  }

  /** Whether `span` sits below `ancestor` in `spans`. */
  function under(span: ReadableSpan, ancestor: ReadableSpan, spans: ReadableSpan[]): boolean {
    const byId = new Map(spans.map((s) => [s.spanContext().spanId, s]))
    for (let parent = span.parentSpanContext?.spanId; parent !== undefined; parent = byId.get(parent)?.parentSpanContext?.spanId) {
      if (parent === ancestor.spanContext().spanId) return true
    }
    return false
  }

  function attributeValues(spans: ReadableSpan[]): string[] {
    return spans.flatMap((s) => Object.values(s.attributes).map((v) => JSON.stringify(v)))
  }

  it('continues the caller\'s trace: server span named after the route, the request span, the queries and the password verification under it', async () => {
    const { traceId, parentId, status, server, spans } = await tracedRequest('POST', '/v1/auth/login', { email, password: PASSWORD })
    assert.equal(status, 200)

    assert.equal(server.parentSpanContext?.spanId, parentId, 'the server span is a child of the traceparent span')
    assert.equal(server.name, 'POST /v1/auth/login')
    assert.equal(server.attributes['http.route'], '/v1/auth/login')
    assert.equal(server.attributes['http.response.status_code'], 200)

    const request = spans.find((s) => s.name === 'request' && s.instrumentationScope.name === '@fastify/otel')
    assert.ok(request, `a Fastify request span among ${spans.map((s) => s.name).join(', ')}`)
    assert.equal(request.parentSpanContext?.spanId, server.spanContext().spanId)

    const queries = spans.filter((s) => s.name.startsWith('pg.query'))
    assert.ok(queries.length >= 3, `the login's queries are traced (${queries.length})`)
    for (const q of queries) assert.ok(under(q, server, spans), `${q.name} is under the server span`)
    assert.ok(queries.some((q) => String(q.attributes['db.query.text'] ?? q.attributes['db.statement']).includes('accounts')), 'the SQL text is recorded')

    const verify = spans.filter((s) => s.name === 'password.verify')
    assert.equal(verify.length, 1)
    assert.ok(under(verify[0] as ReadableSpan, server, spans), 'password.verify is under the server span')
    assert.equal(verify[0]?.instrumentationScope.name, 'tessera')

    // Nothing personal or secret in any attribute: SQL parameters, bodies and headers are never recorded.
    for (const value of attributeValues(spans)) {
      assert.ok(!value.includes(email) && !value.includes(PASSWORD), `no email or password in ${value}`)
    }
    console.log(`# one login: ${spans.length} spans (${queries.length} queries) in trace ${traceId}`)
  })

  it('writes the trace id and a span id of the request into its log line', async () => {
    const before = logLines.length
    const { traceId, spans } = await tracedRequest('POST', '/v1/auth/login', { email, password: 'not the password at all' })
    const line = await until('the request log line', () => logLines.slice(before).find((l) => l.msg === 'request' && l.route === '/v1/auth/login'))
    assert.equal(line.status, 401)
    assert.equal(line.trace_id, traceId)
    assert.ok(spans.some((s) => s.spanContext().spanId === line.span_id), 'span_id names one of the request\'s spans')
    // Lines outside any request carry no trace fields.
    const outside = createLoggerLine()
    assert.equal(outside.trace_id, undefined)
  })

  it('records no query value (one-time tokens travel in link queries) and no probe', async () => {
    const token = hex(24)
    const { spans, server } = await tracedRequest('GET', `/verify-email?token=${token}`)
    assert.equal(server.attributes['url.query'], 'token=REDACTED')
    for (const value of attributeValues(spans)) assert.ok(!value.includes(token), `no token in ${value}`)

    exporter.reset()
    await (await fetch(`${baseUrl}/livez`, { headers: { traceparent: `00-${hex(16)}-${hex(8)}-01` } })).arrayBuffer()
    await (await fetch(`${baseUrl}/v1/nothing-here`)).arrayBuffer()
    await until('the unmatched request span', () => exporter.getFinishedSpans().find((s) => s.kind === SpanKind.SERVER))
    assert.deepEqual(exporter.getFinishedSpans().filter((s) => s.attributes['url.path'] === '/livez'), [], 'probes are not traced')
  })

  it('traces the rate limiter\'s Redis commands under the request, by command name only', { skip: !redis.ok }, async () => {
    const { server, spans } = await tracedRequest('POST', '/v1/auth/login', { email, password: PASSWORD })
    const commands = spans.filter((s) => s.instrumentationScope.name.includes('ioredis'))
    assert.ok(commands.length > 0, `Redis spans among ${spans.map((s) => s.name).join(', ')}`)
    for (const c of commands) {
      assert.ok(under(c, server, spans), `${c.name} is under the server span`)
      const statement = JSON.stringify(c.attributes['db.query.text'] ?? c.attributes['db.statement'] ?? '')
      assert.match(statement, /^"[a-z]*"$/i, 'the command name only')
    }
  })

  it('traces a job attempt (pg-boss\'s process span) in the trace of the request that queued it, with the delivery\'s queries under it', async () => {
    const address = `job.${hex(4)}@example.com`
    const { spans: requestSpans, server } = await tracedRequest('POST', '/v1/accounts', { email: address, password: PASSWORD })
    const send = requestSpans.find((s) => s.name === 'send email')
    assert.ok(send, `pg-boss's send span among ${requestSpans.map((s) => s.name).join(', ')}`)
    assert.equal(send.kind, SpanKind.PRODUCER)
    assert.ok(under(send, server, requestSpans), 'the enqueue is under the request')

    const jobId = send.attributes['messaging.message.id']
    const job = await until('the job span', () => exporter.getFinishedSpans().find((s) => s.name === 'process email' && s.attributes['messaging.message.id'] === jobId))
    assert.equal(job.kind, SpanKind.CONSUMER)
    assert.equal(job.instrumentationScope.name, 'pg-boss')
    // The job stores the trace context of its enqueue (pg-boss propagateContext): the attempt continues it.
    assert.equal(job.spanContext().traceId, server.spanContext().traceId, 'the attempt joins the request\'s trace')
    assert.equal(job.parentSpanContext?.spanId, send.spanContext().spanId, 'under the enqueue')
    assert.equal(job.attributes['pgboss.job.retry_count'], 0, 'the first attempt')
    const spans = exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === job.spanContext().traceId)
    assert.ok(spans.some((s) => s.name.startsWith('pg.query') && under(s, job, spans)), `the delivery's queries are under the job span: ${spans.map((s) => s.name).join(', ')}`)
    for (const value of attributeValues([...spans, ...requestSpans])) assert.ok(!value.includes(address), `no address in ${value}`)
    const { rows } = await sql.query<{ delivered: boolean }>('SELECT delivered_at IS NOT NULL AS delivered FROM email_messages m JOIN mail_outbox o ON o.message_id = m.id WHERE o.recipient = $1', [address])
    assert.deepEqual(rows, [{ delivered: true }], 'the attempt delivered the message')
  })
  it('marks a failed attempt\'s span failed, with the error\'s name only (a mail server\'s answer may quote the recipient)', async () => {
    const { smtpEnv, startSmtpServer } = await import('../helpers/smtp.ts')
    const smtp = await startSmtpServer()
    const t = await helpers.createTestApp({ worker: true, env: smtpEnv(smtp) })
    const refused = helpers.uniqueEmail('refused')
    smtp.rejectRecipients.add(refused)
    try {
      exporter.reset()
      assert.equal((await helpers.register(t.app, refused)).statusCode, 202)
      const job = await until('the failed attempt', () => exporter.getFinishedSpans().find((s) => s.name === 'process email' && s.status.code === SpanStatusCode.ERROR))
      assert.equal(job.attributes['error.type'], 'PermanentJobError')
      assert.equal(job.status.message, undefined, 'no error message')
      assert.deepEqual(job.events, [], 'no exception event')
      const spans = exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === job.spanContext().traceId)
      assert.ok(spans.some((s) => s.name === 'fail email'), `pg-boss records the settlement: ${spans.map((s) => s.name).join(', ')}`)
      for (const value of attributeValues(spans)) assert.ok(!value.includes(refused), `no address in ${value}`)
      const { rows } = await t.deps.db.query<{ dead: boolean }>('SELECT dead_at IS NOT NULL AS dead FROM email_messages m JOIN accounts a ON a.id = m.account_id WHERE a.email = $1', [refused])
      assert.deepEqual(rows, [{ dead: true }], 'the refused message was dead-lettered')
    } finally {
      await t.close()
      await smtp.stop()
    }
  })
})

/** One line from a logger outside any span (the mixin must add nothing). */
function createLoggerLine(): Record<string, unknown> {
  let captured = ''
  const sink = new Writable({ write(chunk: Buffer, _enc, done) { captured += chunk.toString('utf8'); done() } })
  createLogger('info', sink).info('outside')
  return JSON.parse(captured) as Record<string, unknown>
}

describe('the real process', () => {
  it('loads nothing of the SDK with no OTEL_* variable (the @opentelemetry/api no-ops only)', async () => {
    const { runCli } = await import('../helpers/process.ts')
    // A resolve hook in the child records every module it loads; PORT=x makes `serve` stop at the
    // configuration check, after every module of the app has been imported.
    const recorder = 'data:text/javascript,' + encodeURIComponent(`
      import { registerHooks } from 'node:module'
      import { writeFileSync } from 'node:fs'
      const seen = []
      registerHooks({ resolve(specifier, context, next) { const r = next(specifier, context); seen.push(r.url); return r } })
      process.on('exit', () => writeFileSync(process.env.RECORD_TO, JSON.stringify(seen)))`)
    const dir = await mkdtemp(path.join(tmpdir(), 'tessera-tracing-'))
    let n = 0
    const run = async (env: Record<string, string>) => {
      const file = path.join(dir, `seen-${++n}.json`)
      const r = await runCli(['serve'], { ...env, NODE_OPTIONS: `--import=${recorder}`, RECORD_TO: file, PORT: 'not-a-port' }, 30_000)
      return { code: r.code, seen: JSON.parse(await readFile(file, 'utf8')) as string[] }
    }

    const off = await run({})
    assert.equal(off.code, 78, 'stopped at the configuration check')
    assert.ok(off.seen.some((u) => u.includes('/src/app.ts')), 'the app was loaded')
    assert.ok(off.seen.some((u) => u.includes('/@opentelemetry/api/')), 'the API is loaded (its calls are no-ops)')
    const sdk = off.seen.filter((u) => (u.includes('/@opentelemetry/') && !u.includes('/@opentelemetry/api/')) || /@fastify\/otel|in-the-middle/.test(u))
    assert.deepEqual(sdk, [], 'no SDK module, instrumentation or loader hook')

    // The control: the same run with an endpoint loads the SDK (so the check above can fail).
    const on = await run({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9' })
    assert.equal(on.code, 78)
    assert.ok(on.seen.some((u) => u.includes('/@opentelemetry/sdk-node/')), 'the SDK is loaded when configured')
    await rm(dir, { recursive: true, force: true })
  })

  describe('with an OTLP endpoint', () => {
    let collector: Server
    const received: unknown[] = []
    let db: TestDatabase
    let server: ServerProcess

    before(async () => {
      collector = createServer((req, res) => {
        let body = ''
        req.setEncoding('utf8').on('data', (c: string) => { body += c }).on('end', () => {
          if (req.url === '/v1/traces') received.push(JSON.parse(body))
          res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
        })
      })
      await new Promise<void>((r) => collector.listen(0, '127.0.0.1', r))
      const { createTestDatabase } = await import('../helpers/db.ts')
      const { processEnv, startServer } = await import('../helpers/process.ts')
      db = await createTestDatabase()
      server = await startServer(processEnv(db.url, {
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${(collector.address() as AddressInfo).port}`,
        OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
        OTEL_BSP_SCHEDULE_DELAY: '100',
        OTEL_SERVICE_NAME: 'tessera-e2e',
      }))
    })
    after(async () => {
      await server.kill()
      await db.drop()
      await new Promise((r) => collector.close(r))
    })

    it('exports the request\'s spans over OTLP/HTTP, continuing the incoming traceparent, and logs its trace id', async () => {
      const traceId = hex(16)
      const parentId = hex(8)
      const res = await fetch(`${server.baseUrl}/v1/accounts`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', traceparent: `00-${traceId}-${parentId}-01` },
        body: JSON.stringify({ email: `otlp.${hex(4)}@example.com`, password: PASSWORD }),
      })
      assert.equal(res.status, 202)

      interface OtlpSpan { traceId: string; spanId: string; parentSpanId?: string; name: string }
      interface OtlpBatch { resourceSpans: Array<{ resource: { attributes: Array<{ key: string; value: { stringValue?: string } }> }; scopeSpans: Array<{ spans: OtlpSpan[] }> }> }
      const spansOf = () => (received as OtlpBatch[]).flatMap((b) => b.resourceSpans.flatMap((r) => r.scopeSpans.flatMap((s) => s.spans)))
      const serverSpan = await until('the exported server span', () => spansOf().find((s) => s.traceId === traceId && s.name === 'POST /v1/accounts'))
      assert.equal(serverSpan.parentSpanId, parentId)
      const names = await until('the queries and the hash', () => {
        const inTrace = spansOf().filter((s) => s.traceId === traceId).map((s) => s.name)
        return inTrace.includes('password.hash') && inTrace.some((n) => n.startsWith('pg.query')) ? inTrace : undefined
      })
      assert.ok(names.includes('request'), names.join(', '))
      const service = (received as OtlpBatch[])[0]?.resourceSpans[0]?.resource.attributes.find((a) => a.key === 'service.name')
      assert.equal(service?.value.stringValue, 'tessera-e2e', 'OTEL_SERVICE_NAME is honoured')

      const { waitFor } = await import('../helpers/process.ts')
      await waitFor('the request log line', () => server.logLines().some((l) => l.msg === 'request' && l.trace_id === traceId))
    })
  })
})
