/**
 * Metrics: a scenario (register, login, failures, refresh, grace replay, reuse, lockout, rate limit)
 * followed by a scrape of the management listener's /metrics, asserting that each counter moved by
 * exactly the expected amount and that no label carries an id, an email, a token or a raw path.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { buildManagementApp } from '../../src/observability/management.ts'
import { createTestApp, login, RELAXED_LIMITS, refresh, register, signUp, uniqueEmail, VALID_PASSWORD, type TestApp } from '../helpers/app.ts'
import { FakeClock } from '../helpers/clock.ts'

interface Sample { name: string; labels: Record<string, string>; value: number }

/** Parses the Prometheus text format (enough of it: no escapes inside label values are produced here). */
function parse(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = []
  const types = new Map<string, string>()
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line)
    if (type?.[1] !== undefined && type[2] !== undefined) types.set(type[1], type[2])
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    assert.ok(m, `unparseable line: ${line}`)
    const labels: Record<string, string> = {}
    for (const pair of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1] ?? ''] = pair[2] ?? ''
    samples.push({ name: m[1] ?? '', labels, value: Number(m[3]) })
  }
  return { samples, types }
}

describe('metrics', () => {
  const clock = new FakeClock(new Date('2026-06-01T10:00:00Z'))
  let t: TestApp
  let management: FastifyInstance

  before(async () => {
    t = await createTestApp({
      clock,
      env: {
        TESSERA_LOCKOUT_THRESHOLD: '3',
        TESSERA_RATE_LIMITS: JSON.stringify({ ...JSON.parse(RELAXED_LIMITS.TESSERA_RATE_LIMITS) as object, 'register.ip': { points: 3, seconds: 3600 } }),
      },
    })
    management = await buildManagementApp(t.deps)
  })
  after(async () => {
    await management.close()
    await t.close()
  })

  async function scrape() {
    const res = await management.inject({ method: 'GET', url: '/metrics' })
    assert.equal(res.statusCode, 200)
    assert.match(String(res.headers['content-type']), /^text\/plain; version=0\.0\.4/)
    return parse(res.body)
  }
  const value = (samples: Sample[], name: string, labels: Record<string, string> = {}) =>
    samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((sum, s) => sum + s.value, 0)

  it('counts what the scenario did, exactly', async () => {
    const before = (await scrape()).samples
    const user = await signUp(t.app) // register (created) + verify + login (success)
    await register(t.app, user.email) // duplicate
    const wrong = (email: string) => t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email, password: 'not the password at all' } })
    await wrong(uniqueEmail('ghost')) // unknown_account
    for (let i = 0; i < 3; i++) await wrong(user.email) // wrong_password ×3, the third locks
    await wrong(user.email) // locked
    clock.advanceSeconds(3600)
    const session = await login(t.app, user.email) // success (the lock has ended)
    const rotated = await refresh(t.app, session.refresh_token)
    assert.equal(rotated.statusCode, 200)
    assert.equal((await refresh(t.app, session.refresh_token)).statusCode, 200) // grace replay
    clock.advanceSeconds(60)
    assert.equal((await refresh(t.app, session.refresh_token)).statusCode, 400) // reuse: the session ends
    assert.equal((await refresh(t.app, `tsr_${'B'.repeat(43)}`)).statusCode, 400) // invalid
    // register.ip allows 3 an hour: signUp used one and the duplicate another.
    assert.equal((await register(t.app, uniqueEmail())).statusCode, 202)
    assert.equal((await register(t.app, uniqueEmail())).statusCode, 429)

    const { samples: after } = await scrape()
    const delta = (name: string, labels: Record<string, string> = {}) => value(after, name, labels) - value(before, name, labels)
    assert.deepEqual({
      created: delta('tessera_registrations_total', { result: 'created' }),
      duplicate: delta('tessera_registrations_total', { result: 'duplicate' }),
      loginOk: delta('tessera_logins_total', { result: 'success' }),
      unknown: delta('tessera_logins_total', { reason: 'unknown_account' }),
      wrongPassword: delta('tessera_logins_total', { reason: 'wrong_password' }),
      locked: delta('tessera_logins_total', { reason: 'locked' }),
      lockouts: delta('tessera_lockouts_total', { kind: 'temporary' }),
      rotated: delta('tessera_token_refreshes_total', { result: 'rotated' }),
      grace: delta('tessera_token_refreshes_total', { result: 'grace_replay' }),
      reuse: delta('tessera_token_refreshes_total', { result: 'reuse_detected' }),
      invalid: delta('tessera_token_refreshes_total', { result: 'invalid' }),
      userTokens: delta('tessera_access_tokens_issued_total', { kind: 'user' }),
      revokedSessions: delta('tessera_revocations_total', { kind: 'session' }),
      rateLimited: delta('tessera_rate_limited_total', { rule: 'register.ip', key_type: 'ip' }),
      loginRequests: delta('tessera_http_requests_total', { route: '/v1/auth/login', status_class: '4xx' }),
      tokenRequests2xx: delta('tessera_http_requests_total', { route: '/oauth/token', status_class: '2xx' }),
      verifications: delta('tessera_password_hash_duration_seconds_count', { operation: 'verify' }),
    }, {
      created: 2, duplicate: 1, loginOk: 2, unknown: 1, wrongPassword: 3, locked: 1, lockouts: 1,
      rotated: 1, grace: 1, reuse: 1, invalid: 1, userTokens: 4, revokedSessions: 1, rateLimited: 1,
      loginRequests: 5, tokenRequests2xx: 2, verifications: 7,
    })
    assert.ok(value(after, 'tessera_http_request_duration_seconds_count', { route: '/v1/auth/login' }) >= 7)
    assert.equal(value(after, 'tessera_http_requests_in_flight'), 0, 'nothing in flight (the scrape is on the management listener)')
  })

  it('exports the saturation gauges and the runtime metrics', async () => {
    const { samples, types } = await scrape()
    for (const name of ['tessera_db_pool_connections', 'tessera_db_pool_max', 'tessera_password_hash_queue', 'tessera_signing_key_age_seconds',
      'nodejs_eventloop_lag_seconds', 'nodejs_heap_size_used_bytes', 'nodejs_gc_duration_seconds', 'process_cpu_seconds_total',
      'tessera_email_queue_depth', 'tessera_email_dead_letters', 'tessera_revocation_propagation_seconds', 'tessera_active_sessions']) {
      assert.ok(types.has(name), `${name} is exported`)
    }
    assert.equal(value(samples, 'tessera_db_pool_max'), t.config.database.poolMax)
    assert.ok(value(samples, 'tessera_db_pool_connections', { state: 'total' }) >= 1)
    assert.ok(value(samples, 'tessera_signing_key_age_seconds', { key: 'signing' }) >= 0)
  })

  it('never puts an id, an email, a token or a raw path in a label', async () => {
    const { samples } = await scrape()
    const forbidden = [
      /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/i, // ids
      /@/, // emails
      /tsr_|tcs_|eyJ/, // tokens
    ]
    const allowedLabels = new Set(['method', 'route', 'status_class', 'result', 'reason', 'kind', 'rule', 'key_type', 'operation', 'state', 'key', 'le', 'quantile',
      'space', 'version', 'major', 'minor', 'patch', 'type'])
    for (const s of samples) {
      for (const [label, v] of Object.entries(s.labels)) {
        assert.ok(allowedLabels.has(label), `${s.name}: unexpected label ${label}`)
        for (const pattern of forbidden) assert.doesNotMatch(v, pattern, `${s.name}{${label}="${v}"}`)
      }
      if (s.labels.route !== undefined) assert.match(s.labels.route, /^(\/[A-Za-z0-9._\-{}:/]*|unmatched)$/, `${s.name} route ${s.labels.route}`)
    }
    // A request to a path with an id is counted under its template, and an unknown path under "unmatched".
    await t.app.inject({ method: 'DELETE', url: `/v1/sessions/${crypto.randomUUID()}` })
    await t.app.inject({ method: 'GET', url: `/nope/${crypto.randomUUID()}` })
    const after = (await scrape()).samples
    assert.ok(value(after, 'tessera_http_requests_total', { route: '/v1/sessions/:id' }) >= 1)
    assert.ok(value(after, 'tessera_http_requests_total', { route: 'unmatched' }) >= 1)
  })

  it('counts the right password on an unverified account under its own reason', async () => {
    const email = uniqueEmail('r')
    // From another address: the first test spent this address's registration budget.
    const created = await t.app.inject({ method: 'POST', url: '/v1/accounts', payload: { email, password: VALID_PASSWORD }, remoteAddress: '198.51.100.99' })
    assert.equal(created.statusCode, 202)
    const before = (await scrape()).samples
    await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email, password: VALID_PASSWORD } }) // unverified, right password
    const after = (await scrape()).samples
    assert.equal(value(after, 'tessera_logins_total', { reason: 'email_not_verified' }) - value(before, 'tessera_logins_total', { reason: 'email_not_verified' }), 1)
  })
})
