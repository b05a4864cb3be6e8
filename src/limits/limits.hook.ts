/**
 * Applies the rate limits to the routes that declare `config.rateLimit` (and to every /v1/admin route):
 * before validation, so malformed requests count too; the failure points go back in onSend when the
 * answer is a success.
 */
import type { FastifyInstance } from 'fastify'
import { canonicalEmail, EMAIL_MAX_INPUT_LENGTH } from '../accounts/accounts.email.ts'
import type { Operation } from './limits.rules.ts'
import { rateLimitHeaders, type LimitTicket, type RateLimits } from './limits.service.ts'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Count requests of this route against an operation's budgets; `account`: the body field naming the account. */
    rateLimit?: { op: Operation; account?: 'email' }
  }
  interface FastifyRequest {
    limitTicket: LimitTicket | null
  }
}

/** The account identifier a request names: its canonical email, or the bounded raw text when it is not one. */
function accountKey(body: unknown, field: string | undefined): string | undefined {
  if (field === undefined || body === null || typeof body !== 'object') return undefined
  const value = (body as Record<string, unknown>)[field]
  if (typeof value !== 'string') return undefined
  return canonicalEmail(value) ?? value.trim().toLowerCase().slice(0, EMAIL_MAX_INPUT_LENGTH)
}

export function registerRateLimits(app: FastifyInstance, limits: RateLimits): void {
  app.decorateRequest('limitTicket', null)
  app.addHook('preValidation', async (request, reply) => {
    const config = request.routeOptions.config.rateLimit
    const op: Operation | undefined = config?.op ?? (request.routeOptions.url?.startsWith('/v1/admin/') === true ? 'admin' : undefined)
    if (op === undefined) return
    const ticket = await limits.check(op, { ip: request.ip, account: accountKey(request.body, config?.account) })
    request.limitTicket = ticket
    if (ticket.policy !== undefined) void reply.headers(rateLimitHeaders(ticket.policy))
  })
  app.addHook('onSend', async (request, reply) => {
    if (request.limitTicket !== null && reply.statusCode < 400) await request.limitTicket.succeeded()
  })
}
