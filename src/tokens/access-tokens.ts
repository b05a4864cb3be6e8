/**
 * Access tokens: RFC 9068 JWTs (`typ: at+jwt`), signed with the store's active key.
 *
 * Verification follows RFC 8725: only the configured algorithm, issuer and audience; the key is chosen
 * by `kid` among our own published keys, never taken from the token (`jwk`, `jku`, `x5u`, `x5c` are
 * refused outright). A signature check costs ~100 µs of CPU (PERFORMANCE.md), so verified tokens are
 * cached by their exact string until they expire; revocation is checked separately on every use.
 */
import { randomUUID } from 'node:crypto'
import { errors as joseErrors, jwtVerify, SignJWT, type JWTPayload } from 'jose'
import { LRUCache } from 'lru-cache'
import type { Clock } from '../clock.ts'
import type { Config } from '../config.ts'
import { AppError } from '../errors.ts'
import type { KeyStore } from '../keys/keys.service.ts'

export interface AccessTokenClaims {
  readonly sub: string
  readonly sid: string
  readonly jti: string
  readonly exp: number
  readonly iat: number
  readonly scope?: string
}

export interface IssuedAccessToken {
  readonly token: string
  readonly expiresIn: number
  readonly claims: AccessTokenClaims
}

export interface AccessTokens {
  issue(subject: { accountId: string; sessionId: string }): Promise<IssuedAccessToken>
  /** @throws AppError `invalid_token` for anything but a valid, current token of ours. */
  verify(token: string): Promise<AccessTokenClaims>
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

export function createAccessTokens(deps: { keys: KeyStore; jwt: Config['jwt']; clock: Clock; cacheSize?: number }): AccessTokens {
  const { keys, jwt, clock } = deps
  const cache = new LRUCache<string, AccessTokenClaims>({ max: deps.cacheSize ?? 10_000 })

  return {
    async issue({ accountId, sessionId }) {
      const key = keys.signingKey()
      const iat = Math.floor(clock.now().getTime() / 1000)
      const claims: AccessTokenClaims = { sub: accountId, sid: sessionId, jti: randomUUID(), iat, exp: iat + jwt.accessTokenTtlSeconds }
      const token = await new SignJWT({ sid: claims.sid, client_id: FIRST_PARTY_CLIENT_ID })
        .setProtectedHeader({ alg: key.alg, typ: 'at+jwt', kid: key.kid })
        .setIssuer(jwt.issuer)
        .setAudience(jwt.audience)
        .setSubject(claims.sub)
        .setJti(claims.jti)
        .setIssuedAt(claims.iat)
        .setExpirationTime(claims.exp)
        .sign(key.privateKey)
      return { token, expiresIn: jwt.accessTokenTtlSeconds, claims }
    },

    async verify(token) {
      const nowSeconds = clock.now().getTime() / 1000
      const cached = cache.get(token)
      if (cached !== undefined) {
        if (cached.exp + jwt.leewaySeconds > nowSeconds) return cached
        cache.delete(token)
        throw invalid('The access token has expired.')
      }
      if (token.length > MAX_TOKEN_LENGTH || !COMPACT_JWS.test(token)) throw invalid('The access token is malformed.')
      let payload: JWTPayload
      try {
        const result = await jwtVerify(token, (header) => {
          for (const name of FORBIDDEN_HEADERS) {
            if (name in header) throw invalid(`The token header must not carry "${name}".`)
          }
          if (typeof header.kid !== 'string') throw invalid('The token has no key id.')
          const key = keys.verificationKey(header.kid)
          if (key === undefined) throw invalid('The token was signed by an unknown key.')
          return key
        }, {
          algorithms: [jwt.algorithm],
          issuer: jwt.issuer,
          audience: jwt.audience,
          typ: 'at+jwt',
          clockTolerance: jwt.leewaySeconds,
          currentDate: clock.now(),
          requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'sid'],
        })
        payload = result.payload
      } catch (err) {
        if (err instanceof AppError) throw err
        if (err instanceof joseErrors.JWTExpired) throw invalid('The access token has expired.', err)
        if (err instanceof joseErrors.JOSEError) throw invalid('The access token is invalid.', err)
        throw invalid('The access token is invalid.', err)
      }
      const { sub, sid, jti, exp, iat } = payload
      if (typeof sub !== 'string' || typeof sid !== 'string' || typeof jti !== 'string' || typeof exp !== 'number' || typeof iat !== 'number') {
        throw invalid('The access token is missing required claims.')
      }
      // sub and sid are always our UUIDs: anything else was not minted by issue() and must not reach SQL.
      if (!UUID.test(sub) || !UUID.test(sid)) throw invalid('The access token is missing required claims.')
      // A token "issued" in the future (beyond the leeway) is refused: it was not minted by this clock.
      if (iat > nowSeconds + jwt.leewaySeconds) throw invalid('The access token is not valid yet.')
      const claims: AccessTokenClaims = { sub, sid, jti, exp, iat }
      cache.set(token, claims)
      return claims
    },
  }
}
