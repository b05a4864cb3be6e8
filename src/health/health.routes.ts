import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { Health } from './health.ts'

const Status = Type.Object({ status: Type.String(), checks: Type.Optional(Type.Record(Type.String(), Type.String())) })

export const healthRoutes: FastifyPluginAsyncTypebox<{ health: Health }> = async (app, { health }) => {
  app.get('/livez', {
    // Never shed under pressure: an overloaded instance is alive, and probes must say so fast.
    config: { pressureHandler: () => undefined },
    schema: { operationId: 'livez', tags: ['health'], summary: 'Liveness: the process is serving (touches no dependency)', response: { 200: Status } },
  }, async (_request, reply) => {
    void reply.header('cache-control', 'no-store')
    return { status: 'ok' }
  })

  app.get('/readyz', {
    config: { pressureHandler: () => undefined },
    schema: { operationId: 'readyz', tags: ['health'], summary: 'Readiness: database reachable, migrations applied, not shutting down', response: { 200: Status, 503: Status } },
  }, async (_request, reply) => {
    const { ready, checks } = await health.ready()
    return reply.code(ready ? 200 : 503).header('cache-control', 'no-store').send({ status: ready ? 'ready' : 'unavailable', checks })
  })
}
