/**
 * End-to-end: the real `tessera` process (`node src/cli.ts serve|migrate`) on a real PostgreSQL,
 * spoken to over HTTP on a real socket.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { Agent, request as httpRequest } from 'node:http'
import { createConnection } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose'
import pg from 'pg'
import { readMigrations } from '../../src/db/migrator.ts'
import { uniqueEmail } from '../helpers/app.ts'
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts'
import { processEnv, runCli, type ServerProcess, startServer, verifyByEmail, waitFor } from '../helpers/process.ts'

const PUBLIC_URL = 'http://tessera.e2e'

interface Tokens {
  access_token: string
  refresh_token: string
  expires_in: number
  token_type: string
}

function newPassword(): string {
  return `e2e horse battery ${randomBytes(8).toString('hex')}`
}

function serverEnv(db: TestDatabase, env: Record<string, string> = {}): Record<string, string> {
  return processEnv(db.url, {
    TESSERA_PUBLIC_URL: PUBLIC_URL,
    ...env,
  })
}

function client(base: string) {
  return {
    json(path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
      return fetch(new URL(path, base), { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
    },
    form(path: string, fields: Record<string, string>, headers: Record<string, string> = {}): Promise<Response> {
      return fetch(new URL(path, base), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: new URLSearchParams(fields).toString() })
    },
    get(path: string, headers: Record<string, string> = {}): Promise<Response> {
      return fetch(new URL(path, base), { headers })
    },
    post(path: string, headers: Record<string, string> = {}): Promise<Response> {
      return fetch(new URL(path, base), { method: 'POST', headers })
    },
  }
}

/** Whether a fresh TCP connection to the server's port is accepted (false once the listener is closed). */
function acceptsConnections(base: string): Promise<boolean> {
  const { hostname, port } = new URL(base)
  return new Promise((resolve) => {
    const socket = createConnection({ host: hostname, port: Number(port) })
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => resolve(false))
  })
}

/**
 * POSTs `body` on a fresh keep-alive connection (as fetch, browsers and proxies use), sending only its
 * first bytes until `sendRest()` is called. Resolves with status 0 and the error when the connection fails.
 */
function slowPost(base: string, route: string, body: string): { sendRest(): void; response: Promise<{ status: number; body: string; error?: string }>; agent: Agent } {
  const { hostname, port } = new URL(base)
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  const req = httpRequest({
    host: hostname, port: Number(port), path: route, method: 'POST', agent,
    headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
  })
  const response = new Promise<{ status: number; body: string; error?: string }>((resolve) => {
    req.once('response', (res) => {
      let text = ''
      res.setEncoding('utf8').on('data', (chunk: string) => { text += chunk })
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body: text }))
      res.once('error', (err) => resolve({ status: 0, body: text, error: String(err) }))
    })
    req.once('error', (err) => resolve({ status: 0, body: '', error: String(err) }))
  })
  req.write(body.slice(0, 10))
  return { sendRest: () => { req.end(body.slice(10)) }, response, agent }
}

function bearer(token: string): { authorization: string } {
  return { authorization: `Bearer ${token}` }
}

describe('tessera serve over HTTP', () => {
  let db: TestDatabase
  let server: ServerProcess
  let http: ReturnType<typeof client>
  /** Every credential this file sends; the log check below greps the whole log for each. */
  const secrets = new Set<string>()

  async function signUp(password = newPassword()): Promise<Tokens & { email: string; password: string }> {
    const email = uniqueEmail('e2e')
    secrets.add(password)
    const reg = await http.json('/v1/accounts', { email, password })
    assert.equal(reg.status, 202, await reg.clone().text())
    await verifyByEmail(db.url, server.baseUrl, email)
    const res = await http.json('/v1/auth/login', { email, password })
    assert.equal(res.status, 200, await res.clone().text())
    const tokens = await res.json() as Tokens
    secrets.add(tokens.access_token).add(tokens.refresh_token).add(`Bearer ${tokens.access_token}`)
    return { ...tokens, email, password }
  }

  before(async () => {
    db = await createTestDatabase()
    server = await startServer(serverEnv(db))
    http = client(server.baseUrl)
  })
  after(async () => {
    await server?.kill()
    await db?.drop()
  })

  it('walks through register, login, /v1/me, refresh, logout over a real socket', async () => {
    const email = uniqueEmail('walkthrough')
    const password = newPassword()
    secrets.add(password)

    const reg = await http.json('/v1/accounts', { email, password, display_name: 'Ada' })
    assert.equal(reg.status, 202)
    assert.equal((await reg.json() as { status: string }).status, 'accepted')
    await verifyByEmail(db.url, server.baseUrl, email)

    const login = await http.json('/v1/auth/login', { email, password })
    assert.equal(login.status, 200)
    assert.equal(login.headers.get('cache-control'), 'no-store')
    assert.match(login.headers.get('content-type') ?? '', /^application\/json/)
    const first = await login.json() as Tokens
    secrets.add(first.access_token).add(first.refresh_token).add(`Bearer ${first.access_token}`)
    assert.equal(first.token_type, 'Bearer')
    assert.equal(typeof first.expires_in, 'number')
    assert.equal(first.access_token.split('.').length, 3)
    assert.match(first.refresh_token, /^tsr_/)

    const me = await http.get('/v1/me', bearer(first.access_token))
    assert.equal(me.status, 200)
    const account = await me.json() as { email: string; display_name: string | null; last_login_ip: string | null }
    assert.equal(account.email, email)
    assert.equal(account.display_name, 'Ada')
    assert.equal(account.last_login_ip, '127.0.0.1')

    const refreshed = await http.form('/oauth/token', { grant_type: 'refresh_token', refresh_token: first.refresh_token })
    assert.equal(refreshed.status, 200)
    assert.equal(refreshed.headers.get('cache-control'), 'no-store')
    const second = await refreshed.json() as Tokens
    secrets.add(second.access_token).add(second.refresh_token).add(`Bearer ${second.access_token}`)
    assert.notEqual(second.refresh_token, first.refresh_token)
    assert.notEqual(second.access_token, first.access_token)
    assert.equal((await http.get('/v1/me', bearer(second.access_token))).status, 200)

    const logout = await http.post('/v1/auth/logout', bearer(second.access_token))
    assert.equal(logout.status, 204)
    assert.equal(await logout.text(), '')

    for (const token of [second.access_token, first.access_token]) {
      const after = await http.get('/v1/me', bearer(token))
      assert.equal(after.status, 401)
      assert.match(after.headers.get('content-type') ?? '', /^application\/problem\+json/)
      assert.match(after.headers.get('www-authenticate') ?? '', /^Bearer/)
    }
    const replay = await http.form('/oauth/token', { grant_type: 'refresh_token', refresh_token: second.refresh_token })
    assert.equal(replay.status, 400)
    assert.equal((await replay.json() as { error: string }).error, 'invalid_grant')
  })

  it('lets a resource server holding only the JWKS URL verify an access token with jose', async () => {
    const tokens = await signUp()
    const me = await (await http.get('/v1/me', bearer(tokens.access_token))).json() as { id: string }

    const jwks = createRemoteJWKSet(new URL('/.well-known/jwks.json', server.baseUrl))
    const { payload, protectedHeader } = await jwtVerify(tokens.access_token, jwks, {
      issuer: PUBLIC_URL, audience: PUBLIC_URL, typ: 'at+jwt', algorithms: ['EdDSA'],
    })
    assert.equal(payload.sub, me.id)
    assert.equal(typeof payload.sid, 'string')
    assert.ok((payload.sid as string).length > 0)
    assert.equal(protectedHeader.alg, 'EdDSA')
    assert.equal(protectedHeader.typ, 'at+jwt')

    // The same verifier refuses a token meant for someone else or with a broken signature.
    await assert.rejects(jwtVerify(tokens.access_token, jwks, { issuer: PUBLIC_URL, audience: 'https://other.example', typ: 'at+jwt', algorithms: ['EdDSA'] }), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' })
    const [h, p, s] = tokens.access_token.split('.') as [string, string, string]
    const tampered = `${h}.${p}.${s.startsWith('A') ? 'B' : 'A'}${s.slice(1)}`
    await assert.rejects(jwtVerify(tampered, jwks, { issuer: PUBLIC_URL, audience: PUBLIC_URL, typ: 'at+jwt', algorithms: ['EdDSA'] }), { code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' })

    const jwksRes = await http.get('/.well-known/jwks.json')
    const set = await jwksRes.json() as { keys: Array<Record<string, unknown>> }
    assert.ok(set.keys.some((k) => k.kid === decodeProtectedHeader(tokens.access_token).kid))
    for (const key of set.keys) assert.equal(key.d, undefined, 'no private member in the JWKS')
  })

  it('tags every response with x-request-id, echoes a valid one, and logs one request line with it', async () => {
    const tokens = await signUp()
    const responses: Array<[string, Response]> = [
      ['livez', await http.get('/livez')],
      ['readyz', await http.get('/readyz')],
      ['jwks', await http.get('/.well-known/jwks.json')],
      ['unknown route', await http.get('/no/such/route')],
      ['no token', await http.get('/v1/me')],
      ['bad token', await http.get('/v1/me', bearer('not.a.jwt'))],
      ['bad json', await fetch(new URL('/v1/auth/login', server.baseUrl), { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"email":' })],
      ['wrong media type', await fetch(new URL('/v1/auth/login', server.baseUrl), { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hello' })],
      ['me', await http.get('/v1/me', bearer(tokens.access_token))],
      ['oauth error', await http.form('/oauth/token', { grant_type: 'password' })],
    ]
    for (const [what, res] of responses) {
      await res.arrayBuffer()
      assert.match(res.headers.get('x-request-id') ?? '', /^[A-Za-z0-9._:-]{1,128}$/, `${what} (${res.status}) has an x-request-id`)
    }
    const generated = responses.map(([, res]) => res.headers.get('x-request-id'))
    assert.equal(new Set(generated).size, generated.length, 'generated request ids are unique')

    const sent = new Map<string, Response>()
    const traced = async (id: string, request: () => Promise<Response>) => {
      const res = await request()
      await res.arrayBuffer()
      sent.set(id, res)
      return res
    }
    const id = () => `e2e-${randomBytes(8).toString('hex')}`
    const password = newPassword()
    secrets.add(password)
    const email = uniqueEmail('traced')
    const registerId = id()
    await traced(registerId, () => http.json('/v1/accounts', { email, password }, { 'x-request-id': registerId }))
    await verifyByEmail(db.url, server.baseUrl, email)
    const loginId = id()
    const login = await fetch(new URL('/v1/auth/login', server.baseUrl), { method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': loginId }, body: JSON.stringify({ email, password }) })
    const loginTokens = await login.json() as Tokens
    sent.set(loginId, login)
    secrets.add(loginTokens.access_token).add(loginTokens.refresh_token).add(`Bearer ${loginTokens.access_token}`)
    const meId = id()
    await traced(meId, () => http.get('/v1/me', { ...bearer(loginTokens.access_token), 'x-request-id': meId }))
    const refreshId = id()
    await traced(refreshId, () => http.form('/oauth/token', { grant_type: 'refresh_token', refresh_token: loginTokens.refresh_token }, { 'x-request-id': refreshId }))
    const failedLoginId = id()
    await traced(failedLoginId, () => http.json('/v1/auth/login', { email, password: `${password}-wrong` }, { 'x-request-id': failedLoginId }))
    secrets.add(`${password}-wrong`)
    const unknownRouteId = id()
    await traced(unknownRouteId, () => http.get('/nowhere', { 'x-request-id': unknownRouteId }))

    for (const [requestId, res] of sent) {
      assert.equal(res.headers.get('x-request-id'), requestId, `echoed for ${res.url}`)
    }
    const meRes = sent.get(meId)
    assert.equal(meRes?.status, 200)
    assert.equal(sent.get(refreshId)?.status, 200)
    assert.equal(sent.get(failedLoginId)?.status, 401)
    assert.equal(sent.get(unknownRouteId)?.status, 404)

    // A malformed incoming id is replaced, not echoed (it would otherwise reach the logs verbatim).
    for (const bad of ['has spaces in it', 'x'.repeat(129), 'quote"inside']) {
      const res = await http.get('/livez', { 'x-request-id': bad })
      assert.equal(res.status, 200)
      const echoed = res.headers.get('x-request-id') ?? ''
      assert.notEqual(echoed, bad)
      assert.match(echoed, /^[A-Za-z0-9._:-]{1,128}$/)
    }

    assert.equal(sent.get(registerId)?.status, 202)
    const ids = [registerId, loginId, meId, refreshId, failedLoginId, unknownRouteId]
    const requestLines = () => server.logLines().filter((l) => l.msg === 'request')
    await waitFor('a request log line per traced request', () => ids.every((rid) => requestLines().some((l) => l.request_id === rid)))
    for (const rid of ids) {
      const lines = requestLines().filter((l) => l.request_id === rid)
      assert.equal(lines.length, 1, `exactly one request line for ${rid}`)
      const line = lines[0] ?? {}
      assert.equal(line.status, sent.get(rid)?.status)
      assert.equal(typeof line.method, 'string')
      assert.equal(typeof line.duration_ms, 'number')
    }
    const meLine = requestLines().find((l) => l.request_id === meId)
    assert.equal(meLine?.route, '/v1/me')
    assert.equal(typeof meLine?.account_id, 'string')
    // Generated ids are logged too.
    await waitFor('generated ids in the log', () => generated.every((g) => requestLines().some((l) => l.request_id === g)))
  })

  it('never writes a password, a token or an Authorization header value to its output', async () => {
    // Credentials from every test above, plus one more round trip that exercises each secret again.
    const tokens = await signUp()
    await (await http.get('/v1/me', bearer(tokens.access_token))).arrayBuffer()
    await (await http.form('/oauth/revoke', { token: tokens.refresh_token, token_type_hint: 'refresh_token' })).arrayBuffer()
    const markerId = `e2e-marker-${randomBytes(6).toString('hex')}`
    await (await http.get('/livez', { 'x-request-id': markerId })).arrayBuffer()
    await waitFor('the marker request in the log', () => server.logLines().some((l) => l.request_id === markerId))

    assert.ok(secrets.size >= 10, `collected ${secrets.size} secrets`)
    const output = server.output()
    assert.ok(output.length > 0)
    for (const secret of secrets) {
      assert.equal(output.includes(secret), false, `a secret (${secret.slice(0, 6)}…) appears in the server output`)
    }
    // Not even a fragment: the signature part of a JWT or the body of a refresh token.
    for (const secret of secrets) {
      if (secret.split('.').length === 3) assert.equal(output.includes(secret.split('.')[2] ?? '\0'), false)
      if (secret.startsWith('tsr_')) assert.equal(output.includes(secret.slice(4)), false)
    }
    const lines = output.split('\n').filter((l) => l.trim() !== '')
    assert.ok(lines.every((l) => !/authorization/i.test(l) || /"\[redacted\]"/.test(l)), 'no raw Authorization header is logged')
  })
})

describe('graceful shutdown under load', () => {
  let db: TestDatabase
  let server: ServerProcess

  before(async () => {
    db = await createTestDatabase()
    server = await startServer(serverEnv(db, { TESSERA_SHUTDOWN_DELAY_MS: '1500' }))
  })
  after(async () => {
    await server?.kill()
    await db?.drop()
  })

  it('turns readiness to 503, keeps answering during the delay, fails no accepted request and exits 0', async (t) => {
    const http = client(server.baseUrl)
    const email = uniqueEmail('drain')
    const password = newPassword()
    assert.equal((await http.json('/v1/accounts', { email, password })).status, 202)
    await verifyByEmail(db.url, server.baseUrl, email)
    const tokens = await (await http.json('/v1/auth/login', { email, password })).json() as Tokens

    interface Outcome { path: string; sentAt: number; receivedAt: number; status?: number; error?: string }
    const outcomes: Outcome[] = []
    let sigtermAt = Infinity
    let firstNotReadyAt = Infinity
    // A load balancer stops routing here shortly after readiness fails, well inside the shutdown delay.
    let answeredAfterNotReady = 0
    const routing = () => {
      const since = Date.now() - firstNotReadyAt
      return !(since >= 1000 || (since >= 250 && answeredAfterNotReady >= 10))
    }
    let n = 0

    const worker = async () => {
      while (routing()) {
        const path = n++ % 2 === 0 ? '/readyz' : '/v1/me'
        const sentAt = Date.now()
        try {
          const res = await http.get(path, path === '/v1/me' ? bearer(tokens.access_token) : {})
          await res.arrayBuffer()
          const receivedAt = Date.now()
          if (path === '/readyz' && res.status === 503 && receivedAt < firstNotReadyAt) firstNotReadyAt = receivedAt
          if (path === '/v1/me' && res.status === 200 && sentAt > firstNotReadyAt) answeredAfterNotReady++
          outcomes.push({ path, sentAt, receivedAt, status: res.status })
        } catch (err) {
          outcomes.push({ path, sentAt, receivedAt: Date.now(), error: String((err as Error).cause ?? err) })
        }
      }
    }
    const workers = Array.from({ length: 20 }, () => worker())

    await waitFor('steady load before SIGTERM', () => outcomes.length >= 200, 30_000)
    assert.ok(outcomes.every((o) => o.status === 200), 'all 200 before shutdown')
    sigtermAt = Date.now()
    server.child.kill('SIGTERM')

    // A login whose body is still arriving when the listener closes: it was accepted, so it must finish.
    // Its own connection (not fetch's pool), so that no earlier keep-alive socket is involved.
    const slowLogin = slowPost(server.baseUrl, '/v1/auth/login', JSON.stringify({ email, password }))
    t.after(() => slowLogin.agent.destroy())

    await waitFor('readiness 503', () => firstNotReadyAt < Infinity, 10_000)
    await Promise.all(workers)
    await waitFor('the listener to close', async () => !(await acceptsConnections(server.baseUrl)), 30_000)
    slowLogin.sendRest()
    const slowRes = await slowLogin.response
    const slowTokens = JSON.parse(slowRes.body || '{}') as Partial<Tokens>
    const exit = await server.exited

    const afterSigterm = outcomes.filter((o) => o.sentAt >= sigtermAt)
    const readiness503 = outcomes.filter((o) => o.path === '/readyz' && o.status === 503)
    const failed = outcomes.filter((o) => o.error !== undefined || (o.status !== undefined && o.status >= 500 && !(o.path === '/readyz' && o.status === 503)))
    const answeredWhileNotReady = outcomes.filter((o) => o.path === '/v1/me' && o.status === 200 && o.sentAt > firstNotReadyAt)
    console.log(`# requests sent: ${outcomes.length}; sent during shutdown: ${afterSigterm.length}; readiness 503s: ${readiness503.length}; /v1/me answered 200 after readiness failed: ${answeredWhileNotReady.length}`)
    console.log(`# accepted requests failed: ${failed.length}; slow login in flight at close: ${slowRes.status}`)

    assert.ok(afterSigterm.length > 0, 'requests were sent during shutdown')
    assert.ok(readiness503.length > 0, 'readiness turned 503')
    assert.ok(readiness503.every((o) => o.receivedAt >= sigtermAt), 'readiness failed only after SIGTERM')
    assert.ok(answeredWhileNotReady.length > 0, 'the server still answered during the shutdown delay')
    assert.deepEqual(failed, [], 'accepted requests failed')
    assert.equal(slowRes.status, 200, `a request in flight when the listener closed completed (${slowRes.error ?? 'no transport error'})`)
    assert.equal(typeof slowTokens.access_token, 'string')
    const messages = server.logLines().map((l) => l.msg)
    assert.equal(messages.includes('shutdown timeout: closing remaining connections'), false,
      'close() must finish once in-flight requests are done, not wait for TESSERA_SHUTDOWN_TIMEOUT_MS (a connection that was busy at close() stays open keep-alive)')
    assert.deepEqual(exit, { code: 0, signal: null })
    assert.ok(messages.includes('shutting down: readiness is now 503, draining in-flight requests'))
    assert.equal(messages.at(-1), 'stopped')
  })
})

describe('start-up with an invalid configuration', () => {
  it('exits non-zero at once and lists every problem without printing the database URL', async () => {
    const databaseUrl = `postgres://tessera_admin:${randomBytes(12).toString('hex')}@127.0.0.1:1/tessera`
    const result = await runCli(['serve'], { PORT: 'abc', TESSERA_PASSWORD_MIN_LENGTH: '3', DATABASE_URL: databaseUrl }, 20_000)
    assert.notEqual(result.code, 0)
    assert.equal(result.code, 78, 'EX_CONFIG')
    assert.match(result.stderr, /PORT/)
    assert.match(result.stderr, /TESSERA_PASSWORD_MIN_LENGTH/)
    assert.match(result.stderr, /TESSERA_KEY_ENCRYPTION_KEY/)
    const both = `${result.stdout}\n${result.stderr}`
    assert.equal(both.includes(databaseUrl), false)
    assert.equal(both.includes(new URL(databaseUrl).password), false)
  })

  it('hides a malformed secret value while naming its key', async () => {
    const password = randomBytes(12).toString('hex')
    const databaseUrl = `mysql://root:${password}@127.0.0.1/tessera`
    const kek = 'not-base64-at-all'
    const result = await runCli(['serve'], { DATABASE_URL: databaseUrl, TESSERA_KEY_ENCRYPTION_KEY: kek }, 20_000)
    assert.equal(result.code, 78)
    assert.match(result.stderr, /DATABASE_URL/)
    assert.match(result.stderr, /TESSERA_KEY_ENCRYPTION_KEY/)
    const both = `${result.stdout}\n${result.stderr}`
    assert.equal(both.includes(password), false)
    assert.equal(both.includes(kek), false)
  })
})

describe('tessera migrate', () => {
  const created: TestDatabase[] = []
  const migrateEnv = (db: TestDatabase) => ({ DATABASE_URL: db.url, TESSERA_KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64'), TESSERA_EMAIL_OUTBOX: 'true', LOG_LEVEL: 'info' })

  after(async () => {
    for (const db of created) await db.drop()
  })

  async function inspect(db: TestDatabase): Promise<{ tables: string[]; versions: Array<{ version: number; n: number }>; appliedAt: string[] }> {
    const c = new pg.Client({ connectionString: db.url })
    await c.connect()
    try {
      const tables = (await c.query<{ t: string }>("SELECT table_name AS t FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1")).rows.map((r) => r.t)
      if (!tables.includes('schema_migrations')) return { tables, versions: [], appliedAt: [] }
      const versions = (await c.query<{ version: number; n: number }>('SELECT version, count(*)::int AS n FROM schema_migrations GROUP BY version ORDER BY version')).rows
      const appliedAt = (await c.query<{ a: string }>('SELECT applied_at::text AS a FROM schema_migrations ORDER BY version')).rows.map((r) => r.a)
      return { tables, versions, appliedAt }
    } finally {
      await c.end()
    }
  }

  it('creates the schema on an empty database and is a no-op the second time', async () => {
    const expected = (await readMigrations()).map((m) => ({ version: m.version, n: 1 }))
    const db = await createTestDatabase({ migrated: false })
    created.push(db)
    assert.deepEqual((await inspect(db)).tables, [])

    const first = await runCli(['migrate'], migrateEnv(db))
    assert.equal(first.code, 0, first.stderr)
    const state = await inspect(db)
    for (const table of ['accounts', 'sessions', 'refresh_tokens', 'signing_keys', 'audit_events', 'schema_migrations']) {
      assert.ok(state.tables.includes(table), `table ${table} exists`)
    }
    assert.deepEqual(state.versions, expected)
    assert.deepEqual(first.logLines.find((l) => l.msg === 'migrations applied')?.applied, expected.map((e) => e.version))

    const second = await runCli(['migrate'], migrateEnv(db))
    assert.equal(second.code, 0, second.stderr)
    assert.ok(second.logLines.some((l) => l.msg === 'database schema is up to date'))
    assert.deepEqual(await inspect(db), state)
  })

  it('applies each migration exactly once when two migrate processes start together', async () => {
    const expected = (await readMigrations()).map((m) => ({ version: m.version, n: 1 }))
    const db = await createTestDatabase({ migrated: false })
    created.push(db)
    const env = migrateEnv(db)
    const [a, b] = await Promise.all([runCli(['migrate'], env), runCli(['migrate'], env)])
    assert.equal(a.code, 0, a.stderr)
    assert.equal(b.code, 0, b.stderr)
    assert.deepEqual((await inspect(db)).versions, expected)
    const applied = [a, b].map((r) => r.logLines.find((l) => l.msg === 'migrations applied' || l.msg === 'database schema is up to date')?.msg)
    assert.deepEqual(applied.sort(), ['database schema is up to date', 'migrations applied'], 'one process applied, the other found the schema current')
  })
})
