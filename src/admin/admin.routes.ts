/**
 * The admin API (`/v1/admin/…`): every route needs a user access token whose `roles` claim holds
 * `admin`. The service re-checks the administrator in the database on every call, so a token minted
 * before a demotion cannot act even on an instance that has not yet heard of the revocation.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { preHandlerAsyncHookHandler } from 'fastify'
import { Type } from 'typebox'
import { AppError } from '../errors.ts'
import { principalOf } from '../http/authenticate.ts'
import { requestContext } from '../http/context.ts'
import { problemResponses } from '../http/schemas.ts'
import { ADMIN_ROLE, type AdminService } from './admin.service.ts'

// A pattern rather than `format: 'uuid'`, which also accepts `urn:uuid:…`, a form PostgreSQL refuses.
const Uuid = Type.String({ pattern: '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$', maxLength: 36 })
const Role = Type.String({ pattern: '^[a-z][a-z0-9_-]{0,31}$', maxLength: 32 })
const Status = Type.Union([Type.Literal('active'), Type.Literal('disabled'), Type.Literal('deleted')])
// The app's ajv does not coerce types: query-string numbers are checked as text, then parsed.
// Optional in the document; ajv fills the default in, so handlers always see one.
const DEFAULT_LIMIT = '50'
const Limit = Type.Optional(Type.String({ pattern: '^(?:[1-9]|[1-9][0-9]|1[0-9]{2}|200)$', maxLength: 3, default: DEFAULT_LIMIT, description: 'Page size, 1–200 (default 50).' }))
const Cursor = Type.String({ minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9_-]+$', description: 'The `next_cursor` of the previous page; opaque.' })
const DateTime = Type.String({ format: 'date-time', maxLength: 64 })
const nullable = <T extends ReturnType<typeof Type.String>>(t: T) => Type.Union([t, Type.Null()])

const AdminUserFields = {
  id: Type.String({ format: 'uuid' }),
  email: Type.Union([Type.String(), Type.Null()], { description: 'Null for a deleted account.' }),
  email_verified: Type.Boolean(),
  display_name: Type.Union([Type.String(), Type.Null()]),
  status: Status,
  roles: Type.Array(Type.String()),
  created_at: Type.String({ format: 'date-time' }),
  updated_at: Type.String({ format: 'date-time' }),
  last_login_at: nullable(Type.String({ format: 'date-time' })),
  last_login_ip: nullable(Type.String()),
  failed_login_attempts: Type.Integer({ description: 'Consecutive failed logins since the last success.' }),
  locked_until: nullable(Type.String({ format: 'date-time' })),
  locked: Type.Boolean({ description: 'True while `locked_until` is in the future.' }),
  password_changed_at: Type.String({ format: 'date-time' }),
}
const AdminUser = Type.Object(AdminUserFields, { additionalProperties: false })
const AdminUserDetail = Type.Object({
  ...AdminUserFields,
  live_sessions: Type.Integer({ description: 'Sessions that can still be refreshed.' }),
}, { additionalProperties: false })

const AuditEvent = Type.Object({
  id: Type.Integer(),
  occurred_at: Type.String({ format: 'date-time' }),
  type: Type.String(),
  account_id: nullable(Type.String({ format: 'uuid' })),
  actor: Type.String({ description: '`account:<id>`, `anonymous`, `system` or `cli`.' }),
  ip: nullable(Type.String()),
  user_agent: nullable(Type.String()),
  request_id: nullable(Type.String()),
  data: Type.Object({}, { additionalProperties: true }),
}, { additionalProperties: false })

const IdParams = Type.Object({ id: Uuid }, { additionalProperties: false })
const bearer = [{ bearerAuth: [] }]
const tags = ['admin']

export const adminRoutes: FastifyPluginAsyncTypebox<{ admin: AdminService; authenticate: preHandlerAsyncHookHandler }> = async (app, { admin, authenticate }) => {
  // The guard runs on every route of this plugin, before the body is parsed or the input validated: a
  // caller who may not use the admin API (401, 403) learns nothing of its schemas. The `roles` claim is
  // enough here; the service re-checks the database.
  app.addHook('onRequest', async function guard(request, reply) {
    await authenticate.call(this, request, reply)
    if (!principalOf(request).claims.roles.includes(ADMIN_ROLE)) throw new AppError('forbidden', 'This operation needs the admin role.')
  })
  app.addHook('onSend', async (_request, reply) => {
    void reply.header('cache-control', 'no-store')
  })

  app.get('/v1/admin/users', {
    schema: {
      operationId: 'adminListUsers', tags, security: bearer, summary: 'List accounts, newest first',
      description: '`email_prefix` is canonicalised like an address (trimmed, NFKC, lower-cased) and matched literally; deleted accounts have no address and never match it. Pages follow `next_cursor` (null on the last page).',
      querystring: Type.Object({
        email_prefix: Type.Optional(Type.String({ minLength: 1, maxLength: 254 })),
        status: Type.Optional(Status),
        limit: Limit,
        cursor: Type.Optional(Cursor),
      }, { additionalProperties: false }),
      response: { 200: Type.Object({ users: Type.Array(AdminUser), next_cursor: Type.Union([Type.String(), Type.Null()]) }), ...problemResponses(400, 401, 403, 429) },
    },
  }, async (request) => {
    const { email_prefix, status, limit, cursor } = request.query
    return admin.listUsers(principalOf(request), { emailPrefix: email_prefix, status, limit: Number(limit ?? DEFAULT_LIMIT), cursor })
  })

  app.get('/v1/admin/users/:id', {
    schema: {
      operationId: 'adminGetUser', tags, security: bearer, summary: 'One account: profile, state, roles, security bookkeeping',
      description: 'Deleted accounts are shown as their tombstone. A malformed id is 400, an unknown one 404.',
      params: IdParams,
      response: { 200: AdminUserDetail, ...problemResponses(400, 401, 403, 404, 429) },
    },
  }, async (request) => admin.getUser(principalOf(request), request.params.id))

  app.patch('/v1/admin/users/:id', {
    schema: {
      operationId: 'adminUpdateUser', tags, security: bearer, summary: 'Disable or enable an account, or set its roles',
      description: 'Disabling ends every session of the account at once (its access tokens stop working) and revokes its email links; enabling lets its owner log in again. Setting roles (the whole list) ends every session too, since roles travel in access tokens. Administrators cannot disable themselves or withdraw their own `admin` role, and a deleted account cannot be changed (409). A request that changes nothing changes nothing.',
      params: IdParams,
      body: Type.Object({
        status: Type.Optional(Type.Union([Type.Literal('active'), Type.Literal('disabled')])),
        roles: Type.Optional(Type.Array(Role, { maxItems: 16, uniqueItems: true })),
      }, { additionalProperties: false, minProperties: 1 }),
      response: { 200: AdminUserDetail, ...problemResponses(400, 401, 403, 404, 409, 413, 415, 429) },
    },
  }, async (request) => {
    const { status, roles } = request.body
    return admin.updateUser(principalOf(request), request.params.id, { status, roles }, requestContext(request))
  })

  app.delete('/v1/admin/users/:id', {
    schema: {
      operationId: 'adminDeleteUser', tags, security: bearer, summary: 'Delete an account (erase its personal data)',
      description: 'The same erasure as `deleteMe`: every session ends, personal data goes at once, a tombstone keeps the id. Not one\'s own account (409: use `deleteMe`), nor one already deleted (409).',
      params: IdParams,
      response: { 204: Type.Null(), ...problemResponses(400, 401, 403, 404, 409, 429) },
    },
  }, async (request, reply) => {
    await admin.deleteUser(principalOf(request), request.params.id, requestContext(request))
    return reply.code(204).send(null)
  })

  app.post('/v1/admin/users/:id/sessions/revoke', {
    schema: {
      operationId: 'adminRevokeUserSessions', tags, security: bearer, summary: 'End every session of an account',
      description: 'Its access tokens stop working at once; the account stays usable (its owner can log in again).',
      params: IdParams,
      response: { 200: Type.Object({ revoked: Type.Integer({ description: 'How many sessions ended.' }) }), ...problemResponses(400, 401, 403, 404, 429) },
    },
  }, async (request) => ({ revoked: await admin.revokeUserSessions(principalOf(request), request.params.id, requestContext(request)) }))

  app.get('/v1/admin/audit-events', {
    schema: {
      operationId: 'adminListAuditEvents', tags, security: bearer, summary: 'The audit trail, newest first',
      description: '`since` is inclusive and `until` exclusive (RFC 3339 times). Pages follow `next_cursor` (null on the last page).',
      querystring: Type.Object({
        account_id: Type.Optional(Uuid),
        type: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
        since: Type.Optional(DateTime),
        until: Type.Optional(DateTime),
        limit: Limit,
        cursor: Type.Optional(Cursor),
      }, { additionalProperties: false }),
      response: { 200: Type.Object({ events: Type.Array(AuditEvent), next_cursor: Type.Union([Type.String(), Type.Null()]) }), ...problemResponses(400, 401, 403, 429) },
    },
  }, async (request) => {
    const { account_id, type, since, until, limit, cursor } = request.query
    return admin.listAuditEvents(principalOf(request), { accountId: account_id, type, since, until, limit: Number(limit ?? DEFAULT_LIMIT), cursor })
  })
}
