import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { preHandlerAsyncHookHandler } from 'fastify'
import { principalOf } from '../http/authenticate.ts'
import { requestContext } from '../http/context.ts'
import { Accepted, Email, EmailToken, Password, problemResponses } from '../http/schemas.ts'
import type { AccountsService } from './accounts.service.ts'

const DisplayName = Type.String({ minLength: 1, maxLength: 100, pattern: '^[^\\u0000-\\u001f\\u007f]*$', description: 'Shown to people; no control characters.' })

const Account = Type.Object({
  id: Type.String({ format: 'uuid' }),
  email: Type.String(),
  email_verified: Type.Boolean(),
  display_name: Type.Union([Type.String(), Type.Null()]),
  created_at: Type.String({ format: 'date-time' }),
  updated_at: Type.String({ format: 'date-time' }),
  password_changed_at: Type.String({ format: 'date-time' }),
  last_login_at: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  last_login_ip: Type.Union([Type.String(), Type.Null()]),
  failed_login_attempts: Type.Integer(),
  locked_until: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
}, { additionalProperties: false })

const bearer = [{ bearerAuth: [] }]

export const accountsRoutes: FastifyPluginAsyncTypebox<{ accounts: AccountsService; authenticate: preHandlerAsyncHookHandler }> = async (app, { accounts, authenticate }) => {
  app.post('/v1/accounts', {
    config: { rateLimit: { op: 'register' } },
    schema: {
      operationId: 'register',
      tags: ['accounts'],
      summary: 'Register an account',
      description: 'Always answers 202 with the same body, whether or not the address already has an account (no enumeration). A new account gets a verification link by email; the owner of an existing account gets a notice instead.',
      body: Type.Object({ email: Email, password: Password, display_name: Type.Optional(DisplayName) }, { additionalProperties: false }),
      response: { 202: Accepted, ...problemResponses(400, 413, 415, 503) },
    },
  }, async (request, reply) => {
    const { email, password, display_name } = request.body
    await accounts.registerAccount({ email, password, displayName: display_name }, requestContext(request))
    return reply.code(202).send({ status: 'accepted', message: 'If this address can be registered, a message is on its way to it: follow its link to verify the address.' })
  })

  app.post('/v1/email-verification', {
    config: { rateLimit: { op: 'email_verification', account: 'email' } },
    schema: {
      operationId: 'requestEmailVerification',
      tags: ['email'],
      summary: 'Send a new verification link',
      description: 'Always answers 202 with the same body, for unknown, unverified and verified addresses alike (no enumeration). Throttled per address and per account.',
      body: Type.Object({ email: Email }, { additionalProperties: false }),
      response: { 202: Accepted, ...problemResponses(400, 413, 415, 503) },
    },
  }, async (request, reply) => {
    await accounts.requestEmailVerification({ email: request.body.email }, requestContext(request))
    return reply.code(202).send({ status: 'accepted', message: 'If this address has an account waiting for verification, a new link is on its way.' })
  })

  app.post('/v1/email-verification/confirm', {
    config: { rateLimit: { op: 'email_verification_confirm' } },
    schema: {
      operationId: 'confirmEmailVerification',
      tags: ['email'],
      summary: 'Verify an address with the token of its link',
      description: 'Uses the token (once). The link itself opens a confirmation page (GET /verify-email), whose form does the same; a GET never uses a token.',
      body: Type.Object({ token: EmailToken }, { additionalProperties: false }),
      response: { 204: Type.Null(), ...problemResponses(400, 413, 415, 503) },
    },
  }, async (request, reply) => {
    await accounts.confirmEmailVerification({ token: request.body.token }, requestContext(request))
    return reply.code(204).send(null)
  })

  app.post('/v1/me/email', {
    preHandler: authenticate,
    config: { rateLimit: { op: 'email_change' } },
    schema: {
      operationId: 'requestEmailChange', tags: ['email'], summary: 'Change the email address', security: bearer,
      description: 'Requires the password. Sends a confirmation link to the new address and a notice to the current one; the address changes only when the link is used. 202 whether or not the new address is free.',
      body: Type.Object({ new_email: Email, password: Password }, { additionalProperties: false }),
      response: { 202: Accepted, ...problemResponses(400, 401, 403, 413, 415, 503) },
    },
  }, async (request, reply) => {
    await accounts.requestEmailChange(principalOf(request), { newEmail: request.body.new_email, password: request.body.password }, requestContext(request))
    return reply.code(202).send({ status: 'accepted', message: 'If the new address can be used, a confirmation link is on its way to it.' })
  })

  app.post('/v1/me/email/confirm', {
    config: { rateLimit: { op: 'email_change' } },
    schema: {
      operationId: 'confirmEmailChange', tags: ['email'], summary: 'Confirm a new email address with the token of its link',
      description: 'No access token needed: the link may be opened on another device. Every other outstanding link of the account dies.',
      body: Type.Object({ token: EmailToken }, { additionalProperties: false }),
      response: { 204: Type.Null(), ...problemResponses(400, 409, 413, 415, 503) },
    },
  }, async (request, reply) => {
    await accounts.confirmEmailChange({ token: request.body.token }, requestContext(request))
    return reply.code(204).send(null)
  })

  app.get('/v1/me', {
    preHandler: authenticate,
    schema: { operationId: 'getMe', tags: ['accounts'], summary: 'The signed-in account', security: bearer, response: { 200: Account, ...problemResponses(401) } },
  }, async (request, reply) => {
    void reply.header('cache-control', 'no-store')
    return accounts.getAccount(principalOf(request))
  })

  app.patch('/v1/me', {
    preHandler: authenticate,
    schema: {
      operationId: 'updateMe', tags: ['accounts'], summary: 'Update the display name', security: bearer,
      description: 'Only `display_name` can be changed here; any other field is rejected.',
      body: Type.Object({ display_name: Type.Union([DisplayName, Type.Null()]) }, { additionalProperties: false }),
      response: { 200: Account, ...problemResponses(400, 401, 413, 415) },
    },
  }, async (request, reply) => {
    void reply.header('cache-control', 'no-store')
    return accounts.updateProfile(principalOf(request), { displayName: request.body.display_name }, requestContext(request))
  })

  app.post('/v1/me/password', {
    preHandler: authenticate,
    schema: {
      operationId: 'changePassword', tags: ['accounts'], summary: 'Change the password', security: bearer,
      description: 'Requires the current password. Every other session of the account ends; this one stays.',
      body: Type.Object({ current_password: Password, new_password: Password }, { additionalProperties: false }),
      response: { 204: Type.Null(), ...problemResponses(400, 401, 403, 413, 415, 503) },
    },
  }, async (request, reply) => {
    await accounts.changePassword(principalOf(request), { currentPassword: request.body.current_password, newPassword: request.body.new_password }, requestContext(request))
    return reply.code(204).send(null)
  })

  app.delete('/v1/me', {
    preHandler: authenticate,
    schema: {
      operationId: 'deleteMe', tags: ['accounts'], summary: 'Delete the account',
      description: 'Requires the password. Every session ends; personal data is erased at once and a tombstone keeps the id for the audit trail.',
      security: bearer,
      body: Type.Object({ password: Password }, { additionalProperties: false }),
      response: { 204: Type.Null(), ...problemResponses(400, 401, 403, 413, 415, 503) },
    },
  }, async (request, reply) => {
    await accounts.deleteAccount(principalOf(request), { password: request.body.password }, requestContext(request))
    return reply.code(204).send(null)
  })
}
