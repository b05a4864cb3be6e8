/**
 * Revocations, known to every instance without a network round trip per request.
 *
 * Access tokens are verified offline, so a revoked session's tokens stay cryptographically valid until
 * they expire. Each instance keeps in memory:
 * - the ids of sessions revoked within the last access-token lifetime (+ leeway): older revocations need
 *   no entry, since every token of such a session has expired;
 * - the `jti` of service-client access tokens revoked one by one, until each would have expired.
 *
 * How a revocation reaches the other instances:
 * 1. at once on the instance that made it (`add…` is called after its transaction commits);
 * 2. through the optional bus (Redis pub/sub): typically milliseconds;
 * 3. in any case through PostgreSQL, the source of truth, re-read every `pollMs`. Each poll re-reads the
 *    whole window, so a revocation whose transaction committed late is never missed, and an instance
 *    that was cut off from the bus converges on its next poll.
 */
import type { Clock } from '../clock.ts'
import * as clientsRepository from '../clients/clients.repository.ts'
import type { Queryable } from '../db/pool.ts'
import * as sessionsRepository from './sessions.repository.ts'

export type RevocationEvent =
  | { readonly kind: 'session'; readonly id: string; readonly at: number }
  | { readonly kind: 'token'; readonly id: string; readonly at: number; readonly expiresAt: number }

/** Carries revocations between instances (Redis pub/sub); optional. */
export interface RevocationBus {
  publish(events: readonly RevocationEvent[]): void
  subscribe(onEvents: (events: readonly RevocationEvent[]) => void): void
}

export interface RevocationList {
  isSessionRevoked(sessionId: string): boolean
  isTokenRevoked(jti: string): boolean
  /** Records revoked sessions locally and tells the other instances. Call after the commit. */
  addSessions(sessionIds: readonly string[]): void
  addToken(jti: string, expiresAt: Date): void
  /** Re-reads the window from PostgreSQL; resolves once the set is current. */
  refresh(): Promise<void>
  start(): Promise<void>
  stop(): void
  readonly size: () => number
}

export function createRevocationList(deps: {
  db: Queryable
  clock: Clock
  windowSeconds: number
  pollMs: number
  bus?: RevocationBus
  onError?: (err: unknown) => void
  /** Called for each revocation received from another instance, with its age on arrival (ms). */
  onPropagated?: (lagMs: number) => void
  /** Called for each revocation made on this instance (metrics). */
  onRevoked?: (kind: 'session' | 'token', count: number) => void
}): RevocationList {
  const { db, clock, windowSeconds, pollMs, bus } = deps
  let sessions = new Map<string, number>()
  let tokens = new Map<string, number>()
  let timer: NodeJS.Timeout | undefined

  function apply(events: readonly RevocationEvent[]): void {
    for (const e of events) {
      if (e.kind === 'session') sessions.set(e.id, e.at)
      else tokens.set(e.id, e.expiresAt)
    }
  }

  const list: RevocationList = {
    isSessionRevoked: (sessionId) => sessions.has(sessionId),
    isTokenRevoked: (jti) => tokens.has(jti),
    addSessions(sessionIds) {
      if (sessionIds.length === 0) return
      deps.onRevoked?.('session', sessionIds.length)
      const at = clock.now().getTime()
      const events = sessionIds.map((id) => ({ kind: 'session' as const, id, at }))
      apply(events)
      bus?.publish(events)
    },
    addToken(jti, expiresAt) {
      deps.onRevoked?.('token', 1)
      const event = { kind: 'token' as const, id: jti, at: clock.now().getTime(), expiresAt: expiresAt.getTime() }
      apply([event])
      bus?.publish([event])
    },
    async refresh() {
      const now = clock.now()
      const horizon = now.getTime() - windowSeconds * 1000
      const [revokedSessions, revokedTokens] = await Promise.all([
        sessionsRepository.listRevokedSince(db, new Date(horizon)),
        clientsRepository.listRevokedTokens(db, now),
      ])
      const nextSessions = new Map<string, number>()
      for (const row of revokedSessions) nextSessions.set(row.id, row.revoked_at.getTime())
      // Keep entries the database read may not show yet (their transaction is still committing).
      for (const [id, at] of sessions) if (at >= horizon && !nextSessions.has(id)) nextSessions.set(id, at)
      const nextTokens = new Map<string, number>()
      for (const row of revokedTokens) nextTokens.set(row.jti, row.expires_at.getTime())
      for (const [id, exp] of tokens) if (exp > now.getTime() && !nextTokens.has(id)) nextTokens.set(id, exp)
      sessions = nextSessions
      tokens = nextTokens
    },
    async start() {
      bus?.subscribe((events) => {
        apply(events)
        const now = clock.now().getTime()
        for (const e of events) deps.onPropagated?.(Math.max(0, now - e.at))
      })
      await list.refresh()
      timer = setInterval(() => { list.refresh().catch((err: unknown) => deps.onError?.(err)) }, pollMs)
      timer.unref()
    },
    stop() {
      if (timer) clearInterval(timer)
    },
    size: () => sessions.size + tokens.size,
  }
  return list
}
