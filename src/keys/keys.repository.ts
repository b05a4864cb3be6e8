import type { JWK } from 'jose'
import type { Queryable } from '../db/pool.ts'

export interface SigningKeyRow {
  kid: string
  alg: 'EdDSA' | 'ES256'
  public_jwk: JWK
  private_key_ciphertext: Buffer
  created_at: Date
  activates_at: Date
  retires_at: Date | null
  expires_at: Date | null
}

/** Keys still published in the JWKS at `now` (not yet expired), oldest first. */
export async function findPublished(db: Queryable, now: Date): Promise<SigningKeyRow[]> {
  const { rows } = await db.query<SigningKeyRow>(
    'SELECT * FROM signing_keys WHERE expires_at IS NULL OR expires_at > $1 ORDER BY activates_at, kid',
    [now],
  )
  return rows
}

export async function insert(db: Queryable, row: Omit<SigningKeyRow, 'retires_at' | 'expires_at'>): Promise<void> {
  await db.query(
    `INSERT INTO signing_keys (kid, alg, public_jwk, private_key_ciphertext, created_at, activates_at)
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (kid) DO NOTHING`,
    [row.kid, row.alg, row.public_jwk, row.private_key_ciphertext, row.created_at, row.activates_at],
  )
}

/** Serialises key generation between instances for the length of the caller's transaction. */
export async function lockForGeneration(db: Queryable): Promise<void> {
  await db.query('SELECT pg_advisory_xact_lock(7365211843)')
}
