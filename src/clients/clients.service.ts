/**
 * Service clients: OAuth 2.0 confidential clients that get access tokens of their own with the
 * client_credentials grant, and may introspect and revoke tokens. Created from the CLI only.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import * as audit from '../audit/audit.repository.ts'
import type { Clock } from '../clock.ts'
import { withTransaction, type Pool } from '../db/pool.ts'
import { AppError, OAuthError } from '../errors.ts'
import * as clientsRepository from './clients.repository.ts'
import type { ClientRow } from './clients.repository.ts'

export const CLIENT_SECRET_PREFIX = 'tcs_'
const CLIENT_ID = /^[a-z0-9][a-z0-9_.-]{2,63}$/
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]{1,128}$/ // RFC 6749 §3.3 scope-token

export interface Client {
  readonly clientId: string
  readonly name: string
  readonly scopes: readonly string[]
  readonly audiences: readonly string[]
}

export interface ClientCredentials {
  readonly clientId: string
  readonly clientSecret: string
}

function hashSecret(secret: string): Buffer {
  return createHash('sha256').update(secret).digest()
}

function toClient(row: ClientRow): Client {
  return { clientId: row.client_id, name: row.name, scopes: row.scopes, audiences: row.audiences }
}

// Compared against when the client id is unknown, so both paths do the same work.
const DUMMY_HASH = hashSecret('tessera-unknown-client')

export function createClientsService(deps: { db: Pool; clock: Clock }) {
  const { db, clock } = deps

  return {
    /**
     * Creates a client and returns its secret, which is shown once and stored only as SHA-256.
     * @throws AppError `validation_failed` (id, scope or audience syntax), `conflict` (id taken).
     */
    async createClient(input: { clientId: string; name: string; scopes: string[]; audiences: string[] }, actor: string): Promise<{ client: Client; clientSecret: string }> {
      if (!CLIENT_ID.test(input.clientId)) throw new AppError('validation_failed', 'client_id must be 3–64 of a-z 0-9 _ . - starting with a letter or digit.')
      for (const scope of input.scopes) if (!SCOPE_TOKEN.test(scope)) throw new AppError('validation_failed', `Invalid scope: ${JSON.stringify(scope)}`)
      for (const aud of input.audiences) if (aud.length === 0 || aud.length > 512) throw new AppError('validation_failed', 'Audiences must be 1–512 characters.')
      const clientSecret = CLIENT_SECRET_PREFIX + randomBytes(32).toString('base64url')
      const now = clock.now()
      const created = await withTransaction(db, async (tx) => {
        const inserted = await clientsRepository.insert(tx, {
          client_id: input.clientId, name: input.name, secret_hash: hashSecret(clientSecret),
          scopes: [...new Set(input.scopes)], audiences: [...new Set(input.audiences)], created_at: now,
        })
        if (inserted) {
          await audit.insertEvent(tx, { type: 'client.created', accountId: null, actor, ip: null, userAgent: null, requestId: null, data: { client_id: input.clientId, scopes: input.scopes, audiences: input.audiences }, occurredAt: now })
        }
        return inserted
      })
      if (!created) throw new AppError('conflict', `A client with id ${input.clientId} already exists.`)
      return { client: { clientId: input.clientId, name: input.name, scopes: input.scopes, audiences: input.audiences }, clientSecret }
    },

    async listClients(): Promise<Array<Client & { createdAt: Date; disabled: boolean }>> {
      return (await clientsRepository.list(db)).map((r) => ({ ...toClient(r), createdAt: r.created_at, disabled: r.disabled_at !== null }))
    },

    async disableClient(clientId: string, actor: string): Promise<boolean> {
      const now = clock.now()
      return withTransaction(db, async (tx) => {
        const done = await clientsRepository.disable(tx, clientId, now)
        if (done) await audit.insertEvent(tx, { type: 'client.disabled', accountId: null, actor, ip: null, userAgent: null, requestId: null, data: { client_id: clientId }, occurredAt: now })
        return done
      })
    },

    /**
     * Authenticates a confidential client (RFC 6749 §2.3.1). The secret is compared in constant time,
     * and an unknown client costs the same as a wrong secret.
     * @throws OAuthError `invalid_client`.
     */
    async authenticateClient(credentials: ClientCredentials): Promise<Client> {
      const row = CLIENT_ID.test(credentials.clientId) ? await clientsRepository.findById(db, credentials.clientId) : undefined
      const presented = hashSecret(credentials.clientSecret)
      const matches = timingSafeEqual(presented, row?.secret_hash ?? DUMMY_HASH)
      if (row === undefined || !matches || row.disabled_at !== null) throw new OAuthError('invalid_client', 'Client authentication failed.')
      return toClient(row)
    },
  }
}

export type ClientsService = ReturnType<typeof createClientsService>
