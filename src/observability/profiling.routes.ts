/**
 * Profiling endpoints of the management listener (docs/profiling.md), modelled on Go's net/http/pprof:
 *
 * - `GET /debug/pprof/profile?seconds=N` — CPU profile (`.cpuprofile`);
 * - `GET /debug/pprof/heap?seconds=N` — sampling heap profile (`.heapprofile`);
 * - `GET /debug/pprof/heapsnapshot` — full heap snapshot (`.heapsnapshot`); pauses the process.
 *
 * Without TESSERA_PROFILING nothing is registered: the paths answer 404 like any unknown path, whatever
 * the caller holds. With it, every route needs a user access token whose `roles` claim holds `admin`
 * (the same signature and revocation checks as the public API), checked before the query is validated.
 */
import { hostname } from 'node:os'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { Type } from 'typebox'
import { ADMIN_ROLE } from '../admin/admin.service.ts'
import { AppError } from '../errors.ts'
import { createAuthenticate, principalOf } from '../http/authenticate.ts'
import type { Logger } from '../logger.ts'
import type { RevocationList } from '../sessions/revocation.ts'
import type { AccessTokens } from '../tokens/access-tokens.ts'
import { createProfiler } from './profiling.ts'

export interface ProfilingOptions {
  /** TESSERA_PROFILING. */
  enabled: boolean
  accessTokens: AccessTokens
  revocations: RevocationList
  logger: Logger
}

// Query strings are text; checked as text (1–60), then parsed. Optional in the document; ajv fills in
// the default, so handlers always see one.
const Seconds = Type.Optional(Type.String({ pattern: '^(?:[1-9]|[1-5][0-9]|60)$', maxLength: 2, default: '10', description: 'Duration in seconds, 1–60 (default 10).' }))
const DurationQuery = Type.Object({ seconds: Seconds }, { additionalProperties: false })
const bearer = [{ bearerAuth: [] }]
const tags = ['profiling']

/** `tessera-<host>-<pid>-<UTC time>.<ext>`: several instances' files can sit side by side. */
function fileName(extension: string): string {
  const host = hostname().replace(/[^A-Za-z0-9.-]/g, '_').slice(0, 64)
  const time = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')
  return `tessera-${host}-${process.pid}-${time}.${extension}`
}

function attachment(reply: FastifyReply, type: string, extension: string): FastifyReply {
  return reply
    .type(type)
    .header('content-disposition', `attachment; filename="${fileName(extension)}"`)
    .header('cache-control', 'no-store')
    .header('x-content-type-options', 'nosniff')
}

/** Aborts when the client goes away before its answer is sent, so a long profile does not run for no one. */
function clientGone(request: FastifyRequest, reply: FastifyReply): AbortSignal {
  const controller = new AbortController()
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) controller.abort()
  })
  // A request whose socket closed before the handler ran.
  if (request.raw.destroyed) controller.abort()
  return controller.signal
}

export const profilingRoutes: FastifyPluginAsyncTypebox<ProfilingOptions> = async (app, options) => {
  if (!options.enabled) return
  const authenticate = createAuthenticate(options)
  const profiler = createProfiler({ logger: options.logger })

  app.decorateRequest('principal', null)
  // Before validation, on every route: a caller without an admin token learns nothing else (401, 403).
  app.addHook('onRequest', async (request) => {
    await authenticate(request)
    if (!principalOf(request).claims.roles.includes(ADMIN_ROLE)) throw new AppError('forbidden', 'Profiling needs the admin role.')
  })

  app.get('/debug/pprof/profile', {
    schema: {
      operationId: 'profileCpu', tags, security: bearer, summary: 'CPU profile of this process',
      description: 'Samples the CPU for `seconds`, then answers the `.cpuprofile` JSON (Chrome DevTools → Performance → Load profile; speedscope). One profiling operation at a time per process (409 otherwise).',
      querystring: DurationQuery,
    },
  }, async (request, reply) => {
    const seconds = Number(request.query.seconds)
    const profile = await profiler.cpuProfile(principalOf(request), seconds, clientGone(request, reply))
    return attachment(reply, 'application/json', 'cpuprofile').send(JSON.stringify(profile))
  })

  app.get('/debug/pprof/heap', {
    schema: {
      operationId: 'profileHeap', tags, security: bearer, summary: 'Sampling heap profile of this process',
      description: 'Samples allocations for `seconds`, then answers the `.heapprofile` JSON of the sampled objects still alive (Chrome DevTools → Memory → Load profile). One profiling operation at a time per process (409 otherwise).',
      querystring: DurationQuery,
    },
  }, async (request, reply) => {
    const seconds = Number(request.query.seconds)
    const profile = await profiler.heapProfile(principalOf(request), seconds, clientGone(request, reply))
    return attachment(reply, 'application/json', 'heapprofile').send(JSON.stringify(profile))
  })

  app.get('/debug/pprof/heapsnapshot', {
    schema: {
      operationId: 'profileHeapSnapshot', tags, security: bearer, summary: 'Full heap snapshot of this process',
      description: 'Answers a `.heapsnapshot` (Chrome DevTools → Memory → Load profile). **The whole process stops while the snapshot is taken** (every request waits), and it needs memory and temporary disk of the order of the heap. The file holds every secret in memory: treat it as one.',
      querystring: Type.Object({}, { additionalProperties: false }),
    },
  }, async (request, reply) => {
    const snapshot = await profiler.heapSnapshot(principalOf(request))
    return attachment(reply, 'application/json', 'heapsnapshot').header('content-length', snapshot.size).send(snapshot.stream)
  })
}
