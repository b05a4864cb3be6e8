/**
 * The one place that turns errors into responses.
 *
 * - AppError → RFC 9457 problem+json with its stable `code`.
 * - Schema validation and the framework's own client errors (bad JSON, wrong content type, body too
 *   large, unknown route) → problem+json with a code of the same table.
 * - On routes marked `config.oauth`, the RFC 6749 §5.2 shape instead (`error`, `error_description`).
 * - Anything else is a 500 whose body says nothing of the cause; the cause goes to the log only.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { translateDatabaseError } from '../db/errors.ts'
import { AppError, OAuthError, statusByCode, titleByCode, type ErrorCode, type OAuthErrorCode } from '../errors.ts'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Render errors as RFC 6749 §5.2 OAuth errors on this route. */
    oauth?: boolean
  }
}

const frameworkCodes: Record<string, ErrorCode> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_BODY_TOO_LARGE: 'payload_too_large',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'malformed_request',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'malformed_request',
  FST_ERR_CTP_INVALID_JSON_BODY: 'malformed_request',
}

const codeByStatus: Record<number, ErrorCode> = {
  400: 'malformed_request', 404: 'not_found', 413: 'payload_too_large', 415: 'unsupported_media_type', 429: 'rate_limited', 503: 'service_unavailable',
}

interface ValidationIssue { instancePath?: string; message?: string; params?: Record<string, unknown> }

function pointerOf(issue: ValidationIssue, context: string | undefined): string {
  const base = context === 'body' || context === undefined ? '' : `/${context}`
  const missing = issue.params?.missingProperty
  const extra = issue.params?.additionalProperty
  const suffix = typeof missing === 'string' ? `/${missing}` : typeof extra === 'string' ? `/${extra}` : ''
  return `${base}${issue.instancePath ?? ''}${suffix}` || '/'
}

function messageOf(issue: ValidationIssue): string {
  if (typeof issue.params?.additionalProperty === 'string') return 'is not an accepted field'
  return issue.message ?? 'is invalid'
}

/** Normalises anything thrown into an AppError or OAuthError; unknown errors become internal_error. */
export function toClientError(err: unknown): AppError | OAuthError {
  if (err instanceof AppError || err instanceof OAuthError) return err
  const translated = translateDatabaseError(err)
  if (translated instanceof AppError) return translated
  const fe = err as Partial<FastifyError> & { validation?: ValidationIssue[]; validationContext?: string }
  if (Array.isArray(fe.validation)) {
    const errors = fe.validation.map((issue) => ({ pointer: pointerOf(issue, fe.validationContext), detail: messageOf(issue) }))
    return new AppError('validation_failed', 'The request does not match the schema.', { errors })
  }
  const byCode = fe.code !== undefined ? frameworkCodes[fe.code] : undefined
  if (byCode) return new AppError(byCode, titleByCode[byCode])
  // secure-json-parse rejects __proto__ / constructor.prototype keys with a SyntaxError (status 400).
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    const code = codeByStatus[fe.statusCode] ?? 'malformed_request'
    return new AppError(code, code === 'malformed_request' ? 'The request could not be parsed.' : titleByCode[code])
  }
  return new AppError('internal_error', 'An unexpected error occurred.', {}, { cause: err })
}

function oauthCodeFor(err: AppError): OAuthErrorCode {
  switch (err.code) {
    case 'service_unavailable':
    case 'overloaded':
    case 'rate_limited':
      return 'temporarily_unavailable'
    case 'internal_error':
      return 'server_error'
    default:
      return 'invalid_request'
  }
}

export function sendError(request: FastifyRequest, reply: FastifyReply, raw: unknown): FastifyReply {
  const err = toClientError(raw)
  if (err instanceof AppError && err.code === 'internal_error') {
    request.log.error({ err: raw }, 'unhandled error')
  } else if (err instanceof AppError && err.status >= 500) {
    request.log.warn({ err: raw }, err.message)
  }
  if (err instanceof AppError && err.retryAfterSeconds !== undefined) void reply.header('retry-after', String(err.retryAfterSeconds))
  if (err instanceof AppError) for (const [name, value] of Object.entries(err.headers)) void reply.header(name, value)

  if (request.routeOptions.config.oauth === true) {
    const oauth = err instanceof OAuthError ? err : new OAuthError(oauthCodeFor(err), err.status >= 500 ? titleByCode[err.code] : err.message)
    if (oauth.error === 'invalid_client') void reply.header('www-authenticate', 'Basic realm="tessera"')
    // 413, 415 and 429 are HTTP-level refusals: they keep their status; only the body takes the RFC 6749 shape.
    const status = err instanceof AppError && (err.code === 'payload_too_large' || err.code === 'unsupported_media_type' || err.code === 'rate_limited') ? err.status : oauth.status
    return reply.code(status).header('cache-control', 'no-store').type('application/json; charset=utf-8')
      .send({ error: oauth.error, error_description: oauth.message })
  }

  const app = err instanceof AppError ? err : new AppError('validation_failed', err.message)
  if (app.code === 'invalid_token') {
    // RFC 6750 §3: tell the client how to authenticate.
    // RFC 6750 §3.1: no error code when the client sent no bearer credentials at all.
    const sentBearer = /^bearer /i.test(request.headers.authorization ?? '')
    void reply.header('www-authenticate', sentBearer ? 'Bearer realm="tessera", error="invalid_token"' : 'Bearer realm="tessera"')
  }
  const status = statusByCode[app.code]
  const body: Record<string, unknown> = {
    type: `urn:tessera:problem:${app.code}`,
    title: titleByCode[app.code],
    status,
    // A 500's message is ours, not the cause's; the cause is only in the log.
    detail: app.message,
    code: app.code,
    request_id: request.id,
    ...app.extensions,
  }
  return reply.code(status).type('application/problem+json; charset=utf-8').send(JSON.stringify(body))
}

export function registerErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err, request, reply) => sendError(request, reply, err))
  app.setNotFoundHandler((request, reply) => sendError(request, reply, new AppError('not_found', 'No route matches this method and path.')))
}
