import formbody from '@fastify/formbody'
import type { FastifyPluginAsyncTypebox, TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { FastifyRequest } from 'fastify'
import { Type } from 'typebox'
import type { ClientCredentials } from '../clients/clients.service.ts'
import { OAuthError } from '../errors.ts'
import { requestContext } from '../http/context.ts'
import { oauthErrorRef, tokenResponseRef } from '../http/schemas.ts'
import type { OAuthService } from './oauth.service.ts'

const Token = Type.String({ minLength: 1, maxLength: 4096 })
const ClientId = Type.String({ minLength: 1, maxLength: 256 })
const ClientSecret = Type.String({ minLength: 1, maxLength: 512 })
/** The body of revocation (RFC 7009 §2.1) and introspection (RFC 7662 §2.1) requests. */
const TokenRequest = Type.Object({
  token: Token,
  token_type_hint: Type.Optional(Type.String({ maxLength: 64 })),
  client_id: Type.Optional(ClientId),
  client_secret: Type.Optional(ClientSecret),
}, { additionalProperties: false })
const OAuthErrors = { 400: oauthErrorRef, 401: oauthErrorRef, 413: oauthErrorRef, 415: oauthErrorRef, 503: oauthErrorRef }
const BASIC = /^Basic +([A-Za-z0-9+/]+={0,2}) *$/i

/** RFC 6749 §2.3.1: the id and secret are form-urlencoded before Basic encoding. */
function formDecode(value: string): string {
  try {
    return decodeURIComponent(value.replace(/\+/g, ' '))
  } catch {
    throw new OAuthError('invalid_client', 'Malformed client credentials.')
  }
}

/**
 * Client credentials from `Authorization: Basic` or from the body (client_secret_post), never both
 * (RFC 6749 §2.3: one method per request). Undefined when the caller is the public first-party client.
 */
function clientCredentialsOf(request: FastifyRequest, body: { client_id?: string | undefined; client_secret?: string | undefined }): ClientCredentials | undefined {
  const header = request.headers.authorization
  let basic: ClientCredentials | undefined
  if (header !== undefined) {
    const match = BASIC.exec(header)
    if (!match?.[1]) throw new OAuthError('invalid_client', 'Use HTTP Basic client authentication.')
    const decoded = Buffer.from(match[1], 'base64').toString('utf8')
    const colon = decoded.indexOf(':')
    if (colon < 1) throw new OAuthError('invalid_client', 'Malformed client credentials.')
    basic = { clientId: formDecode(decoded.slice(0, colon)), clientSecret: formDecode(decoded.slice(colon + 1)) }
  }
  if (basic !== undefined) {
    if (body.client_secret !== undefined) throw new OAuthError('invalid_request', 'Use one client authentication method, not two.')
    if (body.client_id !== undefined && body.client_id !== basic.clientId) throw new OAuthError('invalid_request', 'client_id does not match the authenticated client.')
    return basic
  }
  if (body.client_secret !== undefined) {
    if (body.client_id === undefined) throw new OAuthError('invalid_request', 'client_id is required with client_secret.')
    return { clientId: body.client_id, clientSecret: body.client_secret }
  }
  return undefined
}

export const oauthRoutes: FastifyPluginAsyncTypebox<{ oauth: OAuthService }> = async (scope, { oauth: service }) => {
  // OAuth endpoints: form-encoded bodies (RFC 6749 §4.1.3; JSON accepted too), errors per §5.2.
  await scope.register(formbody, { bodyLimit: 16_384 })
  const app = scope.withTypeProvider<TypeBoxTypeProvider>()

  app.post('/oauth/token', {
    config: { oauth: true, rateLimit: { op: 'refresh' } },
    schema: {
      operationId: 'token', tags: ['oauth'], summary: 'OAuth 2.0 token endpoint',
      description: [
        '`grant_type=refresh_token` rotates a user\'s refresh token: a retry of the same token within the grace window returns the same new refresh token; a replay after it revokes the session.',
        '`grant_type=client_credentials` issues a service client\'s access token (client authentication by HTTP Basic or `client_secret_post`; optional `scope` and RFC 8707 `resource`).',
      ].join('\n\n'),
      consumes: ['application/x-www-form-urlencoded', 'application/json'],
      security: [{}, { clientBasic: [] }],
      body: Type.Object({
        grant_type: Type.String({ maxLength: 128 }),
        refresh_token: Type.Optional(Token),
        scope: Type.Optional(Type.String({ maxLength: 1024 })),
        resource: Type.Optional(Type.String({ maxLength: 512 })),
        client_id: Type.Optional(ClientId),
        client_secret: Type.Optional(ClientSecret),
      }, { additionalProperties: false }),
      response: { 200: tokenResponseRef, ...OAuthErrors },
    },
  }, async (request, reply) => {
    const body = request.body
    const credentials = clientCredentialsOf(request, body)
    const ctx = requestContext(request)
    void reply.header('cache-control', 'no-store').header('pragma', 'no-cache')
    switch (body.grant_type) {
      case 'refresh_token': {
        if (credentials !== undefined) throw new OAuthError('invalid_grant', 'Refresh tokens belong to the first-party client; do not authenticate as a service client.')
        if (body.refresh_token === undefined) throw new OAuthError('invalid_request', 'refresh_token is required.')
        return reply.send(await service.refresh(body.refresh_token, ctx))
      }
      case 'client_credentials': {
        if (credentials === undefined) throw new OAuthError('invalid_client', 'Client authentication is required for client_credentials.')
        const client = await service.authenticateClient(credentials)
        return reply.send(await service.clientCredentials(client, { scope: body.scope, resource: body.resource }, ctx))
      }
      default:
        throw new OAuthError('unsupported_grant_type', 'Supported grant types: refresh_token, client_credentials.')
    }
  })

  app.post('/oauth/revoke', {
    config: { oauth: true },
    schema: {
      operationId: 'revoke', tags: ['oauth'], summary: 'OAuth 2.0 token revocation (RFC 7009)',
      description: 'A user\'s refresh token (or access token) ends its session; a service client revokes its own access tokens, authenticated. Unknown or foreign tokens get the same 200.',
      consumes: ['application/x-www-form-urlencoded', 'application/json'],
      security: [{}, { clientBasic: [] }],
      body: TokenRequest,
      response: { 200: Type.Null(), ...OAuthErrors },
    },
  }, async (request, reply) => {
    const credentials = clientCredentialsOf(request, request.body)
    const client = credentials === undefined ? undefined : await service.authenticateClient(credentials)
    await service.revoke(client, request.body.token, requestContext(request))
    return reply.code(200).header('cache-control', 'no-store').send(null)
  })

  app.post('/oauth/introspect', {
    config: { oauth: true, rateLimit: { op: 'introspect' } },
    schema: {
      operationId: 'introspect', tags: ['oauth'], summary: 'OAuth 2.0 token introspection (RFC 7662)',
      description: 'For authenticated service clients. `active: true` only for a current, unrevoked access token issued to the caller or meant for one of its audiences; everything else is `{ "active": false }`.',
      consumes: ['application/x-www-form-urlencoded', 'application/json'],
      security: [{ clientBasic: [] }],
      body: TokenRequest,
      response: {
        200: Type.Object({
          active: Type.Boolean(), scope: Type.Optional(Type.String()), client_id: Type.Optional(Type.String()),
          token_type: Type.Optional(Type.String()), exp: Type.Optional(Type.Integer()), iat: Type.Optional(Type.Integer()),
          sub: Type.Optional(Type.String()), aud: Type.Optional(Type.Union([Type.String(), Type.Array(Type.String())])),
          iss: Type.Optional(Type.String()), jti: Type.Optional(Type.String()), sid: Type.Optional(Type.String()),
        }),
        ...OAuthErrors,
      },
    },
  }, async (request, reply) => {
    const credentials = clientCredentialsOf(request, request.body)
    if (credentials === undefined) throw new OAuthError('invalid_client', 'Client authentication is required.')
    const client = await service.authenticateClient(credentials)
    return reply.header('cache-control', 'no-store').send(await service.introspect(client, request.body.token))
  })
}
