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
  revoked_at: Date | null
}

/** Keys still published in the JWKS at `now` (not yet expired), oldest first. */
export async function findPublished(db: Queryable, now: Date): Promise<SigningKeyRow[]> {
  const { rows } = await db.query<SigningKeyRow>(
    'SELECT * FROM signing_keys WHERE expires_at IS NULL OR expires_at > $1 ORDER BY activates_at, kid',
    [now],
  )
  return rows
}

export async function insert(db: Queryable, row: Omit<SigningKeyRow, 'retires_at' | 'expires_at' | 'revoked_at'>): Promise<void> {
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

export async function findAll(db: Queryable): Promise<SigningKeyRow[]> {
  const { rows } = await db.query<SigningKeyRow>('SELECT * FROM signing_keys ORDER BY created_at, kid')
  return rows
}

/** Every key still signing (other than `exceptKid`) stops at `retiresAt` and leaves the JWKS at `expiresAt`. */
export async function retireActive(db: Queryable, exceptKid: string, retiresAt: Date, expiresAt: Date): Promise<void> {
  await db.query(
    `UPDATE signing_keys SET retires_at = $2, expires_at = $3
     WHERE kid <> $1 AND revoked_at IS NULL AND (retires_at IS NULL OR retires_at > $2)`,
    [exceptKid, retiresAt, expiresAt],
  )
}

/** Emergency removal: out of the JWKS and out of signing at once. */
export async function markRevoked(db: Queryable, kid: string, now: Date): Promise<boolean> {
  const { rowCount } = await db.query(
    `UPDATE signing_keys SET revoked_at = $2, expires_at = $2, retires_at = least(coalesce(retires_at, $2), $2)
     WHERE kid = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)`,
    [kid, now],
  )
  return rowCount === 1
}
