import type { Queryable } from '../db/pool.ts'
import { appliedVersion } from '../db/migrator.ts'

type CheckState = 'ok' | 'fail' | 'shutting_down' | 'pending'

export interface Health {
  /** Flipped by the shutdown sequence: readiness answers 503 from then on. */
  markShuttingDown(): void
  readonly shuttingDown: () => boolean
  /** Database reachable and migrated to `expectedVersion`. Never throws. */
  ready(): Promise<{ ready: boolean; checks: Record<string, CheckState> }>
}

export function createHealth(deps: { db: Queryable; expectedVersion: number; timeoutMs: number }): Health {
  let shuttingDown = false
  return {
    markShuttingDown() { shuttingDown = true },
    shuttingDown: () => shuttingDown,
    async ready() {
      if (shuttingDown) return { ready: false, checks: { shutdown: 'shutting_down' } }
      let timer: NodeJS.Timeout | undefined
      const timeout = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error('readiness check timed out')), deps.timeoutMs) })
      try {
        const version = await Promise.race([appliedVersion(deps.db), timeout])
        const migrated = version >= deps.expectedVersion
        const checks: Record<string, CheckState> = { database: 'ok', migrations: migrated ? 'ok' : 'pending' }
        return { ready: migrated, checks }
      } catch {
        return { ready: false, checks: { database: 'fail' } }
      } finally {
        clearTimeout(timer)
      }
    },
  }
}
