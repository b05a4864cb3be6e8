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
import { DEFAULT_RULES } from '../../src/limits/limits.rules.ts'
import { createLogger } from '../../src/logger.ts'
import type { PasswordHasher } from '../../src/passwords/passwords.hasher.ts'
import { createTestDatabase, type TestDatabase } from './db.ts'

// Tests fire bursts (20–50 parallel requests) on purpose: a deeper hashing queue than production's.
export const CHEAP_HASHING = { TESSERA_ARGON2_MEMORY_KIB: '1024', TESSERA_ARGON2_TIME_COST: '1', TESSERA_HASH_QUEUE_LIMIT: '100' } as const

/**
 * Tests send hundreds of requests from one address in seconds: every rate-limit rule gets a budget no
 * test reaches, except in the tests about rate limits, which set their own (TESSERA_RATE_LIMITS). And
 * parallel test files starve each other's event loops on 2 cores: load shedding is off too, except in
 * its own test.
 */
export const RELAXED_LIMITS = {
  TESSERA_RATE_LIMITS: JSON.stringify(Object.fromEntries(Object.keys(DEFAULT_RULES).map((name) => [name, { points: 1_000_000, seconds: 60 }]))),
  TESSERA_MAX_EVENT_LOOP_DELAY_MS: '0',
} as const

export function testConfig(url: string, env: Record<string, string> = {}): Config {
  return loadConfig({
    DATABASE_URL: url,
    TESSERA_KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    TESSERA_PUBLIC_URL: 'http://tessera.test',
    LOG_LEVEL: 'silent',
    // The outbox is the tests' recording mailer; the SMTP tests set SMTP_URL (and unset this) themselves.
    TESSERA_EMAIL_OUTBOX: 'true',
    ...CHEAP_HASHING,
    ...RELAXED_LIMITS,
    ...env,
  })
}

const depsByApp = new WeakMap<FastifyInstance, Deps>()

export interface TestApp {
  readonly app: FastifyInstance
  readonly deps: Deps
  readonly db: TestDatabase
  readonly config: Config
  close(): Promise<void>
}

/**
 * @param options.worker also run the email worker in this app (the SMTP tests); by default tests
 * deliver queued messages themselves with {@link deliverQueued}, through the same handler.
 */
export async function createTestApp(options: { clock?: Clock; env?: Record<string, string>; db?: TestDatabase; hasher?: PasswordHasher; worker?: boolean } = {}): Promise<TestApp> {
  const db = options.db ?? (await createTestDatabase())
  const config = testConfig(db.url, options.env)
  const deps = await createDeps(config, { clock: options.clock, hasher: options.hasher, logger: createLogger('silent') })
  await deps.start({ worker: options.worker ?? false })
  const app = await buildApp(deps)
  await app.ready()
  depsByApp.set(app, deps)
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

/**
 * Delivers every queued message now, through the real job handler, without a worker process: with the
 * outbox transport the messages land in `mail_outbox`. Returns how many were handled.
 */
export async function deliverQueued(app: FastifyInstance): Promise<number> {
  const deps = depsByApp.get(app)
  if (deps === undefined) throw new Error('deliverQueued: not an app from createTestApp')
  const { rows } = await deps.db.query<{ id: string }>('SELECT id FROM email_messages WHERE delivered_at IS NULL AND skipped_at IS NULL AND dead_at IS NULL ORDER BY created_at')
  for (const { id } of rows) await deps.email.deliver({ id, data: { messageId: id }, attempt: 1, lastAttempt: false })
  return rows.length
}

export interface OutboxMessage { recipient: string; subject: string; text: string; html: string; links: string[] }

/** Messages in the development outbox for `to`, newest first (after delivering what is queued). */
export async function inbox(app: FastifyInstance, to: string): Promise<OutboxMessage[]> {
  await deliverQueued(app)
  const deps = depsByApp.get(app) as Deps
  const { rows } = await deps.db.query<{ recipient: string; subject: string; text_body: string; html_body: string }>(
    'SELECT recipient, subject, text_body, html_body FROM mail_outbox WHERE recipient = $1 ORDER BY created_at DESC, message_id',
    [to.toLowerCase()],
  )
  return rows.map((r) => ({ recipient: r.recipient, subject: r.subject, text: r.text_body, html: r.html_body, links: r.text_body.match(/https?:\/\/\S+/g) ?? [] }))
}

/** The token of the newest link to `path` (e.g. '/verify-email') sent to `to`. */
export async function tokenFromInbox(app: FastifyInstance, to: string, path: string): Promise<string> {
  for (const message of await inbox(app, to)) {
    for (const link of message.links) {
      const url = new URL(link)
      const token = url.searchParams.get('token')
      if (url.pathname === path && token !== null) return token
    }
  }
  throw new Error(`no ${path} link in the outbox for ${to}`)
}

/** Follows the verification link sent to `email`, through the API. */
export async function verifyEmail(app: FastifyInstance, email: string): Promise<void> {
  const token = await tokenFromInbox(app, email, '/verify-email')
  const res = await app.inject({ method: 'POST', url: '/v1/email-verification/confirm', payload: { token } })
  if (res.statusCode !== 204) throw new Error(`verification failed: ${res.statusCode} ${res.body}`)
}

/** Registers an account and verifies its address, as its owner would. */
export async function registerVerified(app: FastifyInstance, email: string, password = VALID_PASSWORD): Promise<void> {
  const res = await register(app, email, password)
  if (res.statusCode !== 202) throw new Error(`register failed: ${res.statusCode} ${res.body}`)
  await verifyEmail(app, email)
}

/** Registers, verifies and logs in a fresh account. */
export async function signUp(app: FastifyInstance, email = uniqueEmail()): Promise<Tokens & { email: string }> {
  await registerVerified(app, email)
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
