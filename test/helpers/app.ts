/**
 * Builds the real application on a real, private PostgreSQL database, with cheap hashing parameters
 * (tests about hashing use the production ones) and an optional fake clock.
 */
import { randomBytes } from 'node:crypto'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { buildApp } from '../../src/app.ts'
import type { Clock } from '../../src/clock.ts'
import { loadConfig, type Config } from '../../src/config.ts'
import { createDeps, type Deps } from '../../src/deps.ts'
import { createLogger } from '../../src/logger.ts'
import type { PasswordHasher } from '../../src/passwords/passwords.hasher.ts'
import { createTestDatabase, type TestDatabase } from './db.ts'

// Tests fire bursts (20–50 parallel requests) on purpose: a deeper hashing queue than production's.
export const CHEAP_HASHING = { TESSERA_ARGON2_MEMORY_KIB: '1024', TESSERA_ARGON2_TIME_COST: '1', TESSERA_HASH_QUEUE_LIMIT: '100' } as const

export function testConfig(url: string, env: Record<string, string> = {}): Config {
  return loadConfig({
    DATABASE_URL: url,
    TESSERA_KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    TESSERA_PUBLIC_URL: 'http://tessera.test',
    LOG_LEVEL: 'silent',
    ...CHEAP_HASHING,
    ...env,
  })
}

export interface TestApp {
  readonly app: FastifyInstance
  readonly deps: Deps
  readonly db: TestDatabase
  readonly config: Config
  close(): Promise<void>
}

export async function createTestApp(options: { clock?: Clock; env?: Record<string, string>; db?: TestDatabase; hasher?: PasswordHasher } = {}): Promise<TestApp> {
  const db = options.db ?? (await createTestDatabase())
  const config = testConfig(db.url, options.env)
  const deps = await createDeps(config, { clock: options.clock, hasher: options.hasher, logger: createLogger('silent') })
  await deps.start()
  const app = await buildApp(deps)
  await app.ready()
  return {
    app, deps, db, config,
    async close() {
      await app.close()
      await deps.close()
      if (options.db === undefined) await db.drop()
    },
  }
}

export const VALID_PASSWORD = 'correct horse battery staple'

let counter = 0
export function uniqueEmail(prefix = 'user'): string {
  counter++
  return `${prefix}.${process.pid}.${counter}.${randomBytes(3).toString('hex')}@example.com`
}

export async function register(app: FastifyInstance, email: string, password = VALID_PASSWORD): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'POST', url: '/v1/accounts', payload: { email, password } })
}

export interface Tokens {
  access_token: string
  refresh_token: string
  expires_in: number
  token_type: string
}

export async function login(app: FastifyInstance, email: string, password = VALID_PASSWORD): Promise<Tokens> {
  const res = await app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email, password } })
  if (res.statusCode !== 200) throw new Error(`login failed: ${res.statusCode} ${res.body}`)
  return res.json<Tokens>()
}

/** Registers and logs in a fresh account. */
export async function signUp(app: FastifyInstance, email = uniqueEmail()): Promise<Tokens & { email: string }> {
  const res = await register(app, email)
  if (res.statusCode !== 202) throw new Error(`register failed: ${res.statusCode} ${res.body}`)
  return { ...(await login(app, email)), email }
}

export function refresh(app: FastifyInstance, refreshToken: string): Promise<LightMyRequestResponse> {
  return app.inject({
    method: 'POST',
    url: '/oauth/token',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    payload: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken }).toString(),
  })
}

export function bearer(token: string): { authorization: string } {
  return { authorization: `Bearer ${token}` }
}
