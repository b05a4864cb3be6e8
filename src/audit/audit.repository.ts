import type { KeyObject } from 'node:crypto'
import pg from 'pg'
import type { Queryable } from '../db/pool.ts'
import { auditChainKey, CANONICAL_COLUMNS, chainHash, type ChainRow } from './audit.chain.ts'

export interface AuditEvent {
  readonly type: string
  readonly accountId: string | null
  /** 'account:<uuid>', 'client:<id>', 'anonymous', 'system' or 'cli'. */
  readonly actor: string
  readonly ip: string | null
  readonly userAgent: string | null
  readonly requestId: string | null
  /** Facts about the event (ids, counts, reasons). Never a secret: it is also written to the log. */
  readonly data?: Record<string, unknown>
  readonly occurredAt: Date
}

/** Where each event is also written, one line per event (pino's `info` fits). */
export interface AuditLogSink {
  info(obj: object, msg: string): void
}

/**
 * Arbitrary but fixed: the transaction-scoped advisory lock that serialises chain appends. Distinct from
 * the migrator's lock (0x7e55e7a1).
 */
const AUDIT_CHAIN_LOCK_KEY = 0x7e55a0d1

let chain: { key: KeyObject; log: AuditLogSink } | undefined

/**
 * Gives the module the chain key (derived from the KEK) and the log sink, once per process, before any
 * event is written: `insertEvent` is a plain function called from many services, and this keeps their
 * call sites free of both. Called by `createDeps` and by the CLI's database commands. A later call
 * replaces the earlier one (tests build one app after another in a process).
 */
export function configureAudit(options: { keyEncryptionKey: string; log: AuditLogSink }): void {
  chain = { key: auditChainKey(options.keyEncryptionKey), log: options.log }
}

/**
 * Appends one event, chained to the one before it. Called inside the transaction of the change it
 * records, so neither exists alone.
 *
 * The transaction takes a transaction-scoped advisory lock first and keeps it until it commits or rolls
 * back, so appends are serialised: the id is drawn under the lock, hence id order is chain order, and the
 * INSERT (a new statement, hence a new READ COMMITTED snapshot taken after the lock was granted) sees
 * every earlier event, committed. The cost is that audit-writing transactions run one at a time from
 * their first event to their commit: write the event last in a transaction, never before a slow step
 * or a row lock another audit-writing transaction may hold first (that order can deadlock).
 *
 * @throws Error when the module was not configured (no key: refusing beats writing unchained rows), when
 * given the pool instead of a transaction client (the lock would end with the statement), or in a
 * transaction that is not READ COMMITTED (its snapshot could predate the lock and fork the chain).
 */
export async function insertEvent(db: Queryable, e: AuditEvent): Promise<void> {
  if (chain === undefined) throw new Error('audit: configureAudit() was not called; refusing to write an unchained audit event')
  if (db instanceof pg.Pool) throw new Error('audit: insertEvent needs a transaction client (withTransaction), not the pool')
  const { key, log } = chain
  const { rows: [lock] } = await db.query<{ isolation: string }>({
    name: 'audit_chain_lock',
    text: `SELECT pg_advisory_xact_lock($1::bigint), current_setting('transaction_isolation') AS isolation`,
    values: [AUDIT_CHAIN_LOCK_KEY],
  })
  if (lock?.isolation !== 'read committed') throw new Error(`audit: insertEvent needs a READ COMMITTED transaction, not ${lock?.isolation ?? 'unknown'}`)
  const { rows: [row] } = await db.query<ChainRow & { prev_hash: Buffer | null }>({
    name: 'audit_insert_chained',
    text: `INSERT INTO audit_events (occurred_at, type, account_id, actor, ip, user_agent, request_id, data)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           RETURNING ${CANONICAL_COLUMNS},
             (SELECT p.hash FROM audit_events p WHERE p.id < audit_events.id ORDER BY p.id DESC LIMIT 1) AS prev_hash`,
    values: [e.occurredAt, e.type, e.accountId, e.actor, e.ip, e.userAgent, e.requestId, e.data ?? {}],
  })
  if (row === undefined) throw new Error('audit: INSERT returned no row')
  const hash = chainHash(key, row.prev_hash, row)
  await db.query({
    name: 'audit_chain_set',
    text: 'UPDATE audit_events SET prev_hash = $1, hash = $2 WHERE id = $3',
    values: [row.prev_hash, hash, row.id],
  })
  // Written before the commit: a line whose transaction then rolls back has no row. The table is the
  // record; the log line carries the hash so that a copy of the chain head lives outside the database.
  log.info({
    audit: {
      id: row.id, type: row.type, occurred_at: row.occurred_at, account_id: row.account_id, actor: row.actor,
      ip: row.ip, user_agent: row.user_agent, request_id: row.request_id, data: row.data, hash: hash.toString('hex'),
    },
  }, 'audit event')
}

export type StoredChainRow = ChainRow & { readonly prev_hash: Buffer | null; readonly hash: Buffer | null }

/** Up to `limit` events after `afterId` (exclusive; null = from the start) in id order, canonical form. */
export async function readChain(db: Queryable, afterId: string | null, limit: number): Promise<StoredChainRow[]> {
  // The select list renders `id` as text: order by the column itself, not by that text.
  const { rows } = await db.query<StoredChainRow>({
    name: 'audit_read_chain',
    text: `SELECT ${CANONICAL_COLUMNS}, prev_hash, hash FROM audit_events
           WHERE audit_events.id > $1::bigint ORDER BY audit_events.id LIMIT $2`,
    values: [afterId ?? '0', limit],
  })
  return rows
}

/**
 * Deletes expired events from the head of the chain only: every event before the first one (in id order)
 * that occurred at or after `olderThan`. An old event after a newer one (clocks of two instances disagree)
 * is kept, so no hole opens in the middle of the chain, and the newest event is always kept, so the
 * next one still chains to it. Deletes in batches of `batchSize`, each its own statement, so no long
 * transaction holds the rows.
 * @returns how many were deleted and the first id kept (null when the table is empty).
 */
export async function deleteExpiredEvents(db: Queryable, olderThan: Date, batchSize = 5000): Promise<{ deleted: number; firstKeptId: string | null }> {
  // Walks the primary key from the head: costs the rows it will delete, not the table.
  const { rows: [bound] } = await db.query<{ first_recent: string | null; last: string | null }>(
    `SELECT (SELECT e.id::text FROM audit_events e WHERE e.occurred_at >= $1 ORDER BY e.id LIMIT 1) AS first_recent,
            (SELECT max(id)::text FROM audit_events) AS last`,
    [olderThan],
  )
  if (bound?.last === null || bound === undefined) return { deleted: 0, firstKeptId: null }
  const keepFrom = bound.first_recent ?? bound.last
  let deleted = 0
  for (;;) {
    const { rowCount } = await db.query(
      `DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE id < $1::bigint ORDER BY id LIMIT $2)`,
      [keepFrom, batchSize],
    )
    deleted += rowCount ?? 0
    if ((rowCount ?? 0) < batchSize) break
  }
  return { deleted, firstKeptId: keepFrom }
}

/** The `first_kept_id` recorded by the newest retention run still in the table, if any. */
export async function lastRetentionFirstKeptId(db: Queryable): Promise<string | null> {
  const { rows: [row] } = await db.query<{ first_kept_id: string | null }>(
    `SELECT data->>'first_kept_id' AS first_kept_id FROM audit_events WHERE type = 'audit.retention' ORDER BY id DESC LIMIT 1`,
  )
  return row?.first_kept_id ?? null
}

/**
 * Runs `fn` in one REPEATABLE READ, READ ONLY transaction: every read sees the same snapshot, so a long
 * verification is not confused by events appended or expired while it reads.
 */
export async function inSnapshot<T>(pool: pg.Pool, fn: (db: Queryable) => Promise<T>): Promise<T> {
  const client = await pool.connect()
  let broken: Error | undefined
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY')
    const result = await fn(client)
    await client.query('COMMIT')
    return result
  } catch (err) {
    await client.query('ROLLBACK').catch((e: unknown) => { broken = e as Error })
    throw err
  } finally {
    // A connection that could not even roll back is destroyed, not returned to the pool.
    client.release(broken)
  }
}
