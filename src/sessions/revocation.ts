/**
 * Revoked sessions, known to every instance without a network round trip per request.
 *
 * Access tokens are verified offline, so a revoked session's tokens stay cryptographically valid until
 * they expire. Each instance therefore keeps, in memory, the ids of sessions revoked within the last
 * access-token lifetime (+ leeway): older revocations need no entry, since every token of such a session
 * has expired. A revocation made by this instance is added at once; revocations made by other instances
 * are read from PostgreSQL every `pollMs` (the cross-instance bound; the sessions issue adds Redis
 * pub/sub on top). Each poll re-reads the whole window, so a revocation committed late is never missed.
 */
import type { Clock } from '../clock.ts'
import type { Queryable } from '../db/pool.ts'
import * as sessionsRepository from './sessions.repository.ts'

export interface RevocationList {
  isRevoked(sessionId: string): boolean
  add(sessionIds: readonly string[]): void
  /** Loads the window now; resolves once the set is current. */
  refresh(): Promise<void>
  start(): Promise<void>
  stop(): void
  readonly size: () => number
}

export function createRevocationList(deps: { db: Queryable; clock: Clock; windowSeconds: number; pollMs: number; onError?: (err: unknown) => void }): RevocationList {
  const { db, clock, windowSeconds, pollMs } = deps
  let revoked = new Map<string, number>()
  let timer: NodeJS.Timeout | undefined

  function prune(map: Map<string, number>): void {
    const horizon = clock.now().getTime() - windowSeconds * 1000
    for (const [id, at] of map) if (at < horizon) map.delete(id)
  }

  const list: RevocationList = {
    isRevoked: (sessionId) => revoked.has(sessionId),
    add(sessionIds) {
      const at = clock.now().getTime()
      for (const id of sessionIds) revoked.set(id, at)
    },
    async refresh() {
      const since = new Date(clock.now().getTime() - windowSeconds * 1000)
      const rows = await sessionsRepository.listRevokedSince(db, since)
      const next = new Map<string, number>()
      for (const row of rows) next.set(row.id, row.revoked_at.getTime())
      // Keep local additions the database read may not show yet (their transaction is still committing).
      for (const [id, at] of revoked) if (!next.has(id)) next.set(id, at)
      prune(next)
      revoked = next
    },
    async start() {
      await list.refresh()
      timer = setInterval(() => { list.refresh().catch((err: unknown) => deps.onError?.(err)) }, pollMs)
      timer.unref()
    },
    stop() {
      if (timer) clearInterval(timer)
    },
    size: () => revoked.size,
  }
  return list
}
