import type { Queryable } from '../db/pool.ts'

export interface AuditEvent {
  readonly type: string
  readonly accountId: string | null
  /** 'account:<uuid>', 'system' or 'cli'. */
  readonly actor: string
  readonly ip: string | null
  readonly userAgent: string | null
  readonly requestId: string | null
  readonly data?: Record<string, unknown>
  readonly occurredAt: Date
}

/** Appends one event. Called inside the transaction of the change it records, so neither exists alone. */
export async function insertEvent(db: Queryable, e: AuditEvent): Promise<void> {
  await db.query({
    name: 'audit_insert',
    text: `INSERT INTO audit_events (occurred_at, type, account_id, actor, ip, user_agent, request_id, data)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
    values: [e.occurredAt, e.type, e.accountId, e.actor, e.ip, e.userAgent, e.requestId, e.data ?? {}],
  })
}
