/**
 * Signing keys: generated on first start, stored encrypted in PostgreSQL, shared by every instance that
 * shares the database and the KEK. Every instance keeps the published keys in memory (signing and
 * verification do no I/O) and reloads them periodically, so a key added by another instance is used
 * without a restart.
 */
import { createPrivateKey, createPublicKey, generateKeyPair as generateNodeKeyPair, type KeyObject } from 'node:crypto'
import { promisify } from 'node:util'
import { calculateJwkThumbprint, exportJWK, type JWK } from 'jose'
import type { Clock } from '../clock.ts'
import type { Config } from '../config.ts'
import { withTransaction, type Pool } from '../db/pool.ts'
import { decrypt, deriveSecret, encrypt } from './keys.crypto.ts'
import * as keysRepository from './keys.repository.ts'
import type { SigningKeyRow } from './keys.repository.ts'

export interface SigningKey {
  readonly kid: string
  readonly alg: 'EdDSA' | 'ES256'
  readonly privateKey: KeyObject
  readonly publicKey: KeyObject
  readonly publicJwk: JWK
  readonly activatesAt: Date
  readonly retiresAt: Date | null
}

export interface KeyStore {
  /** Loads the keys, generating the first one if the database has none. */
  init(): Promise<void>
  /** Re-reads the published keys from the database. */
  reload(): Promise<void>
  /** The key new tokens are signed with. */
  signingKey(): SigningKey
  /** A published key by `kid`, or undefined. Never consults anything the token itself carries. */
  verificationKey(kid: string): KeyObject | undefined
  /** Public members only (RFC 7517), as served at /.well-known/jwks.json. */
  jwks(): { keys: PublicJwk[] }
  close(): void
}

const PUBLIC_MEMBERS = ['kty', 'crv', 'x', 'y'] as const
const generateKeyPairAsync = promisify(generateNodeKeyPair)

/** A JWK with public members only, as published. */
export interface PublicJwk {
  kty: string
  kid: string
  alg: string
  use: string
  crv?: string
  x?: string
  y?: string
}

export async function generateSigningKey(alg: 'EdDSA' | 'ES256'): Promise<{ kid: string; publicJwk: JWK; privatePkcs8: Buffer }> {
  const { publicKey, privateKey } = alg === 'EdDSA'
    ? await generateKeyPairAsync('ed25519')
    : await generateKeyPairAsync('ec', { namedCurve: 'P-256' })
  const jwk = await exportJWK(publicKey)
  const kid = await calculateJwkThumbprint(jwk, 'sha256')
  const publicJwk: JWK = { kid, alg, use: 'sig' }
  for (const member of PUBLIC_MEMBERS) if (jwk[member] !== undefined) publicJwk[member] = jwk[member]
  const privatePkcs8 = privateKey.export({ format: 'der', type: 'pkcs8' })
  return { kid, publicJwk, privatePkcs8 }
}

export function createKeyStore(deps: { db: Pool; config: Config; clock: Clock; reloadIntervalMs?: number }): KeyStore {
  const { db, config, clock } = deps
  if (config.keyEncryptionKey === undefined) throw new Error('createKeyStore: keyEncryptionKey is not set')
  const wrappingKey = deriveSecret(config.keyEncryptionKey, 'signing-keys')
  let keys: SigningKey[] = []
  let byKid = new Map<string, SigningKey>()
  let timer: NodeJS.Timeout | undefined

  function toSigningKey(row: SigningKeyRow): SigningKey {
    const der = decrypt(wrappingKey, row.private_key_ciphertext, row.kid)
    const privateKey = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })
    const publicKey = createPublicKey({ key: row.public_jwk, format: 'jwk' })
    return { kid: row.kid, alg: row.alg, privateKey, publicKey, publicJwk: row.public_jwk, activatesAt: row.activates_at, retiresAt: row.retires_at }
  }

  async function reload(): Promise<void> {
    const rows = await keysRepository.findPublished(db, clock.now())
    const loaded = rows.map(toSigningKey)
    keys = loaded
    byKid = new Map(loaded.map((k) => [k.kid, k]))
  }

  function usableForSigning(now: Date): SigningKey[] {
    return keys.filter((k) => k.alg === config.jwt.algorithm && k.activatesAt <= now && (k.retiresAt === null || k.retiresAt > now))
  }

  return {
    async init() {
      await reload()
      if (usableForSigning(clock.now()).length === 0) {
        await withTransaction(db, async (tx) => {
          await keysRepository.lockForGeneration(tx)
          const rows = await keysRepository.findPublished(tx, clock.now())
          const now = clock.now()
          const usable = rows.some((r) => r.alg === config.jwt.algorithm && r.activates_at <= now && (r.retires_at === null || r.retires_at > now))
          if (usable) return
          const generated = await generateSigningKey(config.jwt.algorithm)
          await keysRepository.insert(tx, {
            kid: generated.kid,
            alg: config.jwt.algorithm,
            public_jwk: generated.publicJwk,
            private_key_ciphertext: encrypt(wrappingKey, generated.privatePkcs8, generated.kid),
            created_at: now,
            activates_at: now,
          })
        })
        await reload()
      }
      if (deps.reloadIntervalMs !== undefined && deps.reloadIntervalMs > 0) {
        timer = setInterval(() => { reload().catch(() => undefined) }, deps.reloadIntervalMs)
        timer.unref()
      }
    },
    reload,
    signingKey() {
      const usable = usableForSigning(clock.now())
      // The newest active key signs; older ones stay published for verification.
      const key = usable[usable.length - 1]
      if (key === undefined) throw new Error('no signing key is active')
      return key
    },
    verificationKey: (kid) => byKid.get(kid)?.publicKey,
    jwks: () => ({ keys: keys.map((k) => ({ ...k.publicJwk }) as PublicJwk) }),
    close() {
      if (timer) clearInterval(timer)
    },
  }
}
