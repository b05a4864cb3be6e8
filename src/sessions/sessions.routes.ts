import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { preHandlerAsyncHookHandler } from 'fastify'
import { Type } from 'typebox'
import { principalOf } from '../http/authenticate.ts'
import { requestContext } from '../http/context.ts'
import { Email, Password, problemResponses, tokenResponseRef } from '../http/schemas.ts'
import type { SessionsService } from './sessions.service.ts'

const bearer = [{ bearerAuth: [] }]

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
}
