import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import type { LightMyRequestResponse } from 'fastify'
import { bearer, createTestApp, login, signUp, uniqueEmail, VALID_PASSWORD, type TestApp, type Tokens } from '../helpers/app.ts'

type Json = Record<string, unknown>
type Method = 'POST' | 'PATCH' | 'DELETE'

interface ProblemBody {
  type: string
  title: string
  status: number
  code: string
  detail?: string
  request_id?: string
  errors?: Array<{ pointer: string; detail: string }>
}

interface Endpoint {
  /** The route's OpenAPI operationId. */
  readonly id: string
  readonly method: Method
  readonly url: string
  readonly auth: boolean
  /** RFC 6749 §5.2 error shape instead of problem+json; form bodies accepted too. */
  readonly oauth: boolean
  /** A body the schema accepts (its fields are the ones attacked below). */
  readonly valid: () => Json
  readonly required: readonly string[]
  /** Fields where null is a legal value. */
  readonly nullable: readonly string[]
}

interface Expected {
  readonly status: number
  readonly code: string
  readonly pointer?: string
}

/** Stack frames, source paths, SQL and driver text: none may reach a client. */
const LEAK = /\bat \S+ \(|\bat (?:async )?\S+:\d+:\d+|node:internal|node_modules|\.ts:\d+|\b(?:SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM)\b|syntax error at|violates \w+ constraint|relation "|invalid input syntax|SQLSTATE|TypeError|RangeError|Maximum call stack|FST_ERR_/
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const KIB = 1024
const JSON_TYPE = { 'content-type': 'application/json' } as const
const FORM_TYPE = { 'content-type': 'application/x-www-form-urlencoded' } as const
const A_REFRESH_TOKEN = `tsr_${'A'.repeat(43)}`
const NEW_PASSWORD = 'an entirely different passphrase'

let badInputs = 0

const WRONG_TYPES: ReadonlyArray<[string, unknown]> = [
  ['number', 42], ['zero', 0], ['float', 1.5], ['boolean true', true], ['boolean false', false], ['null', null],
  ['empty array', []], ['array of strings', ['a@example.com']], ['empty object', {}], ['object', { value: 'x' }],
]

/** Raw JSON for an object: `raw` values are inserted verbatim (already JSON text), the rest serialised. */
function rawJson(fields: Json, raw: Record<string, string> = {}): string {
  const parts = Object.entries(fields).filter(([k]) => !(k in raw)).map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`)
  for (const [k, text] of Object.entries(raw)) parts.unshift(`${JSON.stringify(k)}:${text}`)
  return `{${parts.join(',')}}`
}

function stringFields(ep: Endpoint): string[] {
  return Object.keys(ep.valid())
}

function assertNoLeak(res: LightMyRequestResponse, where: string): void {
  assert.doesNotMatch(res.body, LEAK, where)
  assert.equal(res.headers['x-powered-by'], undefined, where)
}

function assertProblem(res: LightMyRequestResponse, expected: Expected, label: string): ProblemBody {
  const where = `${label}: got ${res.statusCode} ${res.body.slice(0, 300)}`
  assert.equal(res.statusCode, expected.status, where)
  assert.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8', where)
  const body = res.json<ProblemBody>()
  assert.equal(body.code, expected.code, where)
  assert.equal(body.status, expected.status, where)
  assert.equal(body.type, `urn:tessera:problem:${expected.code}`, where)
  assert.equal(typeof body.title, 'string', where)
  assert.equal(typeof body.request_id, 'string', where)
  assert.equal(body.request_id, res.headers['x-request-id'], where)
  if (expected.pointer !== undefined) assert.equal(body.errors?.[0]?.pointer, expected.pointer, where)
  assertNoLeak(res, where)
  return body
}

function assertOAuthError(res: LightMyRequestResponse, expected: Expected, label: string): void {
  const where = `${label}: got ${res.statusCode} ${res.body.slice(0, 300)}`
  // HTTP-level refusals keep their status (413, 415); everything else a client sends wrong is 400.
  const status = expected.status === 413 || expected.status === 415 ? expected.status : 400
  assert.equal(res.statusCode, status, where)
  assert.equal(res.headers['content-type'], 'application/json; charset=utf-8', where)
  assert.equal(res.headers['cache-control'], 'no-store', where)
  const body = res.json<Json>()
  assert.deepEqual(Object.keys(body).sort(), ['error', 'error_description'], where)
  assert.equal(body.error, 'invalid_request', where)
  assert.equal(typeof body.error_description, 'string', where)
  assert.match(String(res.headers['x-request-id']), /^[A-Za-z0-9._:-]{1,128}$/, where)
  assertNoLeak(res, where)
}

function assertRejected(ep: Endpoint, res: LightMyRequestResponse, expected: Expected, label: string): void {
  if (ep.oauth) assertOAuthError(res, expected, `${ep.id} ${label}`)
  else assertProblem(res, expected, `${ep.id} ${label}`)
}

describe('hostile input: every endpoint answers a clear 4xx with its stable code, never 500', () => {
  let t: TestApp
  let victim: Tokens & { email: string }
  let snapshot: Json

  const endpoints: readonly Endpoint[] = [
    {
      id: 'register', method: 'POST', url: '/v1/accounts', auth: false, oauth: false,
      valid: () => ({ email: uniqueEmail('hostile'), password: VALID_PASSWORD, display_name: 'Ann' }),
      required: ['email', 'password'], nullable: [],
    },
    {
      id: 'login', method: 'POST', url: '/v1/auth/login', auth: false, oauth: false,
      valid: () => ({ email: uniqueEmail('nobody'), password: 'a wrong password, long enough' }),
      required: ['email', 'password'], nullable: [],
    },
    {
      id: 'updateMe', method: 'PATCH', url: '/v1/me', auth: true, oauth: false,
      valid: () => ({ display_name: 'Mallory' }),
      required: ['display_name'], nullable: ['display_name'],
    },
    {
      id: 'changePassword', method: 'POST', url: '/v1/me/password', auth: true, oauth: false,
      valid: () => ({ current_password: VALID_PASSWORD, new_password: NEW_PASSWORD }),
      required: ['current_password', 'new_password'], nullable: [],
    },
    {
      id: 'deleteMe', method: 'DELETE', url: '/v1/me', auth: true, oauth: false,
      valid: () => ({ password: VALID_PASSWORD }),
      required: ['password'], nullable: [],
    },
    {
      id: 'requestEmailVerification', method: 'POST', url: '/v1/email-verification', auth: false, oauth: false,
      valid: () => ({ email: uniqueEmail('nobody') }),
      required: ['email'], nullable: [],
    },
    {
      id: 'confirmEmailVerification', method: 'POST', url: '/v1/email-verification/confirm', auth: false, oauth: false,
      valid: () => ({ token: 'A'.repeat(43) }),
      required: ['token'], nullable: [],
    },
    {
      id: 'requestPasswordReset', method: 'POST', url: '/v1/password-reset', auth: false, oauth: false,
      valid: () => ({ email: uniqueEmail('nobody') }),
      required: ['email'], nullable: [],
    },
    {
      id: 'confirmPasswordReset', method: 'POST', url: '/v1/password-reset/confirm', auth: false, oauth: false,
      valid: () => ({ token: 'A'.repeat(43), new_password: NEW_PASSWORD }),
      required: ['token', 'new_password'], nullable: [],
    },
    {
      id: 'requestEmailChange', method: 'POST', url: '/v1/me/email', auth: true, oauth: false,
      valid: () => ({ new_email: uniqueEmail('elsewhere'), password: VALID_PASSWORD }),
      required: ['new_email', 'password'], nullable: [],
    },
    {
      id: 'confirmEmailChange', method: 'POST', url: '/v1/me/email/confirm', auth: false, oauth: false,
      valid: () => ({ token: 'A'.repeat(43) }),
      required: ['token'], nullable: [],
    },
    {
      id: 'token', method: 'POST', url: '/oauth/token', auth: false, oauth: true,
      valid: () => ({ grant_type: 'refresh_token', refresh_token: A_REFRESH_TOKEN, scope: 'openid', client_id: 'tessera' }),
      required: ['grant_type'], nullable: [],
    },
    {
      id: 'revoke', method: 'POST', url: '/oauth/revoke', auth: false, oauth: true,
      valid: () => ({ token: A_REFRESH_TOKEN, token_type_hint: 'refresh_token', client_id: 'tessera' }),
      required: ['token'], nullable: [],
    },
  ]

  before(async () => {
    t = await createTestApp()
    victim = await signUp(t.app)
    const named = await t.app.inject({ method: 'PATCH', url: '/v1/me', headers: bearer(victim.access_token), payload: { display_name: 'Original Name' } })
    assert.equal(named.statusCode, 200, named.body)
    snapshot = await account()
  })

  after(async () => {
    try {
      // Whatever was thrown at the endpoints, the victim's account is exactly as it was and still signs in.
      assert.deepEqual(await account(), snapshot)
      await login(t.app, victim.email)
      assert.equal(Object.prototype.hasOwnProperty.call(Object.prototype, 'polluted'), false, 'Object.prototype was polluted')
    } finally {
      await t.close()
      console.log(`# bad inputs tried: ${badInputs}`)
    }
  })

  function byId(id: string): Endpoint {
    const ep = endpoints.find((e) => e.id === id)
    if (ep === undefined) throw new Error(`no endpoint ${id}`)
    return ep
  }

  async function account(): Promise<Json> {
    const res = await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(victim.access_token) })
    assert.equal(res.statusCode, 200, res.body)
    return res.json<Json>()
  }

  /** Sends one hostile request (counted for the suite's report). */
  function hostile(ep: Endpoint, payload: string | Json | undefined, headers: Record<string, string> = {}): Promise<LightMyRequestResponse> {
    badInputs++
    return t.app.inject({
      method: ep.method,
      url: ep.url,
      headers: { ...(ep.auth ? bearer(victim.access_token) : {}), ...(typeof payload === 'string' ? JSON_TYPE : {}), ...headers },
      ...(payload === undefined ? {} : { payload }),
    })
  }

  for (const ep of endpoints) {
    it(`${ep.id}: a number, boolean, null, array or object in place of any string field is refused`, async () => {
      for (const field of stringFields(ep)) {
        for (const [kind, value] of WRONG_TYPES) {
          if (value === null && ep.nullable.includes(field)) continue
          const res = await hostile(ep, { ...ep.valid(), [field]: value })
          assertRejected(ep, res, { status: 400, code: 'validation_failed', pointer: `/${field}` }, `${field} as ${kind}`)
        }
      }
    })

    it(`${ep.id}: a body missing any required field is refused`, async () => {
      for (const field of ep.required) {
        const body = ep.valid()
        delete body[field]
        assertRejected(ep, await hostile(ep, body), { status: 400, code: 'validation_failed', pointer: `/${field}` }, `without ${field}`)
      }
      assertRejected(ep, await hostile(ep, {}), { status: 400, code: 'validation_failed' }, 'empty object')
    })

    it(`${ep.id}: unknown extra fields are refused, not ignored (no mass assignment)`, async () => {
      const extras: Json = {
        email_verified: true, status: 'active', role: 'admin', is_admin: true, id: randomUUID(), account_id: randomUUID(),
        password_hash: '$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaA', failed_login_attempts: 0, locked_until: null,
        created_at: '2000-01-01T00:00:00Z', scope: 'admin', ...(ep.id === 'updateMe' ? { email: uniqueEmail('takeover') } : {}),
      }
      for (const [field, value] of Object.entries(extras)) {
        if (field in ep.valid()) continue
        const res = await hostile(ep, { ...ep.valid(), [field]: value })
        assertRejected(ep, res, { status: 400, code: 'validation_failed', pointer: `/${field}` }, `extra ${field}`)
      }
      assertRejected(ep, await hostile(ep, { ...ep.valid(), 'Display_Name ': 'x', '': 'x' }), { status: 400, code: 'validation_failed' }, 'odd keys')
    })

    it(`${ep.id}: __proto__ and constructor.prototype keys are refused and pollute nothing`, async () => {
      const valid = ep.valid()
      const field = Object.keys(valid)[0] ?? 'x'
      const bodies: Array<[string, string]> = [
        ['top-level __proto__', rawJson(valid, { ['__proto__']: '{"polluted":"yes"}' })],
        ['__proto__ as a string', rawJson(valid, { ['__proto__']: '"yes"' })],
        ['escaped __proto__', rawJson(valid).replace(/^\{/, '{"\\u005f_proto__":{"polluted":"yes"},')],
        ['nested __proto__', rawJson(valid, { [field]: '{"__proto__":{"polluted":"yes"}}' })],
        ['constructor.prototype', rawJson(valid, { constructor: '{"prototype":{"polluted":"yes"}}' })],
        ['nested constructor.prototype', rawJson(valid, { [field]: '{"constructor":{"prototype":{"polluted":"yes"}}}' })],
      ]
      for (const [label, body] of bodies) {
        assertRejected(ep, await hostile(ep, body), { status: 400, code: 'malformed_request' }, label)
      }
      if (ep.oauth) {
        const form = new URLSearchParams(valid as Record<string, string>).toString()
        for (const extra of ['__proto__[polluted]=yes', '__proto__=yes', 'constructor[prototype][polluted]=yes', 'constructor=yes', 'prototype=yes']) {
          assertRejected(ep, await hostile(ep, `${form}&${extra}`, FORM_TYPE), { status: 400, code: 'validation_failed' }, `form ${extra}`)
        }
      }
      assert.equal(({} as Json).polluted, undefined)
      assert.equal(Object.prototype.hasOwnProperty.call(Object.prototype, 'polluted'), false)
    })

    it(`${ep.id}: malformed JSON and an empty body are 400 malformed_request; JSON that is not an object is 400 validation_failed`, async () => {
      const malformed = [
        '{', '}', '{"a":', '{"a":1,}', "{'a':1}", '{"a":undefined}', 'NaN', '[1,2', '{"a":"\\x"}', '{"a":"\u0000"}',
        '\u0000', 'true false', '{"a":1}{"b":2}', '{"a":01}', '   ', '{"a" 1}', '<xml/>', 'email=a&password=b',
      ]
      for (const body of malformed) assertRejected(ep, await hostile(ep, body), { status: 400, code: 'malformed_request' }, `body ${JSON.stringify(body)}`)
      assertRejected(ep, await hostile(ep, ''), { status: 400, code: 'malformed_request' }, 'empty body')
      for (const body of ['null', 'true', '123', '"a string"', '[]', `[${JSON.stringify(ep.valid())}]`]) {
        assertRejected(ep, await hostile(ep, body), { status: 400, code: 'validation_failed', pointer: '/' }, `body ${body.slice(0, 20)}`)
      }
    })

    it(`${ep.id}: a body over 64 KiB is 413 payload_too_large`, async () => {
      const field = Object.keys(ep.valid())[0] ?? 'x'
      const huge = { ...ep.valid(), [field]: 'a'.repeat(70 * KIB) }
      assertRejected(ep, await hostile(ep, huge), { status: 413, code: 'payload_too_large' }, 'JSON of 70 KiB')
      assertRejected(ep, await hostile(ep, `[${'1,'.repeat(40 * KIB)}1]`), { status: 413, code: 'payload_too_large' }, 'array of 80 KiB')
      if (ep.oauth) {
        const form = new URLSearchParams({ ...(ep.valid() as Record<string, string>), [field]: 'a'.repeat(70 * KIB) }).toString()
        assertRejected(ep, await hostile(ep, form, FORM_TYPE), { status: 413, code: 'payload_too_large' }, 'form of 70 KiB')
      }
    })

    it(`${ep.id}: deeply nested JSON is refused without exhausting the stack`, async () => {
      const depth = 10_000
      const field = Object.keys(ep.valid())[0] ?? 'x'
      const rest = ep.valid()
      delete rest[field]
      assertRejected(ep, await hostile(ep, '['.repeat(depth)), { status: 400, code: 'malformed_request' }, 'unterminated arrays')
      assertRejected(ep, await hostile(ep, '{"a":'.repeat(depth)), { status: 400, code: 'malformed_request' }, 'unterminated objects')
      assertRejected(ep, await hostile(ep, '['.repeat(depth) + ']'.repeat(depth)), { status: 400, code: 'validation_failed', pointer: '/' }, 'balanced arrays')
      assertRejected(ep, await hostile(ep, `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`), { status: 400, code: 'validation_failed' }, 'balanced objects')
      assertRejected(ep, await hostile(ep, rawJson(rest, { [field]: '['.repeat(depth) + ']'.repeat(depth) })), { status: 400, code: 'validation_failed', pointer: `/${field}` }, `nested arrays in ${field}`)
      assertRejected(ep, await hostile(ep, rawJson(rest, { [field]: `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}` })), { status: 400, code: 'validation_failed', pointer: `/${field}` }, `nested objects in ${field}`)
    })

    it(`${ep.id}: 60 KB strings in every field are refused by the length limits`, async () => {
      for (const field of stringFields(ep)) {
        for (const filler of ['a', '@', '.', '\u0000', 'é', '😀']) {
          // 60 KB once JSON-encoded (a NUL is six bytes as \u0000), so the body stays under the 64 KiB limit.
          const value = filler.repeat(Math.floor(60_000 / Buffer.byteLength(JSON.stringify(filler).slice(1, -1))))
          assertRejected(ep, await hostile(ep, { ...ep.valid(), [field]: value }), { status: 400, code: 'validation_failed', pointer: `/${field}` }, `${field} of 60 KB ${JSON.stringify(filler)}`)
        }
      }
    })

    it(`${ep.id}: a content type other than JSON${ep.oauth ? ' or form' : ''} is 415 unsupported_media_type`, async () => {
      const body = JSON.stringify(ep.valid())
      const types = [
        'text/plain', 'text/plain; charset=utf-8', 'application/xml', 'text/xml', 'text/html', 'multipart/form-data; boundary=x',
        'application/octet-stream', 'application/json-patch+json', 'application/vnd.api+json', 'application/jsonx', 'text/json',
        'application/javascript', 'image/png', 'application/x-www-form-urlencodedx', 'json', 'application/', '*/*',
        ...(ep.oauth ? [] : ['application/x-www-form-urlencoded', 'application/x-www-form-urlencoded; charset=utf-8']),
      ]
      for (const type of types) assertRejected(ep, await hostile(ep, body, { 'content-type': type }), { status: 415, code: 'unsupported_media_type' }, `content-type ${type}`)
      const multipart = '--x\r\nContent-Disposition: form-data; name="email"\r\n\r\na@example.com\r\n--x--\r\n'
      assertRejected(ep, await hostile(ep, multipart, { 'content-type': 'multipart/form-data; boundary=x' }), { status: 415, code: 'unsupported_media_type' }, 'a real multipart body')
    })
  }

  it('register: ReDoS-shaped and malformed email addresses are refused as validation_failed on /email', async () => {
    const register = byId('register')
    const shapes = [
      'a'.repeat(50_000) + '@', '@'.repeat(50_000), 'a'.repeat(500) + '@', '@'.repeat(500), 'a@' + 'a'.repeat(500),
      'a@' + ('a'.repeat(62) + '-').repeat(7), 'a@' + 'a.'.repeat(250), 'a.'.repeat(240) + '@example.com',
      'a@' + 'a'.repeat(64) + '.com', 'a@' + '-a'.repeat(200) + '.com', 'a@' + 'a-'.repeat(200) + '.com', '"' + 'a'.repeat(400) + '"@example.com',
      'a'.repeat(65) + '@example.com', 'a@example.' + '1'.repeat(100), 'a@[127.0.0.1]', 'a@@example.com', '.a@example.com', 'a..b@example.com',
      'a@example', 'a b@example.com', '\u0000'.repeat(400) + '@example.com', 'a@' + 'ｘ'.repeat(300) + '.com', '\n'.repeat(400) + 'a@@example.com',
      '(comment)a@example.com', 'a@example.com\u0000.evil.test',
    ]
    for (const email of shapes) {
      const res = await hostile(register, { email, password: VALID_PASSWORD })
      assertProblem(res, { status: 400, code: 'validation_failed', pointer: '/email' }, `email ${JSON.stringify(email.slice(0, 30))}… (${email.length})`)
    }
  })

  it('login: ReDoS-shaped email addresses are answered like any unknown account', async () => {
    const loginEp = byId('login')
    for (const email of ['a'.repeat(500) + '@', '@'.repeat(500), 'a@' + ('a'.repeat(62) + '-').repeat(7), 'a.'.repeat(240) + '@example.com', 'a@' + 'a-'.repeat(200) + '.com']) {
      assertProblem(await hostile(loginEp, { email, password: VALID_PASSWORD }), { status: 401, code: 'invalid_credentials' }, `login ${email.slice(0, 20)}`)
    }
    for (const email of ['a'.repeat(50_000) + '@', '@'.repeat(50_000)]) {
      assertProblem(await hostile(loginEp, { email, password: VALID_PASSWORD }), { status: 400, code: 'validation_failed', pointer: '/email' }, `login of ${email.length}`)
    }
  })

  it('display names with control characters or over 100 characters are refused on register and PATCH /v1/me', async () => {
    for (const ep of [byId('register'), byId('updateMe')]) {
      for (const name of ['a'.repeat(99) + '\u0000', '\u0001'.repeat(100), 'Ann\nSet-Cookie: x=1', 'Ann\u007f', 'a'.repeat(101), '']) {
        assertRejected(ep, await hostile(ep, { ...ep.valid(), display_name: name }), { status: 400, code: 'validation_failed', pointer: '/display_name' }, `display_name ${JSON.stringify(name.slice(0, 12))}`)
      }
    }
  })

  it('PATCH /v1/me cannot change the email, status or any field but display_name (mass assignment), and leaves the account unchanged', async () => {
    const before = await account()
    const attempts: Json[] = [
      { email: uniqueEmail('takeover') },
      { status: 'disabled' },
      { display_name: 'Mallory', email: uniqueEmail('takeover') },
      { display_name: 'Mallory', email_verified: true },
      { display_name: 'Mallory', id: randomUUID() },
      { display_name: 'Mallory', password_hash: 'x' },
      { display_name: 'Mallory', locked_until: null, failed_login_attempts: 0 },
      { display_name: 'Mallory', created_at: '2000-01-01T00:00:00Z' },
    ]
    for (const body of attempts) {
      const res = await hostile(byId('updateMe'), body)
      const extra = Object.keys(body).find((k) => k !== 'display_name') ?? ''
      // Without display_name the first complaint is the missing field; with it, the foreign one.
      const refused = 'display_name' in body
      assertProblem(res, { status: 400, code: 'validation_failed', pointer: refused ? `/${extra}` : '/display_name' }, `PATCH ${JSON.stringify(body)}`)
      if (refused) assert.equal(res.json<ProblemBody>().errors?.[0]?.detail, 'is not an accepted field')
    }
    assert.deepEqual(await account(), before)
  })

  it('register with extra fields creates no account', async () => {
    const email = uniqueEmail('massassign')
    const res = await hostile(byId('register'), { email, password: VALID_PASSWORD, email_verified: true, role: 'admin' })
    assertProblem(res, { status: 400, code: 'validation_failed' }, 'register with extras')
    const attempt = await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email, password: VALID_PASSWORD } })
    assertProblem(attempt, { status: 401, code: 'invalid_credentials' }, 'login to the refused registration')
  })

  it('change-password and delete with extra or mistyped fields change nothing', async () => {
    const changePassword = byId('changePassword')
    const deleteMe = byId('deleteMe')
    assertProblem(await hostile(changePassword, { current_password: VALID_PASSWORD, new_password: NEW_PASSWORD, keep_sessions: true }), { status: 400, code: 'validation_failed', pointer: '/keep_sessions' }, 'change password + extra')
    assertProblem(await hostile(changePassword, { current_password: VALID_PASSWORD, new_password: [NEW_PASSWORD] }), { status: 400, code: 'validation_failed', pointer: '/new_password' }, 'change password, array')
    assertProblem(await hostile(deleteMe, { password: VALID_PASSWORD, hard: true }), { status: 400, code: 'validation_failed', pointer: '/hard' }, 'delete + extra')
    assertProblem(await hostile(deleteMe, { password: [VALID_PASSWORD] }), { status: 400, code: 'validation_failed', pointer: '/password' }, 'delete, array')
    // The account is still there with its password unchanged (after() also signs in with the old one).
    assert.equal((await account()).password_changed_at, snapshot.password_changed_at)
  })

  it('OAuth endpoints accept form-encoded bodies, and refuse repeated parameters', async () => {
    const token = byId('token')
    const revoke = byId('revoke')
    const grant = await t.app.inject({ method: 'POST', url: '/oauth/token', headers: FORM_TYPE, payload: `grant_type=refresh_token&refresh_token=${A_REFRESH_TOKEN}` })
    assert.equal(grant.statusCode, 400)
    assert.deepEqual(grant.json(), { error: 'invalid_grant', error_description: 'The refresh token is invalid, expired or revoked.' }, 'parsed and processed, not refused as a media type')
    const revoked = await t.app.inject({ method: 'POST', url: '/oauth/revoke', headers: { 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' }, payload: `token=${A_REFRESH_TOKEN}` })
    assert.equal(revoked.statusCode, 200)
    assertOAuthError(await hostile(token, `grant_type=refresh_token&grant_type=refresh_token&refresh_token=${A_REFRESH_TOKEN}`, FORM_TYPE), { status: 400, code: 'validation_failed' }, 'repeated grant_type')
    assertOAuthError(await hostile(revoke, `token=${A_REFRESH_TOKEN}&token=${A_REFRESH_TOKEN}`, FORM_TYPE), { status: 400, code: 'validation_failed' }, 'repeated token')
    assertOAuthError(await hostile(revoke, 'token_type_hint=refresh_token', FORM_TYPE), { status: 400, code: 'validation_failed' }, 'form without token')
    assertOAuthError(await hostile(revoke, '', FORM_TYPE), { status: 400, code: 'validation_failed' }, 'empty form')
    assertOAuthError(await hostile(token, `grant_type=refresh_token&refresh_token=${'a'.repeat(5000)}`, FORM_TYPE), { status: 400, code: 'validation_failed' }, 'refresh_token of 5000')
  })

  it('a form body to a JSON-only endpoint is 415, even when it is well-formed', async () => {
    for (const ep of endpoints.filter((e) => !e.oauth)) {
      const form = new URLSearchParams(ep.valid() as Record<string, string>).toString()
      assertProblem(await hostile(ep, form, FORM_TYPE), { status: 415, code: 'unsupported_media_type' }, `${ep.id} form body`)
    }
    assertProblem(await hostile(byId('login'), `email=${encodeURIComponent(victim.email)}&password=${encodeURIComponent(VALID_PASSWORD)}`, FORM_TYPE), { status: 415, code: 'unsupported_media_type' }, 'login with a correct form body')
  })

  describe('request ids', () => {
    it('echoes a well-formed X-Request-Id in the response header and in problem bodies', async () => {
      const ok = await t.app.inject({ method: 'GET', url: '/livez', headers: { 'x-request-id': 'abc-123' } })
      assert.equal(ok.headers['x-request-id'], 'abc-123')
      const missing = await t.app.inject({ method: 'GET', url: '/nope', headers: { 'x-request-id': 'abc-123' } })
      assert.equal(assertProblem(missing, { status: 404, code: 'not_found' }, 'unknown route').request_id, 'abc-123')
      const invalid = await t.app.inject({ method: 'POST', url: '/v1/accounts', headers: { 'x-request-id': 'trace.1:2_3-4' }, payload: { email: 5 } })
      assert.equal(assertProblem(invalid, { status: 400, code: 'validation_failed' }, 'validation').request_id, 'trace.1:2_3-4')
      const oauth = await t.app.inject({ method: 'POST', url: '/oauth/token', headers: { 'x-request-id': 'abc-123' }, payload: { grant_type: 5 } })
      assert.equal(oauth.headers['x-request-id'], 'abc-123')
      assert.equal(oauth.statusCode, 400)
    })

    it('replaces a malformed X-Request-Id with a generated UUID', async () => {
      const malformed = ['has spaces', 'a'.repeat(300), 'a'.repeat(129), 'a\u0001b', 'a\tb', 'a\r\nx-injected: 1', '', '<script>alert(1)</script>', "abc';DROP TABLE accounts;--", '../../etc/passwd', 'é']
      for (const id of malformed) {
        badInputs++
        const res = await t.app.inject({ method: 'GET', url: '/nope', headers: { 'x-request-id': id } })
        const generated = String(res.headers['x-request-id'])
        assert.match(generated, UUID, `for ${JSON.stringify(id.slice(0, 20))}`)
        assert.notEqual(generated, id)
        assert.equal(res.headers['x-injected'], undefined)
        assert.equal(assertProblem(res, { status: 404, code: 'not_found' }, `request id ${JSON.stringify(id.slice(0, 20))}`).request_id, generated)
      }
      const a = await t.app.inject({ method: 'GET', url: '/livez' })
      const b = await t.app.inject({ method: 'GET', url: '/livez' })
      assert.match(String(a.headers['x-request-id']), UUID)
      assert.notEqual(a.headers['x-request-id'], b.headers['x-request-id'])
    })
  })

  describe('routes, health and discovery', () => {
    it('answers unknown routes and unknown methods with 404 problem+json not_found', async () => {
      const requests: Array<[string, string]> = [
        ['GET', '/nope'], ['GET', '/v1/accounts'], ['POST', '/v1/me'], ['PUT', '/v1/me'], ['GET', '/v1/me/../../etc/passwd'],
        ['GET', '/v1/me/%2e%2e/%2e%2e/etc/passwd'], ['GET', '/.env'], ['GET', '/admin'], ['GET', `/${'a'.repeat(10_000)}`],
        ['PROPFIND', '/v1/me'], ['TRACE', '/livez'], ['GET', '/%00'], ['GET', '/oauth/token'], ['POST', '/oauth/authorize'],
      ]
      for (const [method, url] of requests) {
        badInputs++
        const res = await t.app.inject({ method: method as 'GET', url })
        assertProblem(res, { status: 404, code: 'not_found' }, `${method} ${url.slice(0, 40)}`)
      }
    })

    it('answers a malformed percent-encoded path with 400 problem+json, not the framework\'s default body', async () => {
      for (const url of ['/%zz', '/v1/%E0%A4%A', '/v1/me/%']) {
        badInputs++
        const res = await t.app.inject({ method: 'GET', url })
        assertProblem(res, { status: 400, code: 'malformed_request' }, `GET ${url}`)
      }
    })

    it('GET /livez and GET /readyz answer 200', async () => {
      const live = await t.app.inject({ method: 'GET', url: '/livez' })
      assert.equal(live.statusCode, 200)
      assert.equal(live.json<{ status: string }>().status, 'ok')
      const ready = await t.app.inject({ method: 'GET', url: '/readyz' })
      assert.equal(ready.statusCode, 200)
      assert.equal(ready.json<{ status: string }>().status, 'ready')
    })

    it('GET /openapi.json is an OpenAPI 3.1 document naming every operation', async () => {
      const res = await t.app.inject({ method: 'GET', url: '/openapi.json' })
      assert.equal(res.statusCode, 200)
      const doc = res.json<{ openapi: string; paths: Record<string, Record<string, { operationId?: string }>> }>()
      assert.match(doc.openapi, /^3\.1\.\d+$/)
      const ids = Object.values(doc.paths).flatMap((ops) => Object.values(ops).map((op) => op.operationId)).filter((id): id is string => typeof id === 'string')
      assert.equal(new Set(ids).size, ids.length, `operationIds are unique: ${ids.join(', ')}`)
      for (const id of ['register', 'login', 'token', 'revoke', 'logout', 'getMe', 'updateMe', 'changePassword', 'deleteMe', 'getJwks', 'getServerMetadata', 'livez', 'readyz',
        'requestEmailVerification', 'confirmEmailVerification', 'requestPasswordReset', 'confirmPasswordReset', 'requestEmailChange', 'confirmEmailChange']) {
        assert.ok(ids.includes(id), `operationId ${id} in ${ids.join(', ')}`)
      }
      for (const ep of endpoints) assert.ok(ids.includes(ep.id), `the hostile-input table covers a documented operation: ${ep.id}`)
    })

    it('GET /docs serves the API reference as HTML', async () => {
      let res = await t.app.inject({ method: 'GET', url: '/docs' })
      if (res.statusCode >= 300 && res.statusCode < 400) {
        const location = String(res.headers.location)
        res = await t.app.inject({ method: 'GET', url: new URL(location, 'http://tessera.test/docs').pathname })
      }
      assert.equal(res.statusCode, 200)
      assert.match(String(res.headers['content-type']), /^text\/html/)
      assert.match(res.body, /<html/i)
    })

    it('publishes RFC 8414 metadata whose issuer is the token issuer and whose endpoints live under it', async () => {
      const res = await t.app.inject({ method: 'GET', url: '/.well-known/oauth-authorization-server' })
      assert.equal(res.statusCode, 200)
      const meta = res.json<{ issuer: string; token_endpoint: string; revocation_endpoint: string; jwks_uri: string; grant_types_supported: string[] }>()
      assert.equal(meta.issuer, t.config.jwt.issuer)
      for (const url of [meta.token_endpoint, meta.revocation_endpoint, meta.jwks_uri]) {
        assert.ok(url.startsWith(`${meta.issuer}/`), `${url} is under ${meta.issuer}`)
      }
      assert.equal(new URL(meta.token_endpoint).pathname, '/oauth/token')
      assert.equal(new URL(meta.revocation_endpoint).pathname, '/oauth/revoke')
      assert.equal(new URL(meta.jwks_uri).pathname, '/.well-known/jwks.json')
      assert.equal((await t.app.inject({ method: 'GET', url: new URL(meta.jwks_uri).pathname })).statusCode, 200)
      const token = await t.app.inject({ method: 'POST', url: new URL(meta.token_endpoint).pathname, headers: FORM_TYPE, payload: 'grant_type=refresh_token' })
      assert.equal(token.json<{ error: string }>().error, 'invalid_request', 'the advertised token endpoint is the real one')
      assert.ok(meta.grant_types_supported.includes('refresh_token'))
    })
  })
})
