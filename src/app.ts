/**
 * buildApp(deps): the HTTP application — plugins, routes and the error handler. It never listens and
 * never reads the environment; main.ts does both, and tests call buildApp with their own deps.
 */
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import underPressure from '@fastify/under-pressure'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import addFormats from 'ajv-formats'
import type { Plugin } from 'ajv'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import { accountsRoutes } from './accounts/accounts.routes.ts'
import { adminRoutes } from './admin/admin.routes.ts'
import type { Deps } from './deps.ts'
import { pagesRoutes } from './email/email.pages.ts'
import { healthRoutes } from './health/health.routes.ts'
import { createAuthenticate } from './http/authenticate.ts'
import { registerErrorHandling, sendError } from './http/problem.ts'
import { requestIdFor } from './http/request-id.ts'
import { OAuthErrorBody, Problem, TokenResponse } from './http/schemas.ts'
import { keysRoutes } from './keys/keys.routes.ts'
import { registerRateLimits } from './limits/limits.hook.ts'
import { registerHttpMetrics } from './observability/instrument.ts'
import { AppError } from './errors.ts'
import { oauthRoutes } from './oauth/oauth.routes.ts'
import { resetRoutes } from './passwords/reset.routes.ts'
import { sessionsRoutes } from './sessions/sessions.routes.ts'

export const API_VERSION = '0.1.0'

export async function buildApp(deps: Deps): Promise<FastifyInstance> {
  const { config } = deps
  const app = Fastify({
    // pino's Logger is wider than FastifyBaseLogger; without the cast tsc infers an incompatible instance type.
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-assertion
    loggerInstance: deps.logger as FastifyBaseLogger,
    // Fastify's two lines per request are replaced by the one line of the onResponse hook below.
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'request_id' }),
    genReqId: requestIdFor,
    requestIdHeader: false,
    bodyLimit: config.http.bodyLimit,
    requestTimeout: config.http.requestTimeoutMs,
    return503OnClosing: true,
    // Errors raised before routing (malformed percent-encoding in the path) get the same problem+json.
    frameworkErrors: (err, request, reply) => {
      void reply.header('x-request-id', request.id)
      sendError(request, reply, err)
    },
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    // Client IP from the socket, unless trusted proxies are configured: then the rightmost
    // X-Forwarded-For hop that is not one of them (proxy-addr). Never the leftmost, which anyone can forge.
    trustProxy: config.limits.trustedProxies.length > 0 ? [...config.limits.trustedProxies] : false,
    ajv: {
      // Strict input: wrong types are errors (no coercion), unknown fields are errors (no silent drop).
      customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: true, allErrors: false },
      plugins: [addFormats.default as unknown as Plugin<unknown>],
    },
  }).withTypeProvider<TypeBoxTypeProvider>()

  app.server.headersTimeout = config.http.headersTimeoutMs
  registerErrorHandling(app)
  // JSON only where JSON is expected: drop the default text/plain parser (415 instead).
  app.removeContentTypeParser('text/plain')
  app.decorateRequest('principal', null)

  app.addHook('onRequest', async (request, reply) => {
    void reply.header('x-request-id', request.id)
  })
  app.addHook('onSend', async (_request, reply) => {
    void reply.header('x-content-type-options', 'nosniff')
    void reply.header('referrer-policy', 'no-referrer')
    if (!reply.hasHeader('cache-control')) void reply.header('cache-control', 'no-store')
    // Once shutdown has begun, end each keep-alive connection after its current response: a connection
    // busy when close() starts would otherwise stay open idle, and close() would wait for its timeout.
    if (deps.health.shuttingDown()) void reply.header('connection', 'close')
  })
  // One line per request (no bodies, no headers): enough to correlate, nothing to leak. Skipped whole
  // when the level is above info (building the object cost ~8 % of a JWKS request).
  const logRequests = deps.logger.isLevelEnabled('info')
  app.addHook('onResponse', async (request, reply) => {
    if (!logRequests) return
    request.log.info({
      method: request.method,
      route: request.routeOptions.url ?? 'unmatched',
      status: reply.statusCode,
      duration_ms: Math.round(reply.elapsedTime * 100) / 100,
      ip: request.ip,
      account_id: request.principal?.accountId,
    }, 'request')
  })

  // Backpressure: while the event loop lags, shed new requests at once with 503 + Retry-After rather
  // than let them queue into timeouts. Health routes opt out (config.pressureHandler) and stay fast.
  if (config.limits.maxEventLoopDelayMs > 0) {
    await app.register(underPressure, {
      maxEventLoopDelay: config.limits.maxEventLoopDelayMs,
      // The lag is the mean over each second; a second without a single sample counts as infinite lag.
      retryAfter: 5,
      exposeStatusRoute: false,
      // A rejected promise reaches next(err), so the answer is the usual problem+json (or OAuth) error.
      pressureHandler: async () => {
        throw new AppError('overloaded', 'The service is overloaded; retry shortly.', {}, { retryAfterSeconds: 5 })
      },
    })
  }
  // Off with TESSERA_METRICS_ENABLED=false (no listener to read them; and the bench compares the two).
  if (config.management.enabled) registerHttpMetrics(app, deps.metrics)
  registerRateLimits(app, deps.limits)

  app.addSchema(Problem)
  app.addSchema(OAuthErrorBody)
  app.addSchema(TokenResponse)

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Tessera',
        version: API_VERSION,
        description: 'Accounts, passwords, sessions and offline-verifiable JWT access tokens. Errors are RFC 9457 problem+json with a stable `code`; OAuth endpoints use RFC 6749 §5.2 errors.',
      },
      servers: [{ url: config.publicUrl }],
      components: {
        securitySchemes: {
          bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' },
          clientBasic: { type: 'http', scheme: 'basic', description: 'Service client id and secret (RFC 6749 §2.3.1); client_secret_post is accepted too.' },
        },
      },
    },
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`) },
  })
  await app.register(swaggerUi, { routePrefix: '/docs', staticCSP: true })

  app.get('/openapi.json', { schema: { hide: true } }, async (_request, reply) => {
    void reply.header('cache-control', 'public, max-age=60')
    return app.swagger()
  })

  const authenticate = createAuthenticate({ accessTokens: deps.accessTokens, revocations: deps.revocations })
  await app.register(healthRoutes, { health: deps.health })
  await app.register(keysRoutes, { keys: deps.keys, config })
  await app.register(accountsRoutes, { accounts: deps.accounts, authenticate })
  await app.register(sessionsRoutes, { sessions: deps.sessions, authenticate })
  await app.register(oauthRoutes, { oauth: deps.oauth })
  await app.register(resetRoutes, { reset: deps.reset })
  await app.register(adminRoutes, { admin: deps.admin, authenticate })
  await app.register(pagesRoutes, { publicUrl: config.publicUrl, email: deps.email, accounts: deps.accounts, reset: deps.reset })
  return app
}
