/**
 * Checking the audit chain (`tessera audit verify`) and expiring old events (retention).
 */
import { timingSafeEqual, type KeyObject } from 'node:crypto'
import type { Clock } from '../clock.ts'
import { withTransaction, type Pool } from '../db/pool.ts'
import { chainHash } from './audit.chain.ts'
import * as audit from './audit.repository.ts'

export type ChainProblemKind =
  | 'hash mismatch'
  | 'chain broken (previous row missing or changed)'
  | 'prev_hash changed'
  | 'unchained row after chained rows'
  | 'head missing (rows deleted beyond the last retention run)'

export interface ChainProblem {
  readonly id: string
  readonly problem: ChainProblemKind
}

export interface ChainReport {
  /** True when no problem was found. */
  readonly ok: boolean
  /** Chained events checked (events with a hash). */
  readonly checked: number
  /** Events without a hash before the first chained one: written before the chain existed (0004). */
  readonly unchainedBeforeChain: number
  /** First and last chained event ids, null when there is none. */
  readonly firstId: string | null
  readonly lastId: string | null
  /** Hex of the last event's hash: keep a copy outside the database to detect a truncated tail later. */
  readonly head: string | null
  readonly problems: readonly ChainProblem[]
  /** Problems found beyond `maxProblems`, not listed. */
  readonly problemsOmitted: number
}

function same(a: Buffer | null, b: Buffer | null): boolean {
  if (a === null || b === null) return a === b
  return a.length === b.length && timingSafeEqual(a, b)
}

/**
 * Recomputes the chain in id order, in batches, on one snapshot. Each event's hash is recomputed from the
 * stored hash of the event before it; the first chained event starts from its own `prev_hash` (retention
 * deletes from the head, and the first kept event keeps the link to what it followed).
 *
 * What a problem means: `hash mismatch` — the event's fields (or its hash) were changed; `chain broken` —
 * the event is intact but the one it was chained to is not the one before it now (deleted, or its hash
 * replaced, or a row inserted in between with an explicit id); `prev_hash changed` — only that column
 * was edited; `unchained row` — a row without a hash after the chain started (written around
 * `insertEvent`, e.g. an INSERT in SQL); `head missing` — the first event is later than the first one
 * the newest `audit.retention` event says it kept.
 *
 * Not detectable from the table alone: deleting the newest events (compare `head` with a copy kept
 * elsewhere, or with the `hash` of the last `audit event` log line), or deleting the oldest ones while
 * no retention event mentions a later first event.
 */
export async function verifyChain(db: Pool, chainKey: KeyObject, options: { batchSize?: number; maxProblems?: number } = {}): Promise<ChainReport> {
  const batchSize = options.batchSize ?? 1000
  const maxProblems = options.maxProblems ?? 1000
  return audit.inSnapshot(db, async (tx) => {
    const problems: ChainProblem[] = []
    let omitted = 0
    const report = (id: string, problem: ChainProblemKind) => {
      if (problems.length < maxProblems) problems.push({ id, problem })
      else omitted++
    }
    let checked = 0
    let unchainedBeforeChain = 0
    let firstRowId: string | null = null
    let firstId: string | null = null
    let lastId: string | null = null
    let head: Buffer | null = null
    let previous: audit.StoredChainRow | undefined
    let after: string | null = null
    for (;;) {
      const rows = await audit.readChain(tx, after, batchSize)
      for (const row of rows) {
        firstRowId ??= row.id
        if (row.hash === null) {
          if (firstId === null) unchainedBeforeChain++
          else report(row.id, 'unchained row after chained rows')
          previous = row
          continue
        }
        checked++
        if (firstId === null) {
          firstId = row.id
          if (!same(chainHash(chainKey, row.prev_hash, row), row.hash)) report(row.id, 'hash mismatch')
        } else {
          const prevHash = previous?.hash ?? null
          if (same(chainHash(chainKey, prevHash, row), row.hash)) {
            if (!same(row.prev_hash, prevHash)) report(row.id, 'prev_hash changed')
          } else if (same(chainHash(chainKey, row.prev_hash, row), row.hash)) {
            report(row.id, 'chain broken (previous row missing or changed)')
          } else {
            report(row.id, 'hash mismatch')
          }
        }
        lastId = row.id
        head = row.hash
        previous = row
      }
      if (rows.length < batchSize) break
      after = rows[rows.length - 1]?.id ?? null
    }
    const keptFrom = await audit.lastRetentionFirstKeptId(tx)
    if (keptFrom !== null && firstRowId !== null && BigInt(firstRowId) > BigInt(keptFrom)) {
      report(firstRowId, 'head missing (rows deleted beyond the last retention run)')
    }
    return {
      ok: problems.length === 0 && omitted === 0,
      checked, unchainedBeforeChain, firstId, lastId,
      head: head === null ? null : head.toString('hex'),
      problems, problemsOmitted: omitted,
    }
  })
}

/**
 * Deletes the events older than `retentionDays` (0 = keep forever) from the head of the chain and, when
 * it deleted any, records an `audit.retention` event (in the chain, so it cannot be quietly removed)
 * naming the first event kept: `verifyChain` then reports a head shorter than that.
 */
export async function expireAuditEvents(deps: { db: Pool; clock: Clock; retentionDays: number }): Promise<{ deleted: number; firstKeptId: string | null }> {
  if (deps.retentionDays <= 0) return { deleted: 0, firstKeptId: null }
  const now = deps.clock.now()
  const cutoff = new Date(now.getTime() - deps.retentionDays * 86_400_000)
  const result = await audit.deleteExpiredEvents(deps.db, cutoff)
  if (result.deleted > 0) {
    await withTransaction(deps.db, (tx) => audit.insertEvent(tx, {
      type: 'audit.retention', accountId: null, actor: 'system', ip: null, userAgent: null, requestId: null,
      data: { deleted: result.deleted, first_kept_id: result.firstKeptId, cutoff: cutoff.toISOString(), retention_days: deps.retentionDays },
      occurredAt: now,
    }))
  }
  return result
}

export interface RetentionLogger {
  info(obj: object, msg: string): void
  warn(obj: object, msg: string): void
}

/**
 * Runs {@link expireAuditEvents} `initialDelayMs` after the start, then every `intervalMs` (a day), one
 * run at a time; timers are unref'd so they never keep a process alive. Every instance may run it:
 * concurrent runs delete the same head rows once. Does nothing when `retentionDays` is 0.
 * @returns stop: cancels the next run and resolves once a run in progress has finished (call it before
 * closing the pool).
 */
export function startAuditRetention(deps: {
  db: Pool
  clock: Clock
  retentionDays: number
  logger: RetentionLogger
  intervalMs?: number
  initialDelayMs?: number
}): () => Promise<void> {
  if (deps.retentionDays <= 0) return async () => undefined
  const intervalMs = deps.intervalMs ?? 86_400_000
  let stopped = false
  let running: Promise<void> | undefined
  let timer: NodeJS.Timeout | undefined
  const schedule = (delay: number) => {
    timer = setTimeout(() => {
      running = expireAuditEvents(deps)
        .then((r) => { if (r.deleted > 0) deps.logger.info({ deleted: r.deleted, firstKeptId: r.firstKeptId, retentionDays: deps.retentionDays }, 'expired audit events deleted') })
        .catch((err: unknown) => deps.logger.warn({ err }, 'audit retention failed; retrying at the next run'))
        .finally(() => {
          running = undefined
          if (!stopped) schedule(intervalMs)
        })
    }, delay)
    timer.unref()
  }
  schedule(deps.initialDelayMs ?? 60_000)
  return async () => {
    stopped = true
    clearTimeout(timer)
    await running
  }
}
