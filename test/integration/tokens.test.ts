import assert from 'node:assert/strict'
import { createHmac, generateKeyPairSync, randomUUID, sign as cryptoSign, type KeyObject } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import type { LightMyRequestResponse } from 'fastify'
import {
  calculateJwkThumbprint, createLocalJWKSet, decodeJwt, decodeProtectedHeader, exportJWK, jwtVerify, SignJWT,
  type JSONWebKeySet, type JWK,
} from 'jose'
import { FakeClock } from '../helpers/clock.ts'
import { bearer, createTestApp, login, signUp, type TestApp, type Tokens } from '../helpers/app.ts'

type Json = Record<string, unknown>
type Signer = (input: Buffer) => Buffer

interface ProblemBody {
  type: string
  status: number
  code: string
  detail?: string
  request_id?: string
}

/** Stack frames, source paths and library internals: none may reach a client. */
const LEAK = /\bat \S+ \(|\bat (?:async )?\S+:\d+:\d+|node:internal|node_modules|\.ts:\d+|ERR_JW[STKE]|JOSE|JWSSignature|JWTClaim|TypeError|SyntaxError/

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k', 'oth'] as const

let attacks = 0

function b64(value: unknown): string {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url')
}

/** A compact JWS built by hand: `sign` gets the signing input and returns the raw signature. */
function compact(header: Json, payload: Json, sign: Signer): string {
  const input = `${b64(header)}.${b64(payload)}`
  return `${input}.${sign(Buffer.from(input)).toString('base64url')}`
}

function signerFor(alg: string, key: KeyObject): Signer {
  switch (alg) {
    case 'EdDSA': return (input) => cryptoSign(null, input, key)
    case 'ES256': return (input) => cryptoSign('sha256', input, { key, dsaEncoding: 'ieee-p1363' })
    case 'RS256': return (input) => cryptoSign('sha256', input, key)
    default: throw new Error(`no signer for ${alg}`)
  }
}

function hmac(hash: 'sha256' | 'sha384' | 'sha512', secret: Buffer | string): Signer {
  return (input) => createHmac(hash, secret).update(input).digest()
}

const BASE64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'

/** Flips one bit of the 6-bit value at `position` (bit 5 is a data bit even in a segment's last character). */
function flipBit(token: string, position: number, bit: number): string {
  const index = BASE64URL.indexOf(token.charAt(position))
  if (index < 0) throw new Error(`not a base64url character at ${position}`)
  return token.slice(0, position) + BASE64URL.charAt(index ^ (1 << bit)) + token.slice(position + 1)
}

/** @param options.errorCode false where RFC 6750 §3.1 leaves the `error` attribute open (no or foreign credentials). */
function assertInvalidToken(res: LightMyRequestResponse, label: string, options: { errorCode?: boolean } = {}): ProblemBody {
  const where = `${label}: got ${res.statusCode} ${res.body.slice(0, 300)}`
  assert.equal(res.statusCode, 401, where)
  assert.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8', where)
  const body = res.json<ProblemBody>()
  assert.equal(body.code, 'invalid_token', where)
  assert.equal(body.status, 401, where)
  assert.equal(body.type, 'urn:tessera:problem:invalid_token', where)
  assert.equal(body.request_id, res.headers['x-request-id'], where)
  const challenge = String(res.headers['www-authenticate'])
  assert.match(challenge, /^Bearer\b/, `${label}: WWW-Authenticate is ${challenge}`)
  if (options.errorCode !== false) assert.match(challenge, /error="invalid_token"/, `${label}: WWW-Authenticate is ${challenge}`)
  assert.doesNotMatch(res.body, LEAK, where)
  return body
}

function uncompressedPoint(jwk: JWK): Buffer {
  return Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x ?? '', 'base64url'), Buffer.from(jwk.y ?? '', 'base64url')])
}

for (const algorithm of ['EdDSA', 'ES256'] as const) {
  describe(`access tokens (${algorithm}): every forged, tampered or malformed token gets 401 invalid_token, never 500`, () => {
    const clock = new FakeClock(new Date())
    let t: TestApp
    let victim: Tokens & { email: string }
    let sub: string
    let sid: string
    const attacker = {
      ed25519: generateKeyPairSync('ed25519'),
      p256: generateKeyPairSync('ec', { namedCurve: 'P-256' }),
      rsa: generateKeyPairSync('rsa', { modulusLength: 2048 }),
    }
    const attackerKeyFor = { EdDSA: attacker.ed25519, ES256: attacker.p256, RS256: attacker.rsa } as const

    before(async () => {
      t = await createTestApp({ clock, env: { TESSERA_JWT_ALGORITHM: algorithm } })
      victim = await signUp(t.app)
      const claims = decodeJwt(victim.access_token)
      assert.equal(typeof claims.sub, 'string')
      assert.equal(typeof claims.sid, 'string')
      sub = claims.sub as string
      sid = claims.sid as string
    })
    after(async () => {
      await t.close()
    })

    function me(authorization?: string): Promise<LightMyRequestResponse> {
      attacks++
      return t.app.inject({ method: 'GET', url: '/v1/me', headers: authorization === undefined ? {} : { authorization } })
    }

    function nowSeconds(): number {
      return Math.floor(clock.now().getTime() / 1000)
    }

    function ours() {
      return t.deps.keys.signingKey()
    }

    function validHeader(): Json {
      return { alg: ours().alg, typ: 'at+jwt', kid: ours().kid }
    }

    function validClaims(): Json {
      const iat = nowSeconds()
      return {
        iss: t.config.jwt.issuer, aud: t.config.jwt.audience, sub, sid, jti: randomUUID(), client_id: 'tessera',
        iat, exp: iat + t.config.jwt.accessTokenTtlSeconds,
      }
    }

    /** A token signed with OUR key: otherwise valid, with exactly the given defects (undefined removes a member). */
    function mint(headerPatch: Json = {}, claimsPatch: Json = {}): string {
      return compact({ ...validHeader(), ...headerPatch }, { ...validClaims(), ...claimsPatch }, signerFor(ours().alg, ours().privateKey))
    }

    it('accepts a control token minted with our key, so each rejection below comes from its one defect', async () => {
      const handMade = await me(`Bearer ${mint()}`)
      assert.equal(handMade.statusCode, 200, handMade.body)
      assert.equal(handMade.json<{ id: string }>().id, sub)
      const viaJose = await new SignJWT({ sid, client_id: 'tessera' })
        .setProtectedHeader({ alg: ours().alg, typ: 'at+jwt', kid: ours().kid })
        .setIssuer(t.config.jwt.issuer).setAudience(t.config.jwt.audience).setSubject(sub).setJti(randomUUID())
        .setIssuedAt(nowSeconds()).setExpirationTime(nowSeconds() + 600)
        .sign(ours().privateKey)
      assert.equal((await me(`Bearer ${viaJose}`)).statusCode, 200)
    })

    it('refuses alg "none" (unsigned) in every spelling, whatever the signature segment holds', async () => {
      const realSignature = victim.access_token.split('.')[2] ?? ''
      for (const alg of ['none', 'None', 'NONE', 'nOnE']) {
        const unsigned = `${b64({ ...validHeader(), alg })}.${b64(validClaims())}`
        for (const signature of ['', 'AAAA', realSignature]) {
          assertInvalidToken(await me(`Bearer ${unsigned}.${signature}`), `alg ${alg} with signature "${signature.slice(0, 8)}"`)
        }
      }
    })

    it('refuses HS256/384/512 tokens MACed with our public key in any encoding (algorithm confusion)', async () => {
      const jwk = ours().publicJwk
      const spkiPem = ours().publicKey.export({ format: 'pem', type: 'spki' })
      const spkiDer = ours().publicKey.export({ format: 'der', type: 'spki' })
      const secrets: Array<[string, Buffer | string]> = [
        ['JWK x as text', jwk.x ?? ''],
        ['JWK x decoded', Buffer.from(jwk.x ?? '', 'base64url')],
        ['SPKI PEM', spkiPem],
        ['SPKI DER', spkiDer],
        ['JWK as JSON', JSON.stringify(jwk)],
        ['kid', ours().kid],
      ]
      if (algorithm === 'ES256') secrets.push(['uncompressed point', uncompressedPoint(jwk)])
      for (const [name, secret] of secrets) {
        for (const [alg, hash] of [['HS256', 'sha256'], ['HS384', 'sha384'], ['HS512', 'sha512']] as const) {
          const forged = compact({ ...validHeader(), alg }, validClaims(), hmac(hash, secret))
          assertInvalidToken(await me(`Bearer ${forged}`), `${alg} keyed with ${name}`)
        }
      }
    })

    it('refuses EdDSA, ES256 and RS256 tokens signed by an attacker key that carry our kid', async () => {
      for (const alg of ['EdDSA', 'ES256', 'RS256'] as const) {
        const key = attackerKeyFor[alg].privateKey
        const handMade = compact({ ...validHeader(), alg }, validClaims(), signerFor(alg, key))
        assertInvalidToken(await me(`Bearer ${handMade}`), `hand-built ${alg} with our kid`)
        const viaJose = await new SignJWT({ sid, client_id: 'tessera' })
          .setProtectedHeader({ alg, typ: 'at+jwt', kid: ours().kid })
          .setIssuer(t.config.jwt.issuer).setAudience(t.config.jwt.audience).setSubject(sub).setJti(randomUUID())
          .setIssuedAt(nowSeconds()).setExpirationTime(nowSeconds() + 600)
          .sign(key)
        assertInvalidToken(await me(`Bearer ${viaJose}`), `jose-signed ${alg} with our kid`)
      }
    })

    it('refuses a token whose header embeds a key (jwk), even the attacker\'s own matching key or ours', async () => {
      const pair = attackerKeyFor[algorithm]
      const attackerJwk = await exportJWK(pair.publicKey)
      const attackerKid = await calculateJwkThumbprint(attackerJwk)
      for (const kid of [attackerKid, ours().kid, undefined]) {
        const forged = compact({ ...validHeader(), kid, jwk: { ...attackerJwk, kid: attackerKid } }, validClaims(), signerFor(algorithm, pair.privateKey))
        assertInvalidToken(await me(`Bearer ${forged}`), `embedded attacker jwk, kid ${String(kid)}`)
      }
      // Signed with our key and carrying our own public key: only the header rule can refuse it.
      const body = assertInvalidToken(await me(`Bearer ${mint({ jwk: ours().publicJwk })}`), 'our key in an embedded jwk')
      assert.match(body.detail ?? '', /"jwk"/)
    })

    it('refuses jku, x5u, x5c, x5t and x5t#S256 headers, even on a token signed with our key', async () => {
      const attackerUrl = 'https://attacker.example/.well-known/jwks.json'
      const foreign: Array<[string, unknown]> = [
        ['jku', attackerUrl],
        ['x5u', 'https://attacker.example/cert.pem'],
        ['x5c', [Buffer.from('not really a certificate').toString('base64')]],
        ['x5t', b64('thumbprint')],
        ['x5t#S256', b64('thumbprint-s256')],
      ]
      for (const [name, value] of foreign) {
        const body = assertInvalidToken(await me(`Bearer ${mint({ [name]: value })}`), `header ${name}`)
        assert.match(body.detail ?? '', new RegExp(`"${name}"`), `${name} is refused by the header rule`)
        const byAttacker = compact({ ...validHeader(), [name]: value }, validClaims(), signerFor(algorithm, attackerKeyFor[algorithm].privateKey))
        assertInvalidToken(await me(`Bearer ${byAttacker}`), `header ${name}, attacker-signed`)
      }
    })

    it('refuses a critical header extension it does not understand', async () => {
      assertInvalidToken(await me(`Bearer ${mint({ crit: ['x-tessera-unknown'], 'x-tessera-unknown': true })}`), 'crit unknown')
      assertInvalidToken(await me(`Bearer ${mint({ crit: [] })}`), 'crit empty')
    })

    it('refuses an unknown, missing or non-string kid on a token signed with our key', async () => {
      const kids: unknown[] = [
        'unknown', randomUUID(), b64('x'.repeat(32)), '', ' ', `${ours().kid} `, ours().kid.slice(0, -1) + (ours().kid.endsWith('A') ? 'B' : 'A'),
        '../../../../etc/passwd', "' OR '1'='1", '__proto__', 'constructor', 'x'.repeat(2000),
        undefined, null, 0, 1, true, [ours().kid], { kid: ours().kid },
      ]
      for (const kid of kids) {
        assertInvalidToken(await me(`Bearer ${mint({ kid })}`), `kid ${JSON.stringify(kid) ?? 'missing'}`)
      }
    })

    it('refuses an expired token once exp + leeway has passed, on first use and from the verification cache', async () => {
      const leeway = t.config.jwt.leewaySeconds
      const cached = await login(t.app, victim.email)
      const fresh = await login(t.app, victim.email)
      assert.equal((await me(`Bearer ${cached.access_token}`)).statusCode, 200, 'used (and cached) while valid')
      clock.advanceSeconds(600 + leeway - 1)
      assert.equal((await me(`Bearer ${cached.access_token}`)).statusCode, 200, 'still inside the leeway')
      clock.advanceSeconds(2)
      assertInvalidToken(await me(`Bearer ${cached.access_token}`), 'expired, cached')
      assertInvalidToken(await me(`Bearer ${fresh.access_token}`), 'expired, never seen')
      const now = nowSeconds()
      assertInvalidToken(await me(`Bearer ${mint({}, { iat: now - 3600, exp: now - leeway - 1 })}`), 'minted already expired')
      assertInvalidToken(await me(`Bearer ${mint({}, { iat: now - 3600, exp: 0 })}`), 'exp 0')
      assertInvalidToken(await me(`Bearer ${mint({}, { iat: now - 3600, exp: -1 })}`), 'exp negative')
    })

    it('refuses a token that is not valid yet: nbf or iat beyond the leeway', async () => {
      const now = nowSeconds()
      const leeway = t.config.jwt.leewaySeconds
      assertInvalidToken(await me(`Bearer ${mint({}, { nbf: now + 3600 })}`), 'nbf in an hour')
      assertInvalidToken(await me(`Bearer ${mint({}, { iat: now + 3600, exp: now + 4200 })}`), 'iat in an hour')
      assertInvalidToken(await me(`Bearer ${mint({}, { iat: now + 10 * 365 * 86_400, exp: now + 10 * 365 * 86_400 + 600 })}`), 'iat in ten years')
      assertInvalidToken(await me(`Bearer ${mint({}, { iat: now + leeway + 5, exp: now + leeway + 605 })}`), 'iat just beyond the leeway')
      // The control: skew inside the leeway is tolerated, so the refusals above are the iat rule at work.
      assert.equal((await me(`Bearer ${mint({}, { iat: now + leeway - 5, exp: now + leeway + 595 })}`)).statusCode, 200)
    })

    it('refuses a wrong or missing iss, aud or typ', async () => {
      const issuer = t.config.jwt.issuer
      const audience = t.config.jwt.audience
      const claimDefects: Array<[string, Json]> = [
        ['iss foreign', { iss: 'https://attacker.example' }],
        ['iss with trailing slash', { iss: `${issuer}/` }],
        ['iss upper-cased', { iss: issuer.toUpperCase() }],
        ['iss as array', { iss: [issuer] }],
        ['iss missing', { iss: undefined }],
        ['aud foreign', { aud: 'https://other-api.example' }],
        ['aud empty array', { aud: [] }],
        ['aud foreign array', { aud: ['https://other-api.example'] }],
        ['aud with trailing slash', { aud: `${audience}/` }],
        ['aud missing', { aud: undefined }],
      ]
      for (const [label, patch] of claimDefects) assertInvalidToken(await me(`Bearer ${mint({}, patch)}`), label)
      for (const typ of ['JWT', 'jwt', 'application/jwt', 'dpop+jwt', 'logout+jwt', 'at+jwt+x', '', undefined, 1, null]) {
        assertInvalidToken(await me(`Bearer ${mint({ typ })}`), `typ ${JSON.stringify(typ) ?? 'missing'}`)
      }
    })

    it('refuses a token missing any required claim, or carrying one with the wrong type', async () => {
      for (const claim of ['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'sid']) {
        assertInvalidToken(await me(`Bearer ${mint({}, { [claim]: undefined })}`), `missing ${claim}`)
      }
      const wrongTypes: Array<[string, Json]> = [
        ['sub number', { sub: 42 }], ['sub object', { sub: { id: sub } }], ['sub null', { sub: null }],
        ['sid number', { sid: 42 }], ['sid array', { sid: [sid] }], ['sid null', { sid: null }],
        ['jti number', { jti: 42 }], ['jti null', { jti: null }],
        ['exp string', { exp: String(nowSeconds() + 600) }], ['exp null', { exp: null }],
        ['iat string', { iat: String(nowSeconds()) }], ['iat null', { iat: null }],
      ]
      for (const [label, patch] of wrongTypes) assertInvalidToken(await me(`Bearer ${mint({}, patch)}`), label)
      const notJsonObject = `${b64(validHeader())}.${b64('[1,2,3]')}`
      assertInvalidToken(await me(`Bearer ${notJsonObject}.${signerFor(ours().alg, ours().privateKey)(Buffer.from(notJsonObject)).toString('base64url')}`), 'payload is an array')
    })

    it('refuses a token signed by us whose sub or sid is not a UUID (401, not a database error)', async () => {
      for (const [label, patch] of [
        ['sub not a uuid', { sub: 'not-a-uuid' }],
        ['sid not a uuid', { sid: 'not-a-uuid' }],
        ['sub empty', { sub: '' }],
        ['sid with SQL', { sid: "' OR 1=1 --" }],
      ] as Array<[string, Json]>) {
        const token = mint({}, patch)
        assertInvalidToken(await me(`Bearer ${token}`), label)
        // RFC 7009 §2.2: an invalid token is answered like any unknown one, not with a database error.
        const revoked = await t.app.inject({ method: 'POST', url: '/oauth/revoke', payload: { token } })
        assert.equal(revoked.statusCode, 200, `revoke, ${label}: ${revoked.body}`)
      }
    })

    it('refuses a valid token with one bit flipped at any position of header, payload or signature', async () => {
      const { access_token: token } = await login(t.app, victim.email)
      assert.equal((await me(`Bearer ${token}`)).statusCode, 200)
      const [header = '', payload = ''] = token.split('.')
      let flips = 0
      for (let position = 0; position < token.length; position++) {
        if (token.charAt(position) === '.') continue
        const segment = position < header.length ? 'header' : position < header.length + 1 + payload.length ? 'payload' : 'signature'
        // Bit 5 carries data in every position; bit 0 does too, except in a segment's padded last character.
        const bits = token.charAt(position + 1) === '.' || position === token.length - 1 ? [5] : [0, 5]
        for (const bit of bits) {
          const flipped = flipBit(token, position, bit)
          assertInvalidToken(await me(`Bearer ${flipped}`), `${segment} position ${position} bit ${bit}`)
          flips++
        }
      }
      assert.ok(flips >= token.length, `flipped ${flips} bits`)
      // The original is untouched and still works: the refusals were the flips.
      assert.equal((await me(`Bearer ${token}`)).statusCode, 200)
    })

    it('refuses truncated tokens, wrong segment counts and characters outside base64url', async () => {
      const { access_token: token } = await login(t.app, victim.email)
      const [header = '', payload = '', signature = ''] = token.split('.')
      const cuts = [1, 10, header.length, header.length + 1, header.length + 1 + payload.length, header.length + 2 + payload.length, token.length - 1, token.length - 10]
      for (const cut of cuts) assertInvalidToken(await me(`Bearer ${token.slice(0, cut)}`), `truncated to ${cut}`)
      assertInvalidToken(await me(`Bearer ${token.slice(1)}`), 'first character dropped')
      const shapes: Array<[string, string]> = [
        ['two segments', `${header}.${payload}`],
        ['four segments', `${token}.${signature}`],
        ['trailing dot', `${token}.`],
        ['leading dot', `.${token}`],
        ['five segments (JWE shape)', `${header}.${payload}.${signature}.${payload}.${signature}`],
        ['empty payload', `${header}..${signature}`],
        ['empty header', `.${payload}.${signature}`],
        ['dots only', '..'],
        ['four dots', '....'],
        ['segments swapped', `${payload}.${header}.${signature}`],
        ['padded', `${token}==`],
        ['standard base64 alphabet', `${header}.${payload}.${Buffer.from(signature, 'base64url').toString('base64')}`],
        ['raw JSON header', `{"alg":"none"}.${payload}.${signature}`],
        ['single garbage word', 'deadbeef'],
        ['JSON', JSON.stringify({ alg: 'none' })],
      ]
      for (const [label, value] of shapes) assertInvalidToken(await me(`Bearer ${value}`), label)
      for (const char of ['!', '*', '%', '$', '"', '\'', '<', '>', '\\', '+', '/', '=', '~', '`', '{', ',', ';', '\t']) {
        const middle = Math.floor(signature.length / 2)
        const corrupt = `${header}.${payload}.${signature.slice(0, middle)}${char}${signature.slice(middle + 1)}`
        assertInvalidToken(await me(`Bearer ${corrupt}`), `signature with ${JSON.stringify(char)}`)
        assertInvalidToken(await me(`Bearer ${header}${char}.${payload}.${signature}`), `header with ${JSON.stringify(char)}`)
      }
      assertInvalidToken(await me(`Bearer ${header}.${payload} .${signature}`), 'space inside')
    })

    it('refuses a 10 KB token, even one signed with our key', async () => {
      const big = mint({}, { padding: 'a'.repeat(10_000) })
      assert.ok(big.length > 10_000)
      assertInvalidToken(await me(`Bearer ${big}`), '10 KB signed by us')
      const junk = `${'a'.repeat(3400)}.${'b'.repeat(3400)}.${'c'.repeat(3400)}`
      assertInvalidToken(await me(`Bearer ${junk}`), '10 KB of base64url junk')
      assertInvalidToken(await me(`Bearer ${'x'.repeat(10_240)}`), '10 KB without dots')
    })

    it('refuses a missing, empty or non-Bearer Authorization header', async () => {
      const noHeader = await me()
      assertInvalidToken(noHeader, 'no Authorization header', { errorCode: false })
      assert.equal(noHeader.headers['www-authenticate'], 'Bearer realm="tessera"', 'RFC 6750 §3.1: no error code when no credentials were sent')
      const { access_token: token } = await login(t.app, victim.email)
      assert.equal((await me(`Bearer ${token}`)).statusCode, 200, 'control: the token itself is good')
      const headers = [
        'Bearer', 'Bearer ', 'Bearer    ', '', ' ', `Basic ${Buffer.from('user:pass').toString('base64')}`, `Basic ${token}`,
        `Token ${token}`, `JWT ${token}`, `DPoP ${token}`, `Bearer: ${token}`, `Bearer${token}`, `Bearer ${token} ${token}`,
        `Bearer ${token}, Bearer ${token}`, `Bearer "${token}"`, `Bearer\t${token}`, token,
      ]
      for (const authorization of headers) assertInvalidToken(await me(authorization), `Authorization ${JSON.stringify(authorization.slice(0, 20))}`, { errorCode: false })
    })

    it('accepts the scheme name in any case (RFC 7235 §2.1: auth schemes are case-insensitive)', async () => {
      const { access_token: token } = await login(t.app, victim.email)
      for (const scheme of ['bearer', 'BEARER', 'bEaReR']) {
        const res = await me(`${scheme} ${token}`)
        assert.equal(res.statusCode, 200, `${scheme}: ${res.body}`)
      }
    })

    it('refuses a still-unexpired token once its session has ended (logout)', async () => {
      const tokens = await signUp(t.app)
      assert.equal((await me(`Bearer ${tokens.access_token}`)).statusCode, 200)
      const out = await t.app.inject({ method: 'POST', url: '/v1/auth/logout', headers: bearer(tokens.access_token) })
      assert.equal(out.statusCode, 204)
      assertInvalidToken(await me(`Bearer ${tokens.access_token}`), 'token of a logged-out session')
      assertInvalidToken(await me(`Bearer ${mint({}, { sub: decodeJwt(tokens.access_token).sub, sid: decodeJwt(tokens.access_token).sid })}`), 'fresh token for the ended session')
    })

    it('publishes only public key members in the JWKS, each with its RFC 7638 thumbprint as kid, alg and use', async () => {
      const res = await t.app.inject({ method: 'GET', url: '/.well-known/jwks.json' })
      assert.equal(res.statusCode, 200)
      assert.match(String(res.headers['content-type']), /^application\/jwk-set\+json/)
      assert.match(String(res.headers['cache-control']), /\bmax-age=\d+/)
      const jwks = res.json<{ keys: JWK[] }>()
      assert.ok(jwks.keys.length >= 1)
      assert.ok(jwks.keys.some((k) => k.kid === ours().kid), 'the signing key is published')
      for (const key of jwks.keys) {
        for (const member of PRIVATE_MEMBERS) assert.equal(member in key, false, `kid ${key.kid} exposes "${member}"`)
        assert.equal(key.kid, await calculateJwkThumbprint(key, 'sha256'))
        assert.equal(key.alg, algorithm)
        assert.equal(key.use, 'sig')
        assert.equal(key.kty, algorithm === 'EdDSA' ? 'OKP' : 'EC')
      }
      assert.doesNotMatch(res.body, /PRIVATE KEY/)
    })

    it('issues RFC 9068 access tokens that verify offline with jose and the published JWKS', async () => {
      const tokens = await login(t.app, victim.email)
      const jwks = (await t.app.inject({ method: 'GET', url: '/.well-known/jwks.json' })).json<JSONWebKeySet>()
      const { payload, protectedHeader } = await jwtVerify(tokens.access_token, createLocalJWKSet(jwks), {
        issuer: t.config.jwt.issuer,
        audience: t.config.jwt.audience,
        typ: 'at+jwt',
        algorithms: [algorithm],
        currentDate: clock.now(),
      })
      assert.deepEqual(decodeProtectedHeader(tokens.access_token), protectedHeader)
      assert.equal(protectedHeader.typ, 'at+jwt')
      assert.equal(protectedHeader.alg, algorithm)
      assert.equal(protectedHeader.kid, ours().kid)
      for (const claim of ['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'sid', 'client_id']) assert.ok(claim in payload, `claim ${claim}`)
      assert.equal(payload.iss, t.config.jwt.issuer)
      assert.equal(payload.aud, t.config.jwt.audience)
      assert.equal(payload.sub, sub)
      assert.equal(payload.client_id, 'tessera')
      assert.equal((payload.exp ?? 0) - (payload.iat ?? 0), 600)
      assert.equal(tokens.expires_in, 600)
      const other = decodeJwt((await login(t.app, victim.email)).access_token)
      assert.notEqual(other.jti, payload.jti, 'every token has its own jti')
      assert.notEqual(other.sid, payload.sid, 'every login is its own session')
    })
  })
}

after(() => {
  console.log(`# token attacks tried: ${attacks}`)
})
