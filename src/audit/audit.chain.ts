/**
 * The audit hash chain, pure functions: the chain key, the canonical bytes of a row, and its hash.
 *
 * hash(row) = HMAC-SHA256(chainKey, prevHash ‖ canonical(row)), where prevHash is the stored hash of
 * the row just before it in id order (empty for the first row of a chain). An HMAC rather than a plain
 * hash because a plain chain can be recomputed by anyone who can edit the table: with a key derived
 * from the KEK, someone holding only database write access cannot forge a consistent chain.
 */
import { createHmac, createSecretKey, type KeyObject } from 'node:crypto'
import { deriveSecret } from '../keys/keys.crypto.ts'

/** The chain key: HKDF of the KEK for the `audit-chain` purpose (so it tells nothing about other keys). */
export function auditChainKey(keyEncryptionKey: string): KeyObject {
  return createSecretKey(deriveSecret(keyEncryptionKey, 'audit-chain'))
}

/**
 * One stored event in its canonical text form, exactly as the SQL in `CANONICAL_COLUMNS` returns it.
 * Text (not Date, not number) wherever PostgreSQL's own parsing would lose information: `occurred_at`
 * keeps its microseconds and `id` its 64 bits.
 */
export interface ChainRow {
  readonly id: string
  readonly occurred_at: string
  readonly type: string
  readonly account_id: string | null
  readonly actor: string
  readonly ip: string | null
  readonly user_agent: string | null
  readonly request_id: string | null
  readonly data: unknown
}

/**
 * The select list that yields a {@link ChainRow}, shared by the insert (RETURNING) and the verifier so
 * both hash the very same text. The time is rendered in UTC whatever the session's TimeZone, and
 * `ip::text` keeps a netmask (`host()` would drop it, so an edited mask would go unnoticed).
 */
export const CANONICAL_COLUMNS = `id::text AS id,
  to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS occurred_at,
  type, account_id::text AS account_id, actor, ip::text AS ip, user_agent, request_id, data`

/**
 * JSON with object keys sorted at every depth. jsonb stores keys in its own order (by length, then
 * bytes), so the order an object was written in cannot be part of what is hashed.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null'
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
  const entries = Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`)
  return `{${entries.join(',')}}`
}

/** The bytes hashed for a row: a JSON array of its fields in a fixed order. */
export function canonicalBytes(row: ChainRow): Buffer {
  return Buffer.from(canonicalJson([row.id, row.occurred_at, row.type, row.account_id, row.actor, row.ip, row.user_agent, row.request_id, row.data]), 'utf8')
}

/**
 * HMAC-SHA256(key, prevHash ‖ canonical(row)). `prevHash` is always 32 bytes or absent and the canonical
 * bytes always start with `[`, so the concatenation is unambiguous.
 */
export function chainHash(key: KeyObject, prevHash: Buffer | null, row: ChainRow): Buffer {
  const hmac = createHmac('sha256', key)
  if (prevHash !== null) hmac.update(prevHash)
  return hmac.update(canonicalBytes(row)).digest()
}
