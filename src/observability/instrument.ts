/**
 * Metrics around components that know nothing of metrics: the password hasher (durations), the HTTP
 * server (RED per route template) and the active-sessions count (a PostgreSQL count on an interval).
 */
import type { FastifyInstance } from 'fastify'
import type { Queryable } from '../db/pool.ts'
import type { PasswordHasher } from '../passwords/passwords.hasher.ts'
import type { Metrics } from './metrics.ts'

/** The hasher, timing each operation (the wait for a slot included: that is what a request pays). */
export function instrumentHasher(hasher: PasswordHasher, metrics: Metrics): PasswordHasher {
  const timed = <T>(operation: string, work: () => Promise<T>): Promise<T> => {
    const end = metrics.hashDuration.startTimer({ operation })
    return work().finally(() => { end() })
  }
  return {
    hash: (password) => timed('hash', () => hasher.hash(password)),
    verify: (hash, password) => timed('verify', () => hasher.verify(hash, password)),
    verifyDummy: (password) => timed('verify', () => hasher.verifyDummy(password)),
    stats: hasher.stats,
  }
}

/**
 * RED metrics per route template (never the raw path: `/v1/sessions/{id}` is one series). Requests that
 * match no route count as `unmatched`.
 */
export function registerHttpMetrics(app: FastifyInstance, metrics: Metrics): void {
  app.addHook('onRequest', async () => {
    metrics.httpInFlight.inc()
  })
  app.addHook('onResponse', async (request, reply) => {
    metrics.httpInFlight.dec()
    const labels = { method: request.method, route: request.routeOptions.url ?? 'unmatched', status_class: `${Math.floor(reply.statusCode / 100)}xx` }
    metrics.httpRequests.inc(labels)
    metrics.httpDuration.observe(labels, reply.elapsedTime / 1000)
  })
}

/** Refreshes tessera_active_sessions every `intervalMs` (a count in PostgreSQL, never per scrape). */
export function startActiveSessionsGauge(db: Queryable, metrics: Metrics, now: () => Date, intervalMs = 30_000): () => void {
  const refresh = async () => {
    const { rows } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM sessions WHERE revoked_at IS NULL AND expires_at > $1', [now()])
    metrics.activeSessions.set(rows[0]?.n ?? 0)
  }
  const timer = setInterval(() => { refresh().catch(() => undefined) }, intervalMs)
  timer.unref()
  refresh().catch(() => undefined)
  return () => { clearInterval(timer) }
}
