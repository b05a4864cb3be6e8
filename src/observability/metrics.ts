/**
 * Prometheus metrics (prom-client), one registry per process. The /metrics listener comes with the
 * observability issue; metrics are defined here as features need them so they can be scraped then.
 * Labels are bounded: never user ids, emails or raw paths.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client'

export function createMetrics() {
  const registry = new Registry()
  return {
    registry,
    revocationPropagation: new Histogram({
      name: 'tessera_revocation_propagation_seconds',
      help: 'Time from a revocation on one instance to its arrival on this one through the Redis bus.',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    }),
    redisUp: new Gauge({
      name: 'tessera_redis_up',
      help: '1 while the Redis revocation bus is connected, 0 otherwise (absent without REDIS_URL).',
      registers: [registry],
    }),
    revocationsPublished: new Counter({
      name: 'tessera_revocations_published_total',
      help: 'Revocations this instance published on the Redis bus, by result.',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
  }
}

export type Metrics = ReturnType<typeof createMetrics>
