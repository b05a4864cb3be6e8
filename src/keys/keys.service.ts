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
import * as audit from '../audit/audit.repository.ts'
import { withTransaction, type Pool, type Queryable } from '../db/pool.ts'
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
  /** When the signing key and the oldest published key started signing (for the key-age metric). */
  activationTimes(): { signingSince: Date | undefined; oldestPublished: Date | undefined }
  /** A published key by `kid`, or undefined. Never consults anything the token itself carries. */
  verificationKey(kid: string): KeyObject | undefined
  /** Like verificationKey, re-reading the keys (rate-limited) when the kid is unknown. */
  findVerificationKey(kid: string): Promise<KeyObject | undefined>
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

export interface KeyScheduleOptions {
  /** How long resource servers may cache the JWKS (its Cache-Control max-age). */
  readonly jwksMaxAgeSeconds: number
  /** Rotate automatically when the signing key is this old; 0 turns the schedule off. */
  readonly rotationDays: number
  /** How often each instance re-reads the keys; must be well below the JWKS max-age. */
  readonly reloadIntervalMs: number
}

/** Extra time a new key is published before it signs, on top of one JWKS cache period. */
export const PUBLICATION_MARGIN_SECONDS = 60

export interface KeySummary {
  kid: string
  alg: string
  created_at: Date
  activates_at: Date
  retires_at: Date | null
  expires_at: Date | null
  state: 'pending' | 'signing' | 'retired' | 'revoked'
}

export function createKeyStore(deps: { db: Pool; config: Config; clock: Clock; schedule: KeyScheduleOptions; onError?: (err: unknown) => void; onChange?: () => void }): KeyStore & KeyAdmin {
  const { db, config, clock, schedule } = deps
  if (config.keyEncryptionKey === undefined) throw new Error('createKeyStore: keyEncryptionKey is not set')
  const wrappingKey = deriveSecret(config.keyEncryptionKey, 'signing-keys')
  let keys: SigningKey[] = []
  let byKid = new Map<string, SigningKey>()
  let timer: NodeJS.Timeout | undefined
  let lastReload = 0
  let pendingReload: Promise<void> | undefined

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
    lastReload = Date.now()
  }

  function usableForSigning(now: Date): SigningKey[] {
    return keys.filter((k) => k.alg === config.jwt.algorithm && k.activatesAt <= now && (k.retiresAt === null || k.retiresAt > now))
  }

  /** How long a retired key stays published: until every token it signed has expired. */
  function retentionMs(): number {
    return (config.jwt.accessTokenTtlSeconds + config.jwt.leewaySeconds + PUBLICATION_MARGIN_SECONDS) * 1000
  }

  async function insertKey(tx: Queryable, now: Date, activatesAt: Date): Promise<string> {
    const generated = await generateSigningKey(config.jwt.algorithm)
    await keysRepository.insert(tx, {
      kid: generated.kid,
      alg: config.jwt.algorithm,
      public_jwk: generated.publicJwk,
      private_key_ciphertext: encrypt(wrappingKey, generated.privatePkcs8, generated.kid),
      created_at: now,
      activates_at: activatesAt,
    })
    return generated.kid
  }

  /** Rotation under the generation lock: `due` decides, inside the lock, whether to go on. */
  async function rotateIf(due: (rows: SigningKeyRow[], now: Date) => boolean): Promise<{ kid: string; activatesAt: Date } | undefined> {
    const result = await withTransaction(db, async (tx) => {
      await keysRepository.lockForGeneration(tx)
      const now = clock.now()
      const rows = await keysRepository.findPublished(tx, now)
      if (!due(rows, now)) return undefined
      // Published one JWKS cache period (+ margin) before it signs: every resource server's cached JWKS
      // has it by then, so no valid token is ever rejected for an unknown kid.
      const activatesAt = new Date(now.getTime() + (schedule.jwksMaxAgeSeconds + PUBLICATION_MARGIN_SECONDS) * 1000)
      const kid = await insertKey(tx, now, activatesAt)
      await keysRepository.retireActive(tx, kid, activatesAt, new Date(activatesAt.getTime() + retentionMs()))
      await audit.insertEvent(tx, { type: 'key.rotated', accountId: null, actor: 'system', ip: null, userAgent: null, requestId: null, data: { kid, activates_at: activatesAt.toISOString() }, occurredAt: now })
      return { kid, activatesAt }
    })
    if (result) {
      await reload()
      deps.onChange?.()
    }
    return result
  }

  function newestCreated(rows: SigningKeyRow[]): SigningKeyRow | undefined {
    return rows.filter((r) => r.alg === config.jwt.algorithm && r.revoked_at === null).sort((a, b) => a.created_at.getTime() - b.created_at.getTime()).at(-1)
  }

  async function scheduledRotation(): Promise<void> {
    if (schedule.rotationDays <= 0) return
    const limitMs = schedule.rotationDays * 86_400_000
    await rotateIf((rows, now) => {
      const newest = newestCreated(rows)
      return newest === undefined || now.getTime() - newest.created_at.getTime() >= limitMs
    })
  }

  const store: KeyStore & KeyAdmin = {
    async init() {
      await reload()
      if (usableForSigning(clock.now()).length === 0) {
        await withTransaction(db, async (tx) => {
          await keysRepository.lockForGeneration(tx)
          const now = clock.now()
          const rows = await keysRepository.findPublished(tx, now)
          const usable = rows.some((r) => r.alg === config.jwt.algorithm && r.activates_at <= now && (r.retires_at === null || r.retires_at > now))
          if (!usable) await insertKey(tx, now, now)
        })
        await reload()
      }
      await scheduledRotation()
      if (schedule.reloadIntervalMs > 0) {
        timer = setInterval(() => {
          reload().then(scheduledRotation).catch((err: unknown) => deps.onError?.(err))
        }, schedule.reloadIntervalMs)
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
    activationTimes() {
      const usable = usableForSigning(clock.now())
      const oldest = keys.reduce<Date | undefined>((min, k) => (min === undefined || k.activatesAt < min ? k.activatesAt : min), undefined)
      return { signingSince: usable[usable.length - 1]?.activatesAt, oldestPublished: oldest }
    },
    verificationKey: (kid) => byKid.get(kid)?.publicKey,
    async findVerificationKey(kid) {
      const known = byKid.get(kid)?.publicKey
      if (known !== undefined) return known
      // An unknown kid may be a key another instance just added: re-read, at most once a second, so a
      // flood of forged kids cannot turn into a flood of queries.
      if (Date.now() - lastReload < 1000) return undefined
      pendingReload ??= reload().finally(() => { pendingReload = undefined })
      await pendingReload.catch(() => undefined)
      return byKid.get(kid)?.publicKey
    },
    jwks: () => ({ keys: keys.map((k) => ({ ...k.publicJwk }) as PublicJwk) }),
    close() {
      if (timer) clearInterval(timer)
    },

    rotate: () => rotateIf(() => true).then((r) => {
      if (r === undefined) throw new Error('rotation did not happen')
      return r
    }),

    async revoke(kid) {
      const now = clock.now()
      const result = await withTransaction(db, async (tx) => {
        await keysRepository.lockForGeneration(tx)
        if (!(await keysRepository.markRevoked(tx, kid, now))) return undefined
        const rows = await keysRepository.findPublished(tx, now)
        const stillSigning = rows.some((r) => r.alg === config.jwt.algorithm && r.activates_at <= now && (r.retires_at === null || r.retires_at > now))
        // Emergency: with no key left to sign, a replacement signs at once. Resource servers fetch it on
        // the unknown kid (their cached JWKS cannot have it).
        const replacement = stillSigning ? undefined : await insertKey(tx, now, now)
        await audit.insertEvent(tx, { type: 'key.revoked', accountId: null, actor: 'cli', ip: null, userAgent: null, requestId: null, data: { kid, replacement: replacement ?? null }, occurredAt: now })
        return { replacement }
      })
      if (result === undefined) return undefined
      await reload()
      deps.onChange?.()
      return result
    },

    async list() {
      const now = clock.now()
      return (await keysRepository.findAll(db)).map((r) => ({
        kid: r.kid, alg: r.alg, created_at: r.created_at, activates_at: r.activates_at, retires_at: r.retires_at, expires_at: r.expires_at,
        state: r.revoked_at !== null ? 'revoked' : r.activates_at > now ? 'pending' : r.retires_at !== null && r.retires_at <= now ? 'retired' : 'signing',
      }))
    },
  }
  return store
}

/** Operator actions on keys (CLI). */
export interface KeyAdmin {
  /** Adds a key that starts signing one JWKS cache period (+ margin) from now; the current one retires then. */
  rotate(): Promise<{ kid: string; activatesAt: Date }>
  /** Removes a key from the JWKS at once; undefined when no such published key. */
  revoke(kid: string): Promise<{ replacement: string | undefined } | undefined>
  list(): Promise<KeySummary[]>
}
