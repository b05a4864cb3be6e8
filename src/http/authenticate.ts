/**
 * Bearer authentication for protected routes: a signature check (cached per token string) and a
 * revocation check against the in-memory list. No I/O on this path.
 */
import type { FastifyRequest } from 'fastify'
import { AppError } from '../errors.ts'
import type { RevocationList } from '../sessions/revocation.ts'
import type { AccessTokenClaims, AccessTokens } from '../tokens/access-tokens.ts'

/** The caller of a user route: an account acting through one of its sessions. */
export interface Principal {
  readonly accountId: string
  readonly sessionId: string
  readonly claims: AccessTokenClaims
}

/** True when the token's session, or the token itself, was revoked. */
export function isAccessTokenRevoked(revocations: RevocationList, claims: AccessTokenClaims): boolean {
  return claims.sid !== undefined ? revocations.isSessionRevoked(claims.sid) : revocations.isTokenRevoked(claims.jti)
}

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null
  }
}

const BEARER = /^Bearer +([A-Za-z0-9._~+/-]+=*) *$/i

export function createAuthenticate(deps: { accessTokens: AccessTokens; revocations: RevocationList }) {
  return async function authenticate(request: FastifyRequest): Promise<void> {
    const header = request.headers.authorization
    if (header === undefined) throw new AppError('invalid_token', 'An access token is required (Authorization: Bearer <token>).')
    const match = BEARER.exec(header)
    if (!match?.[1]) throw new AppError('invalid_token', 'The Authorization header must be "Bearer <token>".')
    const claims = await deps.accessTokens.verify(match[1])
    // User routes take user tokens only: a service client's token has no account behind it.
    if (claims.sid === undefined) throw new AppError('invalid_token', 'This endpoint needs a user access token.')
    if (deps.revocations.isSessionRevoked(claims.sid)) throw new AppError('invalid_token', 'The session of this access token has ended.')
    request.principal = { accountId: claims.sub, sessionId: claims.sid, claims }
  }
}

/** The principal of an authenticated route; calling it elsewhere is a programming error. */
export function principalOf(request: FastifyRequest): Principal {
  if (request.principal === null) throw new Error('principalOf: route is not authenticated')
  return request.principal
}
