/**
 * Access tokens: RFC 9068 JWTs (`typ: at+jwt`), signed with the store's active key.
 *
 * Verification follows RFC 8725: only the configured algorithm, issuer and audience; the key is chosen
 * by `kid` among our own published keys, never taken from the token (`jwk`, `jku`, `x5u`, `x5c` are
 * refused outright). A signature check costs ~100 µs of CPU (PERFORMANCE.md), so verified tokens are
 * cached by their exact string until they expire; revocation is checked separately on every use.
 */
import { randomUUID, sign as cryptoSign } from 'node:crypto'
import { errors as joseErrors, jwtVerify, type JWTPayload } from 'jose'
import { LRUCache } from 'lru-cache'
import type { Clock } from '../clock.ts'
import type { Config } from '../config.ts'
import { AppError } from '../errors.ts'
import type { KeyStore } from '../keys/keys.service.ts'

/**
 * Verified claims. A user's token has `sid` (its session) and `sub` = the account id; a service client's
 * token (client_credentials) has no `sid`, and `sub` = `client_id`.
 */
export interface AccessTokenClaims {
  readonly sub: string
  readonly sid: string | undefined
  readonly client_id: string
  readonly jti: string
  readonly exp: number
  readonly iat: number
  readonly aud: string | string[]
  readonly scope: string | undefined
  /** A user's roles (`admin`…); empty for service clients. Changing roles ends the user's sessions. */
  readonly roles: readonly string[]
}

export interface IssuedAccessToken {
  readonly token: string
  readonly expiresIn: number
  readonly claims: AccessTokenClaims
}

export interface AccessTokens {
  issue(subject: { accountId: string; sessionId: string; roles: readonly string[] }): Promise<IssuedAccessToken>
  /** A service client's token (client_credentials grant): no session, `sub` = `client_id`. */
  issueForClient(client: { clientId: string; scope: string; audience: string | string[] }): Promise<IssuedAccessToken>
  /**
   * @param options.anyAudience accept tokens for any audience (introspection decides who may see what);
   *   by default only tokens for this service's own audience are accepted.
   * @throws AppError `invalid_token` for anything but a valid, current token of ours.
   */
  verify(token: string, options?: { anyAudience?: boolean }): Promise<AccessTokenClaims>
}

/** The OAuth client id of Tessera's own first-party API (RFC 9068 requires `client_id`). */
export const FIRST_PARTY_CLIENT_ID = 'tessera'
const MAX_TOKEN_LENGTH = 4096
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/
const FORBIDDEN_HEADERS = ['jwk', 'jku', 'x5u', 'x5c', 'x5t', 'x5t#S256'] as const

function invalid(message: string, cause?: unknown): AppError {
  return new AppError('invalid_token', message, {}, { cause })
}

export function createAccessTokens(deps: { keys: KeyStore; jwt: Config['jwt']; clock: Clock; onIssued?: (kind: 'user' | 'client') => void }): AccessTokens {
  const { keys, jwt, clock } = deps
  const cache = jwt.verifiedCacheSize > 0 ? new LRUCache<string, AccessTokenClaims>({ max: jwt.verifiedCacheSize }) : undefined

  /**
   * Compact JWS by hand with node:crypto: signing needs no parsing, and jose's sign() converts the key
   * to a CryptoKey on every call (≈ 20 % of a refresh's CPU in the benchmark). Verification stays jose's.
   */
  function sign(claims: AccessTokenClaims): string {
    const key = keys.signingKey()
    const header = { alg: key.alg, typ: 'at+jwt', kid: key.kid }
    const payload: Record<string, unknown> = { iss: jwt.issuer, sub: claims.sub, aud: claims.aud, exp: claims.exp, iat: claims.iat, jti: claims.jti, client_id: claims.client_id }
    if (claims.sid !== undefined) payload.sid = claims.sid
    if (claims.scope !== undefined) payload.scope = claims.scope
    if (claims.sid !== undefined) payload.roles = claims.roles
    const input = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`
    const signature = key.alg === 'EdDSA'
      ? cryptoSign(null, Buffer.from(input), key.privateKey)
      : cryptoSign('sha256', Buffer.from(input), { key: key.privateKey, dsaEncoding: 'ieee-p1363' })
    return `${input}.${signature.toString('base64url')}`
  }

  function baseClaims(): { jti: string; iat: number; exp: number } {
    const iat = Math.floor(clock.now().getTime() / 1000)
    return { jti: randomUUID(), iat, exp: iat + jwt.accessTokenTtlSeconds }
  }

  return {
    async issue({ accountId, sessionId, roles }) {
      const claims: AccessTokenClaims = { ...baseClaims(), sub: accountId, sid: sessionId, client_id: FIRST_PARTY_CLIENT_ID, aud: jwt.audience, scope: undefined, roles: [...roles] }
      deps.onIssued?.('user')
      return { token: sign(claims), expiresIn: jwt.accessTokenTtlSeconds, claims }
    },

    async issueForClient({ clientId, scope, audience }) {
      const claims: AccessTokenClaims = { ...baseClaims(), sub: clientId, sid: undefined, client_id: clientId, aud: audience, scope, roles: [] }
      deps.onIssued?.('client')
      return { token: sign(claims), expiresIn: jwt.accessTokenTtlSeconds, claims }
    },

    async verify(token, options = {}) {
      const nowSeconds = clock.now().getTime() / 1000
      const forUs = (aud: string | string[]) => (Array.isArray(aud) ? aud.includes(jwt.audience) : aud === jwt.audience)
      const cached = cache?.get(token)
      if (cached !== undefined) {
        if (cached.exp + jwt.leewaySeconds <= nowSeconds) {
          cache?.delete(token)
          throw invalid('The access token has expired.')
        }
        if (options.anyAudience !== true && !forUs(cached.aud)) throw invalid('The access token is not meant for this service.')
        return cached
      }
      if (token.length > MAX_TOKEN_LENGTH || !COMPACT_JWS.test(token)) throw invalid('The access token is malformed.')
      let payload: JWTPayload
      try {
        const result = await jwtVerify(token, async (header) => {
          for (const name of FORBIDDEN_HEADERS) {
            if (name in header) throw invalid(`The token header must not carry "${name}".`)
          }
          if (typeof header.kid !== 'string') throw invalid('The token has no key id.')
          const key = keys.verificationKey(header.kid) ?? (await keys.findVerificationKey(header.kid))
          if (key === undefined) throw invalid('The token was signed by an unknown key.')
          return key
        }, {
          algorithms: [jwt.algorithm],
          issuer: jwt.issuer,
          ...(options.anyAudience === true ? {} : { audience: jwt.audience }),
          typ: 'at+jwt',
          clockTolerance: jwt.leewaySeconds,
          currentDate: clock.now(),
          requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'client_id'],
        })
        payload = result.payload
      } catch (err) {
        if (err instanceof AppError) throw err
        if (err instanceof joseErrors.JWTExpired) throw invalid('The access token has expired.', err)
        if (err instanceof joseErrors.JOSEError) throw invalid('The access token is invalid.', err)
        throw invalid('The access token is invalid.', err)
      }
      const { sub, sid, jti, exp, iat, aud, client_id: clientId, scope, roles } = payload
      if (typeof sub !== 'string' || typeof jti !== 'string' || typeof exp !== 'number' || typeof iat !== 'number' ||
        typeof clientId !== 'string' || aud === undefined || (scope !== undefined && typeof scope !== 'string') ||
        (roles !== undefined && (!Array.isArray(roles) || roles.length > 32 || !roles.every((r) => typeof r === 'string')))) {
        throw invalid('The access token is missing required claims.')
      }
      // Shapes are checked because values reach SQL: a user token has UUID sub and sid; a client token
      // has no sid and sub = client_id. Anything else was not minted here.
      if (!UUID.test(jti)) throw invalid('The access token is missing required claims.')
      if (sid !== undefined ? typeof sid !== 'string' || !UUID.test(sub) || !UUID.test(sid) || clientId !== FIRST_PARTY_CLIENT_ID : sub !== clientId) {
        throw invalid('The access token is missing required claims.')
      }
      // A token "issued" in the future (beyond the leeway) is refused: it was not minted by this clock.
      if (iat > nowSeconds + jwt.leewaySeconds) throw invalid('The access token is not valid yet.')
      const claims: AccessTokenClaims = { sub, sid: sid as string | undefined, client_id: clientId, jti, exp, iat, aud, scope, roles: roles ?? [] }
      cache?.set(token, claims)
      return claims
    },
  }
}
