import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { requestContext } from '../http/context.ts'
import { Accepted, Email, EmailToken, Password, problemResponses } from '../http/schemas.ts'
import type { ResetService } from './reset.service.ts'

export const resetRoutes: FastifyPluginAsyncTypebox<{ reset: ResetService }> = async (app, { reset }) => {
  app.post('/v1/password-reset', {
    config: { rateLimit: { op: 'password_reset', account: 'email' } },
    schema: {
      operationId: 'requestPasswordReset',
      tags: ['passwords'],
      summary: 'Send a password-reset link',
      description: 'Always answers 202 with the same body, whether or not the address has an account (no enumeration). Throttled per address and per account. Works for locked accounts.',
      body: Type.Object({ email: Email }, { additionalProperties: false }),
      response: { 202: Accepted, ...problemResponses(400, 413, 415, 503) },
    },
  }, async (request, reply) => {
    await reset.requestPasswordReset({ email: request.body.email }, requestContext(request))
    return reply.code(202).send({ status: 'accepted', message: 'If this address has an account, a reset link is on its way to it.' })
  })

  app.post('/v1/password-reset/confirm', {
    config: { rateLimit: { op: 'password_reset_confirm' } },
    schema: {
      operationId: 'confirmPasswordReset',
      tags: ['passwords'],
      summary: 'Set a new password with the token of a reset link',
      description: 'One transaction: the password is set, the token used, every session of the account ended, every other link revoked, and a notice queued. Of two uses of one token, exactly one succeeds.',
      body: Type.Object({ token: EmailToken, new_password: Password }, { additionalProperties: false }),
      response: { 204: Type.Null(), ...problemResponses(400, 413, 415, 503) },
    },
  }, async (request, reply) => {
    await reset.confirmPasswordReset({ token: request.body.token, newPassword: request.body.new_password }, requestContext(request))
    return reply.code(204).send(null)
  })
}
