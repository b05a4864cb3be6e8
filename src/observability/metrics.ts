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
    rateLimited: new Counter({
      name: 'tessera_rate_limited_total',
      help: 'Requests refused with 429, by the rule that refused them (e.g. login.ip, login.account_ip.fail).',
      labelNames: ['rule'] as const,
      registers: [registry],
    }),
    lockouts: new Counter({
      name: 'tessera_lockouts_total',
      help: 'Account locks set by failed logins, by kind (temporary, until_reset).',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
    emailMessages: new Counter({
      name: 'tessera_email_messages_total',
      help: 'Messages asked for, by kind and result (queued, or throttled: not sent, same answer to the requester).',
      labelNames: ['kind', 'result'] as const,
      registers: [registry],
    }),
    emailDeliveries: new Counter({
      name: 'tessera_email_delivery_attempts_total',
      help: 'Delivery attempts by this process, by result: delivered, failed (will be retried), dead (dead-lettered), skipped (link no longer usable).',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    emailQueueDepth: new Gauge({
      name: 'tessera_email_queue_depth',
      help: 'Messages waiting for delivery (not delivered, skipped or dead), refreshed on an interval by workers.',
      registers: [registry],
    }),
    emailOldestPendingSeconds: new Gauge({
      name: 'tessera_email_oldest_pending_seconds',
      help: 'Age of the oldest message waiting for delivery.',
      registers: [registry],
    }),
    emailDeadLetters: new Gauge({
      name: 'tessera_email_dead_letters',
      help: 'Messages whose every attempt failed, waiting in the dead-letter queue (`tessera jobs retry`).',
      registers: [registry],
    }),
  }
}

export type Metrics = ReturnType<typeof createMetrics>
