/**
 * Prometheus metrics (prom-client), one registry per process, scraped from the management listener
 * (METRICS_PORT, see management.ts). Every metric Tessera exports is defined here, so this file is the
 * list (docs/observability.md explains each). Labels are bounded: route templates, result and reason
 * enums, rule names — never user ids, emails, tokens or raw paths.
 *
 * Gauges that need I/O (active sessions, the email queue) are refreshed on an interval by their owners,
 * never per scrape; the others read memory in `collect()`.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'

/** Latency buckets (seconds) for requests: resolution where the 100 ms p95 objective lives. */
const HTTP_BUCKETS = [0.002, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10]

export function createMetrics() {
  const registry = new Registry()
  // Process and runtime: event-loop lag, heap, GC, CPU, file descriptors (standard names, so standard
  // Node.js dashboards work too).
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 20 })
  return {
    registry,
    httpRequests: new Counter({
      name: 'tessera_http_requests_total',
      help: 'HTTP requests answered, by method, route template and status class (2xx, 3xx, 4xx, 5xx).',
      labelNames: ['method', 'route', 'status_class'] as const,
      registers: [registry],
    }),
    httpDuration: new Histogram({
      name: 'tessera_http_request_duration_seconds',
      help: 'Time from request received to response sent, by method, route template and status class.',
      labelNames: ['method', 'route', 'status_class'] as const,
      buckets: HTTP_BUCKETS,
      registers: [registry],
    }),
    httpInFlight: new Gauge({
      name: 'tessera_http_requests_in_flight',
      help: 'HTTP requests being handled now.',
      registers: [registry],
    }),
    logins: new Counter({
      name: 'tessera_logins_total',
      help: 'Password logins by result (success, failure) and reason (ok, wrong_password, unknown_account, locked, email_not_verified, account_disabled, account_deleted, account_changed).',
      labelNames: ['result', 'reason'] as const,
      registers: [registry],
    }),
    registrations: new Counter({
      name: 'tessera_registrations_total',
      help: 'Registration requests by result: created, or duplicate (the address had an account; the owner was notified).',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    refreshes: new Counter({
      name: 'tessera_token_refreshes_total',
      help: 'Refresh-token uses by result: rotated, grace_replay (the same child handed back), reuse_detected (the session was revoked), invalid.',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    tokensIssued: new Counter({
      name: 'tessera_access_tokens_issued_total',
      help: 'Access tokens signed, by kind: user (login, refresh) or client (client_credentials).',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
    revocations: new Counter({
      name: 'tessera_revocations_total',
      help: 'Revocations applied on this instance, by kind: session (logout, password change, admin…) or token (a client token).',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
    hashDuration: new Histogram({
      name: 'tessera_password_hash_duration_seconds',
      help: 'argon2id work by operation (hash, verify), including the wait for a hashing slot.',
      labelNames: ['operation'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    activeSessions: new Gauge({
      name: 'tessera_active_sessions',
      help: 'Sessions neither revoked nor expired, counted in PostgreSQL every 30 s.',
      registers: [registry],
    }),
    revocationPropagation: new Histogram({
      name: 'tessera_revocation_propagation_seconds',
      help: 'Time from a revocation on one instance to its arrival on this one through the Redis bus.',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    }),
    redisUp: new Gauge({
      name: 'tessera_redis_up',
      help: '1 while the Redis revocation bus is connected; 0 while it is not, and always 0 without REDIS_URL (alert on it only where Redis is configured).',
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
      help: 'Requests refused with 429, by the rule that refused them (e.g. login.ip, login.account_ip.fail) and its key type (ip, account, account_ip).',
      labelNames: ['rule', 'key_type'] as const,
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

/** In-memory sources of the saturation gauges, read at scrape time (no I/O). */
export interface SaturationSources {
  readonly pool: { readonly totalCount: number; readonly idleCount: number; readonly waitingCount: number }
  readonly poolMax: number
  readonly hashing: () => { readonly active: number; readonly queued: number }
  /** Activation times of the published keys, and of the one signing now. */
  readonly keys: () => { readonly signingSince: Date | undefined; readonly oldestPublished: Date | undefined }
  readonly now: () => Date
}

/** Registers the gauges whose values are read from memory when Prometheus scrapes. */
export function registerSaturationGauges(metrics: Metrics, sources: SaturationSources): void {
  const registers = [metrics.registry]
  new Gauge({
    name: 'tessera_db_pool_connections',
    help: 'PostgreSQL pool of this instance: total and idle connections, and requests waiting for one (state). Compare total with tessera_db_pool_max.',
    labelNames: ['state'] as const,
    registers,
    collect() {
      this.set({ state: 'total' }, sources.pool.totalCount)
      this.set({ state: 'idle' }, sources.pool.idleCount)
      this.set({ state: 'waiting' }, sources.pool.waitingCount)
    },
  })
  new Gauge({ name: 'tessera_db_pool_max', help: 'DATABASE_POOL_MAX.', registers, collect() { this.set(sources.poolMax) } })
  new Gauge({
    name: 'tessera_password_hash_queue',
    help: 'argon2id work now (state=active, at most one per core) and waiting for a slot (state=queued, shed beyond TESSERA_HASH_QUEUE_LIMIT).',
    labelNames: ['state'] as const,
    registers,
    collect() {
      const { active, queued } = sources.hashing()
      this.set({ state: 'active' }, active)
      this.set({ state: 'queued' }, queued)
    },
  })
  new Gauge({
    name: 'tessera_signing_key_age_seconds',
    help: 'Age of the signing key in use (key=signing) and of the oldest key still published (key=oldest_published), since each started signing.',
    labelNames: ['key'] as const,
    registers,
    collect() {
      const now = sources.now().getTime()
      const { signingSince, oldestPublished } = sources.keys()
      if (signingSince !== undefined) this.set({ key: 'signing' }, Math.max(0, (now - signingSince.getTime()) / 1000))
      if (oldestPublished !== undefined) this.set({ key: 'oldest_published' }, Math.max(0, (now - oldestPublished.getTime()) / 1000))
    },
  })
}
