import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { preHandlerAsyncHookHandler } from 'fastify'
import { Type } from 'typebox'
import { principalOf } from '../http/authenticate.ts'
import { requestContext } from '../http/context.ts'
import { Email, Password, Uuid, problemResponses, tokenResponseRef } from '../http/schemas.ts'
import type { SessionsService } from './sessions.service.ts'

const bearer = [{ bearerAuth: [] }]

export const sessionsRoutes: FastifyPluginAsyncTypebox<{ sessions: SessionsService; authenticate: preHandlerAsyncHookHandler }> = async (app, { sessions, authenticate }) => {
  app.post('/v1/auth/login', {
    config: { rateLimit: { op: 'login', account: 'email' } },
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

  const Session = Type.Object({
    id: Type.String({ format: 'uuid' }),
    current: Type.Boolean({ description: 'The session of the access token making this request.' }),
    device: Type.String({ description: 'Browser and OS, read from the user agent.' }),
    user_agent: Type.Union([Type.String(), Type.Null()]),
    ip: Type.Union([Type.String(), Type.Null()]),
    created_at: Type.String({ format: 'date-time' }),
    last_used_at: Type.String({ format: 'date-time' }),
    expires_at: Type.String({ format: 'date-time', description: 'The absolute end of the session.' }),
  })
  const Revoked = Type.Object({ revoked: Type.Integer({ description: 'How many sessions ended.' }) })

  app.get('/v1/sessions', {
    preHandler: authenticate,
    schema: { operationId: 'listSessions', tags: ['sessions'], summary: 'The account\'s live sessions', security: bearer, response: { 200: Type.Object({ sessions: Type.Array(Session) }), ...problemResponses(401) } },
  }, async (request) => ({ sessions: await sessions.listSessions(principalOf(request)) }))

  app.delete('/v1/sessions/:id', {
    preHandler: authenticate,
    schema: {
      operationId: 'revokeSession', tags: ['sessions'], summary: 'End one session (the current one included)', security: bearer,
      description: 'An id that is not one of the caller\'s sessions gets 404, whether or not it exists.',
      params: Type.Object({ id: Uuid }),
      response: { 204: Type.Null(), ...problemResponses(400, 401, 404) },
    },
  }, async (request, reply) => {
    await sessions.revokeSession(principalOf(request), request.params.id, requestContext(request))
    return reply.code(204).send(null)
  })

  app.post('/v1/sessions/revoke-others', {
    preHandler: authenticate,
    schema: { operationId: 'revokeOtherSessions', tags: ['sessions'], summary: 'End every other session of the account', security: bearer, response: { 200: Revoked, ...problemResponses(401) } },
  }, async (request) => ({ revoked: await sessions.revokeOtherSessions(principalOf(request), requestContext(request)) }))

  app.post('/v1/auth/logout-all', {
    preHandler: authenticate,
    schema: { operationId: 'logoutEverywhere', tags: ['sessions'], summary: 'Log out everywhere: end every session of the account, this one included', security: bearer, response: { 200: Revoked, ...problemResponses(401) } },
  }, async (request) => ({ revoked: await sessions.logoutEverywhere(principalOf(request), requestContext(request)) }))

  app.post('/v1/auth/logout', {
    preHandler: authenticate,
    schema: { operationId: 'logout', tags: ['sessions'], summary: 'End the current session', security: bearer, response: { 204: Type.Null(), ...problemResponses(401) } },
  }, async (request, reply) => {
    await sessions.logout(principalOf(request), requestContext(request))
    return reply.code(204).send(null)
  })
}
