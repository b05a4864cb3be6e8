/**
 * The management listener (METRICS_HOST:METRICS_PORT): `/metrics` for Prometheus and, with
 * TESSERA_PROFILING, the profiling endpoints. A separate Fastify instance on its own port, so none of it
 * is reachable through the public API's port, load balancer or ingress.
 */
import Fastify, { type FastifyInstance } from 'fastify'
import type { Deps } from '../deps.ts'
import { registerErrorHandling } from '../http/problem.ts'
import { profilingRoutes } from './profiling.routes.ts'

export async function buildManagementApp(deps: Pick<Deps, 'metrics' | 'config' | 'accessTokens' | 'revocations' | 'logger'>): Promise<FastifyInstance> {
  const app = Fastify({ logger: false, bodyLimit: 1024 })
  registerErrorHandling(app)
  app.get('/metrics', async (_request, reply) => {
    const body = await deps.metrics.registry.metrics()
    return reply.header('content-type', deps.metrics.registry.contentType).header('cache-control', 'no-store').send(body)
  })
  await app.register(profilingRoutes, { enabled: deps.config.management.profiling, accessTokens: deps.accessTokens, revocations: deps.revocations, logger: deps.logger })
  return app
}
