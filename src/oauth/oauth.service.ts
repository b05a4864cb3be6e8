/**
 * The OAuth 2.0 endpoints' logic: client authentication (RFC 6749 §2.3), the client_credentials grant,
 * RFC 7662 introspection and RFC 7009 revocation. User sessions and refresh rotation stay in sessions/.
 */
import * as audit from '../audit/audit.repository.ts'
import * as clientsRepository from '../clients/clients.repository.ts'
import type { Client, ClientCredentials, ClientsService } from '../clients/clients.service.ts'
import type { Clock } from '../clock.ts'
import type { Config } from '../config.ts'
import { withTransaction, type Pool } from '../db/pool.ts'
import { OAuthError } from '../errors.ts'
import { isAccessTokenRevoked } from '../http/authenticate.ts'
import type { RequestContext } from '../http/context.ts'
import type { RevocationList } from '../sessions/revocation.ts'
import * as sessionsRepository from '../sessions/sessions.repository.ts'
import type { SessionsService, TokenPair } from '../sessions/sessions.service.ts'
import type { AccessTokenClaims, AccessTokens } from '../tokens/access-tokens.ts'
import { looksLikeRefreshToken } from '../tokens/refresh-tokens.ts'

export interface ClientTokenResponse {
  access_token: string
  token_type: 'Bearer'
  expires_in: number
  scope: string
}

/** RFC 7662 §2.2. Inactive tokens get `{ active: false }` and nothing else. */
export type Introspection = { active: false } | {
  active: true
  scope?: string
  client_id: string
  token_type: 'Bearer'
  exp: number
  iat: number
  sub: string
  aud: string | string[]
  iss: string
  jti: string
  sid?: string
}

export function createOAuthService(deps: {
  db: Pool
  clock: Clock
  config: Config
  clients: ClientsService
  sessions: SessionsService
  accessTokens: AccessTokens
  revocations: RevocationList
}) {
  const { db, clock, config, clients, sessions, accessTokens, revocations } = deps

  function audiencesOf(claims: AccessTokenClaims): string[] {
    return Array.isArray(claims.aud) ? claims.aud : [claims.aud]
  }

  /** A client may learn about tokens issued to it, or meant for one of its audiences. */
  function mayInspect(client: Client, claims: AccessTokenClaims): boolean {
    return claims.client_id === client.clientId || audiencesOf(claims).some((a) => client.audiences.includes(a))
  }

  async function verifiedOrUndefined(token: string): Promise<AccessTokenClaims | undefined> {
    if (token.length > 4096 || looksLikeRefreshToken(token)) return undefined
    return accessTokens.verify(token, { anyAudience: true }).then((c) => c, () => undefined)
  }

  return {
    authenticateClient: (credentials: ClientCredentials) => clients.authenticateClient(credentials),

    /**
     * client_credentials (RFC 6749 §4.4): a service access token with the requested scopes (a subset
     * of the client's, all of them by default) for one of its audiences (RFC 8707 `resource`).
     * @throws OAuthError `invalid_scope`, `invalid_target`.
     */
    async clientCredentials(client: Client, input: { scope?: string | undefined; resource?: string | undefined }, ctx: RequestContext): Promise<ClientTokenResponse> {
      const requested = input.scope === undefined ? [...client.scopes] : input.scope.split(' ').filter((s) => s.length > 0)
      const refused = requested.filter((s) => !client.scopes.includes(s))
      if (refused.length > 0) throw new OAuthError('invalid_scope', `Scopes not allowed for this client: ${refused.join(' ')}`)
      let audience: string | string[]
      if (input.resource !== undefined) {
        if (!client.audiences.includes(input.resource)) throw new OAuthError('invalid_target', 'The resource is not an audience of this client.')
        audience = input.resource
      } else {
        audience = client.audiences.length === 0 ? config.jwt.audience : client.audiences.length === 1 ? (client.audiences[0] ?? config.jwt.audience) : [...client.audiences]
      }
      const scope = [...new Set(requested)].join(' ')
      const issued = await accessTokens.issueForClient({ clientId: client.clientId, scope, audience })
      await withTransaction(db, (tx) => audit.insertEvent(tx, { type: 'client.token_issued', accountId: null, actor: `client:${client.clientId}`, ...ctx, data: { client_id: client.clientId, scope, jti: issued.claims.jti }, occurredAt: clock.now() }))
      return { access_token: issued.token, token_type: 'Bearer', expires_in: issued.expiresIn, scope }
    },

    refresh: (refreshToken: string, ctx: RequestContext): Promise<TokenPair> => sessions.refresh(refreshToken, ctx),

    /** RFC 7662 introspection for an authenticated client. Never throws for a bad token: inactive. */
    async introspect(client: Client, token: string): Promise<Introspection> {
      const claims = await verifiedOrUndefined(token)
      if (claims === undefined || isAccessTokenRevoked(revocations, claims) || !mayInspect(client, claims)) return { active: false }
      // Routes that read the database re-check the session, so introspection is exact across instances.
      if (claims.sid !== undefined && !(await sessionsRepository.isSessionLive(db, claims.sid, clock.now()))) return { active: false }
      return {
        active: true,
        ...(claims.scope !== undefined ? { scope: claims.scope } : {}),
        client_id: claims.client_id,
        token_type: 'Bearer',
        exp: claims.exp,
        iat: claims.iat,
        sub: claims.sub,
        aud: claims.aud,
        iss: config.jwt.issuer,
        jti: claims.jti,
        ...(claims.sid !== undefined ? { sid: claims.sid } : {}),
      }
    },

    /**
     * RFC 7009. Anyone holding a user's refresh token (or access token) may end its session; a client's
     * own access tokens are revoked by that client, authenticated. Anything else is ignored with the
     * same 200, as §2.2 requires for invalid tokens.
     */
    async revoke(client: Client | undefined, token: string, ctx: RequestContext): Promise<void> {
      if (looksLikeRefreshToken(token)) {
        await sessions.revokeToken(token, ctx)
        return
      }
      const claims = await verifiedOrUndefined(token)
      if (claims === undefined) return
      if (claims.sid !== undefined) {
        if (client === undefined) await sessions.revokeToken(token, ctx)
        return
      }
      if (client === undefined || claims.client_id !== client.clientId) return
      const now = clock.now()
      const expiresAt = new Date(claims.exp * 1000 + config.jwt.leewaySeconds * 1000)
      await withTransaction(db, async (tx) => {
        await clientsRepository.insertRevokedToken(tx, { jti: claims.jti, clientId: client.clientId, now, expiresAt })
        await audit.insertEvent(tx, { type: 'client.token_revoked', accountId: null, actor: `client:${client.clientId}`, ...ctx, data: { jti: claims.jti }, occurredAt: now })
      })
      revocations.addToken(claims.jti, expiresAt)
    },

  }
}

export type OAuthService = ReturnType<typeof createOAuthService>
