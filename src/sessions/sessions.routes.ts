import formbody from '@fastify/formbody'
import type { FastifyPluginAsyncTypebox, TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { preHandlerAsyncHookHandler } from 'fastify'
import { Type } from 'typebox'
import { OAuthError } from '../errors.ts'
import { principalOf } from '../http/authenticate.ts'
import { requestContext } from '../http/context.ts'
import { Email, oauthErrorRef, Password, problemResponses, tokenResponseRef } from '../http/schemas.ts'
import type { SessionsService } from './sessions.service.ts'

const bearer = [{ bearerAuth: [] }]
const Token = Type.String({ minLength: 1, maxLength: 4096 })

export const sessionsRoutes: FastifyPluginAsyncTypebox<{ sessions: SessionsService; authenticate: preHandlerAsyncHookHandler }> = async (app, { sessions, authenticate }) => {
  app.post('/v1/auth/login', {
    schema: {
      operationId: 'login', tags: ['sessions'], summary: 'Sign in with email and password',
      description: 'Starts a session and returns its first token pair (RFC 6749 §5.1 shape). Every failure is the same 401 `invalid_credentials`.',
      body: Type.Object({ email: Email, password: Password }, { additionalProperties: false }),
      response: { 200: tokenResponseRef, ...problemResponses(400, 401, 413, 415, 503) },
    },
  }, async (request, reply) => {
    const pair = await sessions.login(request.body, requestContext(request))
    return reply.header('cache-control', 'no-store').header('pragma', 'no-cache').send(pair)
  })

  app.post('/v1/auth/logout', {
    preHandler: authenticate,
    schema: { operationId: 'logout', tags: ['sessions'], summary: 'End the current session', security: bearer, response: { 204: Type.Null(), ...problemResponses(401) } },
  }, async (request, reply) => {
    await sessions.logout(principalOf(request), requestContext(request))
    return reply.code(204).send(null)
  })

  // OAuth endpoints: form-encoded bodies (RFC 6749 §4.1.3; JSON accepted too), errors per §5.2.
  await app.register(async (scope) => {
    await scope.register(formbody, { bodyLimit: 16_384 })
    const oauth = scope.withTypeProvider<TypeBoxTypeProvider>()

    oauth.post('/oauth/token', {
      config: { oauth: true },
      schema: {
        operationId: 'token', tags: ['oauth'], summary: 'OAuth 2.0 token endpoint',
        description: '`grant_type=refresh_token` rotates a refresh token. A retry of the same token within the grace window returns the same new refresh token; a replay after it revokes the session.',
        consumes: ['application/x-www-form-urlencoded', 'application/json'],
        body: Type.Object({
          grant_type: Type.String({ maxLength: 128 }),
          refresh_token: Type.Optional(Token),
          scope: Type.Optional(Type.String({ maxLength: 1024 })),
          client_id: Type.Optional(Type.String({ maxLength: 256 })),
        }, { additionalProperties: false }),
        response: { 200: tokenResponseRef, 400: oauthErrorRef, 401: oauthErrorRef, 503: oauthErrorRef },
      },
    }, async (request, reply) => {
      const { grant_type, refresh_token } = request.body
      if (grant_type !== 'refresh_token') throw new OAuthError('unsupported_grant_type', 'Supported grant types: refresh_token.')
      if (refresh_token === undefined) throw new OAuthError('invalid_request', 'refresh_token is required.')
      const pair = await sessions.refresh(refresh_token, requestContext(request))
      return reply.header('cache-control', 'no-store').header('pragma', 'no-cache').send(pair)
    })

    oauth.post('/oauth/revoke', {
      config: { oauth: true },
      schema: {
        operationId: 'revoke', tags: ['oauth'], summary: 'OAuth 2.0 token revocation (RFC 7009)',
        description: 'Revoking a refresh token (or an access token) ends its session. Unknown tokens get the same 200.',
        consumes: ['application/x-www-form-urlencoded', 'application/json'],
        body: Type.Object({
          token: Token,
          token_type_hint: Type.Optional(Type.String({ maxLength: 64 })),
          client_id: Type.Optional(Type.String({ maxLength: 256 })),
        }, { additionalProperties: false }),
        response: { 200: Type.Null(), 400: oauthErrorRef, 503: oauthErrorRef },
      },
    }, async (request, reply) => {
      await sessions.revokeToken(request.body.token, requestContext(request))
      return reply.code(200).header('cache-control', 'no-store').send(null)
    })
  })
}

