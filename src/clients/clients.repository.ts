import type { Queryable } from '../db/pool.ts'

export interface ClientRow {
  client_id: string
  name: string
  secret_hash: Buffer
  scopes: string[]
  audiences: string[]
  created_at: Date
  disabled_at: Date | null
}

export async function insert(db: Queryable, c: Omit<ClientRow, 'disabled_at'>): Promise<boolean> {
  const { rowCount } = await db.query(
    `INSERT INTO oauth_clients (client_id, name, secret_hash, scopes, audiences, created_at)
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (client_id) DO NOTHING`,
    [c.client_id, c.name, c.secret_hash, c.scopes, c.audiences, c.created_at],
  )
  return rowCount === 1
}

export async function findById(db: Queryable, clientId: string): Promise<ClientRow | undefined> {
  const { rows } = await db.query<ClientRow>({ name: 'clients_by_id', text: 'SELECT * FROM oauth_clients WHERE client_id = $1', values: [clientId] })
  return rows[0]
}

export async function list(db: Queryable): Promise<ClientRow[]> {
  const { rows } = await db.query<ClientRow>('SELECT * FROM oauth_clients ORDER BY created_at, client_id')
  return rows
}

export async function disable(db: Queryable, clientId: string, now: Date): Promise<boolean> {
  const { rowCount } = await db.query('UPDATE oauth_clients SET disabled_at = $2 WHERE client_id = $1 AND disabled_at IS NULL', [clientId, now])
  return rowCount === 1
}

export async function insertRevokedToken(db: Queryable, t: { jti: string; clientId: string; now: Date; expiresAt: Date }): Promise<void> {
  await db.query(
    'INSERT INTO revoked_access_tokens (jti, client_id, revoked_at, expires_at) VALUES ($1, $2, $3, $4) ON CONFLICT (jti) DO NOTHING',
    [t.jti, t.clientId, t.now, t.expiresAt],
  )
}

export async function listRevokedTokens(db: Queryable, now: Date): Promise<Array<{ jti: string; expires_at: Date }>> {
  const { rows } = await db.query<{ jti: string; expires_at: Date }>({
    name: 'revoked_tokens_live',
    text: 'SELECT jti, expires_at FROM revoked_access_tokens WHERE expires_at > $1',
    values: [now],
  })
  return rows
}
