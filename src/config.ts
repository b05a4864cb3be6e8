/**
 * Configuration: the only module that reads environment variables.
 *
 * `loadConfig(env)` parses the environment once against one TypeBox schema, reports every invalid key at
 * once, and returns a deep-frozen {@link Config}. `docs/configuration.md` is generated from
 * {@link envSchema} (`npm run docs:config`) and a test fails when the two disagree.
 */
import { availableParallelism } from 'node:os'
import path from 'node:path'
import { Type, type Static } from 'typebox'
import { Value } from 'typebox/value'
import { resolveRules, type Rule } from './limits/limits.rules.ts'

const DAY = 86_400

/** Every environment variable Tessera reads, with its type, default and description. */
export const envSchema = Type.Object({
  HOST: Type.String({ default: '127.0.0.1', minLength: 1, description: 'Interface the public API listens on. Use `0.0.0.0` in containers.' }),
  PORT: Type.Integer({ default: 8080, minimum: 0, maximum: 65535, description: 'Port of the public API (0 picks a free port).' }),
  LOG_LEVEL: Type.Union([Type.Literal('fatal'), Type.Literal('error'), Type.Literal('warn'), Type.Literal('info'), Type.Literal('debug'), Type.Literal('trace'), Type.Literal('silent')], { default: 'info', description: 'pino log level.' }),
  DATABASE_URL: Type.Optional(Type.String({ pattern: '^postgres(ql)?://', description: 'PostgreSQL connection string. Unset: an embedded PostgreSQL server is started in `TESSERA_DATA_DIR` (single node only).' })),
  REDIS_URL: Type.Optional(Type.String({ pattern: '^rediss?://', description: 'Redis for cross-instance revocation (pub/sub, sub-second). Unset: single-node behaviour, revocations reach other instances through PostgreSQL polling (TESSERA_REVOCATION_POLL_MS).' })),
  DATABASE_POOL_MAX: Type.Integer({ default: 10, minimum: 1, maximum: 200, description: 'Maximum connections in the pool of each instance.' }),
  DATABASE_STATEMENT_TIMEOUT_MS: Type.Integer({ default: 5000, minimum: 100, maximum: 600_000, description: 'Server-side `statement_timeout` for every pooled connection.' }),
  DATABASE_CONNECT_TIMEOUT_MS: Type.Integer({ default: 5000, minimum: 100, maximum: 60_000, description: 'Time allowed to open a connection before the request fails with 503.' }),
  TESSERA_DATA_DIR: Type.String({ default: './.tessera', minLength: 1, description: 'Directory for the embedded PostgreSQL data and the generated key-encryption key (embedded mode only).' }),
  TESSERA_EMBEDDED_PG_PORT: Type.Integer({ default: 54329, minimum: 1, maximum: 65535, description: 'Loopback port of the embedded PostgreSQL server.' }),
  TESSERA_MIGRATE_ON_START: Type.Boolean({ default: true, description: 'Apply pending migrations when `tessera serve` starts (under an advisory lock, so concurrent starts are safe).' }),
  TESSERA_PUBLIC_URL: Type.String({ default: 'http://localhost:8080', pattern: '^https?://[^\\s/?#]+(/[^\\s?#]*)?$', description: 'Public base URL of this service; the `iss` of every token and the base of every link.' }),
  TESSERA_JWT_AUDIENCE: Type.Optional(Type.String({ minLength: 1, maxLength: 512, description: 'The `aud` of access tokens. Defaults to `TESSERA_PUBLIC_URL`.' })),
  TESSERA_JWT_ALGORITHM: Type.Union([Type.Literal('EdDSA'), Type.Literal('ES256')], { default: 'EdDSA', description: 'Signing algorithm for new keys (Ed25519 or P-256). Verifiers accept only this algorithm.' }),
  TESSERA_KEY_ENCRYPTION_KEY: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9+/]{43}=$', description: '32 random bytes, base64: encrypts signing keys at rest (AES-256-GCM) and derives the refresh-token secret. Required with `DATABASE_URL`; generated into the data directory in embedded mode. Generate with `openssl rand -base64 32`.' })),
  TESSERA_JWKS_MAX_AGE_SECONDS: Type.Integer({ default: 300, minimum: 10, maximum: 86_400, description: 'Cache-Control max-age of the JWKS. A rotated key is published this long (+ 60 s) before it signs.' }),
  TESSERA_KEY_ROTATION_DAYS: Type.Integer({ default: 90, minimum: 0, maximum: 3650, description: 'Rotate the signing key automatically when it is this many days old (0: only `tessera keys rotate`).' }),
  TESSERA_KEY_RELOAD_SECONDS: Type.Integer({ default: 30, minimum: 1, maximum: 3600, description: 'How often each instance re-reads the signing keys (rotations and revocations by other instances or the CLI). Must be below TESSERA_JWKS_MAX_AGE_SECONDS.' }),
  TESSERA_ACCESS_TOKEN_TTL_SECONDS: Type.Integer({ default: 600, minimum: 30, maximum: 3600, description: 'Lifetime of access tokens.' }),
  TESSERA_ACCESS_TOKEN_CACHE_SIZE: Type.Integer({ default: 10_000, minimum: 0, maximum: 1_000_000, description: 'Verified access tokens remembered per instance (by exact token string, until expiry), sparing a signature check per request; revocation is still checked every time. 0 turns the cache off.' }),
  TESSERA_JWT_LEEWAY_SECONDS: Type.Integer({ default: 30, minimum: 0, maximum: 60, description: 'Clock skew tolerated when verifying `exp`/`iat` (RFC 8725 advises at most 60 s).' }),
  TESSERA_REFRESH_IDLE_TTL_SECONDS: Type.Integer({ default: 14 * DAY, minimum: 300, maximum: 365 * DAY, description: 'A session whose refresh token is unused this long ends (idle timeout).' }),
  TESSERA_REFRESH_ABSOLUTE_TTL_SECONDS: Type.Integer({ default: 90 * DAY, minimum: 600, maximum: 730 * DAY, description: 'A session ends this long after login, whatever its activity (absolute timeout).' }),
  TESSERA_REFRESH_GRACE_SECONDS: Type.Integer({ default: 10, minimum: 0, maximum: 120, description: 'A refresh token presented again within this window returns the same new refresh token instead of counting as reuse.' }),
  TESSERA_PASSWORD_MIN_LENGTH: Type.Integer({ default: 15, minimum: 8, maximum: 64, description: 'Minimum password length in Unicode code points, after NFKC.' }),
  TESSERA_PASSWORD_MAX_LENGTH: Type.Integer({ default: 256, minimum: 64, maximum: 1024, description: 'Maximum password length in code points (never truncated: longer is rejected).' }),
  TESSERA_PASSWORD_MAX_BYTES: Type.Integer({ default: 1024, minimum: 256, maximum: 4096, description: 'Passwords longer than this many UTF-8 bytes are rejected before hashing (hashing-DoS defence).' }),
  TESSERA_ARGON2_MEMORY_KIB: Type.Integer({ default: 19_456, minimum: 1024, maximum: 262_144, description: 'argon2id memory cost in KiB (OWASP: 19 MiB).' }),
  TESSERA_ARGON2_TIME_COST: Type.Integer({ default: 2, minimum: 1, maximum: 10, description: 'argon2id iterations.' }),
  TESSERA_ARGON2_PARALLELISM: Type.Integer({ default: 1, minimum: 1, maximum: 8, description: 'argon2id lanes.' }),
  TESSERA_HASH_CONCURRENCY: Type.Integer({ default: 0, minimum: 0, maximum: 64, description: 'Password hashes computed at once; 0 means one per CPU core.' }),
  TESSERA_HASH_QUEUE_LIMIT: Type.Integer({ default: 8, minimum: 0, maximum: 10_000, description: 'Hashes allowed to wait for a slot; beyond this, requests are shed at once with 503 and `Retry-After`. At ~100 hashes/s per 2 cores, 8 waiting is ~80 ms of queueing (keeps login p95 under 100 ms); 64 measured 0.6–1.4 s.' }),
  TESSERA_BODY_LIMIT_BYTES: Type.Integer({ default: 65_536, minimum: 1024, maximum: 1_048_576, description: 'Largest request body accepted (413 beyond).' }),
  TESSERA_REQUEST_TIMEOUT_MS: Type.Integer({ default: 30_000, minimum: 1000, maximum: 300_000, description: 'Time allowed to receive a whole request.' }),
  TESSERA_HEADERS_TIMEOUT_MS: Type.Integer({ default: 10_000, minimum: 1000, maximum: 120_000, description: 'Time allowed to receive the request headers (slow-loris defence).' }),
  TESSERA_SHUTDOWN_DELAY_MS: Type.Integer({ default: 0, minimum: 0, maximum: 120_000, description: 'After SIGTERM, keep serving (with readiness 503) this long so load balancers stop routing here before connections close.' }),
  TESSERA_SHUTDOWN_TIMEOUT_MS: Type.Integer({ default: 10_000, minimum: 100, maximum: 600_000, description: 'Longest time in-flight requests get to finish after shutdown starts.' }),
  TESSERA_REVOCATION_POLL_MS: Type.Integer({ default: 1000, minimum: 100, maximum: 60_000, description: 'How often each instance reads session revocations made by other instances from PostgreSQL (the cross-instance revocation bound without Redis).' }),
  SMTP_URL: Type.Optional(Type.String({ pattern: '^smtps?://', description: 'Mail server: `smtps://user:pass@host:465` (TLS from the first byte) or `smtp://user:pass@host:587` (STARTTLS, required unless SMTP_REQUIRE_TLS=false). Required with `DATABASE_URL` unless TESSERA_EMAIL_OUTBOX=true.' })),
  SMTP_FROM: Type.Optional(Type.String({ minLength: 3, maxLength: 320, pattern: '^[^\\r\\n]+$', description: 'The From of every message. Defaults to `Tessera <no-reply@HOST>`, HOST being the host of TESSERA_PUBLIC_URL.' })),
  SMTP_REQUIRE_TLS: Type.Boolean({ default: true, description: 'With `smtp://`, refuse to send unless the server upgrades the connection with STARTTLS. Set false only for a relay on the same host or a test server.' }),
  SMTP_TLS_REJECT_UNAUTHORIZED: Type.Boolean({ default: true, description: 'Verify the mail server\'s certificate. Set false only for a test server with a self-signed certificate.' }),
  SMTP_TIMEOUT_MS: Type.Integer({ default: 30_000, minimum: 1000, maximum: 600_000, description: 'Longest wait for the mail server to connect, greet or answer a command; a hung server fails the attempt, which is retried later.' }),
  TESSERA_EMAIL_OUTBOX: Type.Boolean({ default: false, description: 'Keep messages in the `mail_outbox` table (read them with `tessera mail list`) and log their links instead of sending them. DEVELOPMENT ONLY. It is the default in embedded mode when SMTP_URL is unset; with DATABASE_URL it must be asked for explicitly.' }),
  TESSERA_EMAIL_TEMPLATES_DIR: Type.Optional(Type.String({ minLength: 1, description: 'Directory of template overrides: `<kind>.subject.txt`, `<kind>.txt`, `<kind>.html` for any message kind (see docs/email.md). Files missing there fall back to the built-in ones.' })),
  TESSERA_REQUIRE_EMAIL_VERIFICATION: Type.Boolean({ default: true, description: 'An account whose address is not verified cannot log in (it learns that only after giving the right password).' }),
  TESSERA_VERIFY_TOKEN_TTL_SECONDS: Type.Integer({ default: DAY, minimum: 300, maximum: 7 * DAY, description: 'Lifetime of an email-verification link.' }),
  TESSERA_RESET_TOKEN_TTL_SECONDS: Type.Integer({ default: 3600, minimum: 300, maximum: DAY, description: 'Lifetime of a password-reset link.' }),
  TESSERA_EMAIL_CHANGE_TOKEN_TTL_SECONDS: Type.Integer({ default: 3600, minimum: 300, maximum: DAY, description: 'Lifetime of the link that confirms a new email address.' }),
  TESSERA_EMAIL_THROTTLE_SECONDS: Type.Integer({ default: 60, minimum: 0, maximum: 3600, description: 'Minimum time between two messages of one kind to one address, and to one account. A throttled message is not sent; the requester gets the same answer.' }),
  TESSERA_EMAIL_THROTTLE_PER_HOUR: Type.Integer({ default: 5, minimum: 1, maximum: 1000, description: 'Most messages of one kind per address, and per account, in any hour.' }),
  TESSERA_ENUMERATION_FLOOR_MS: Type.Integer({ default: 50, minimum: 0, maximum: 2000, description: 'Password-reset and resend-verification requests are answered no sooner than this, whatever the address, so that response times do not reveal which addresses have accounts (the work differs by ~1–2 ms). Keep it above that work under load.' }),
  METRICS_PORT: Type.Integer({ default: 9464, minimum: 0, maximum: 65535, description: 'Port of the management listener: `/metrics` (Prometheus) and, with TESSERA_PROFILING, the profiling endpoints. Never the public API port; 0 picks a free port.' }),
  METRICS_HOST: Type.String({ default: '127.0.0.1', minLength: 1, description: 'Interface of the management listener. Keep it off the public network (`0.0.0.0` inside a pod whose port is not exposed by the Service).' }),
  TESSERA_METRICS_ENABLED: Type.Boolean({ default: true, description: 'Open the management listener at all. False: no `/metrics`, no profiling, and no per-request HTTP metrics are recorded.' }),
  TESSERA_PROFILING: Type.Boolean({ default: false, description: 'Serve CPU profiles, heap snapshots and sampling heap profiles on the management listener, to bearers of an `admin` access token. Off by default.' }),
  TESSERA_TRUSTED_PROXIES: Type.Optional(Type.String({ maxLength: 4096, pattern: '^[0-9A-Fa-f:.,/ ]+$', description: 'Comma-separated IPs or CIDRs of the reverse proxies in front of Tessera. Unset: the client IP is the socket peer and forwarding headers are ignored. Set: the client IP is the rightmost `X-Forwarded-For` hop that is not a trusted proxy.' })),
  TESSERA_RATE_LIMITS: Type.Optional(Type.String({ maxLength: 8192, description: 'JSON object overriding rate limits per rule, e.g. `{"login.ip":{"points":50,"seconds":60}}`. Rules and defaults: docs/security.md.' })),
  TESSERA_LOCKOUT_THRESHOLD: Type.Integer({ default: 10, minimum: 3, maximum: 50, description: 'Consecutive failed logins of an account before each further failure locks it for a while.' }),
  TESSERA_LOCKOUT_BASE_SECONDS: Type.Integer({ default: 30, minimum: 1, maximum: 3600, description: 'First lock duration; each further failure doubles it, up to TESSERA_LOCKOUT_MAX_SECONDS.' }),
  TESSERA_LOCKOUT_MAX_SECONDS: Type.Integer({ default: 900, minimum: 1, maximum: 86_400, description: 'Ceiling of one lock.' }),
  TESSERA_LOCKOUT_HARD_LIMIT: Type.Integer({ default: 100, minimum: 10, maximum: 100, description: 'Consecutive failures after which the account is locked until its password is reset (NIST SP 800-63B: at most 100).' }),
  TESSERA_MAX_EVENT_LOOP_DELAY_MS: Type.Integer({ default: 500, minimum: 0, maximum: 60_000, description: 'Shed requests with 503 and `Retry-After` while the event loop lags more than this (0: off). Health endpoints are never shed.' }),
  TESSERA_AUDIT_RETENTION_DAYS: Type.Integer({ default: 400, minimum: 0, maximum: 36_500, description: 'Audit events older than this are deleted (daily, by the worker). 0 keeps them forever.' }),
  TESSERA_WORKER: Type.Union([Type.Literal('in-process'), Type.Literal('separate')], { default: 'in-process', description: '`in-process`: `tessera serve` also delivers queued email. `separate`: it only enqueues, and `tessera worker` processes deliver.' }),
  TESSERA_WORKER_CONCURRENCY: Type.Integer({ default: 4, minimum: 1, maximum: 64, description: 'Messages one worker process delivers at once (a slow message never blocks the others).' }),
  TESSERA_WORKER_POLL_MS: Type.Integer({ default: 1000, minimum: 500, maximum: 60_000, description: 'How often an idle worker looks for new jobs.' }),
  TESSERA_EMAIL_MAX_ATTEMPTS: Type.Integer({ default: 12, minimum: 1, maximum: 100, description: 'Delivery attempts per message before it goes to the dead-letter queue (`tessera jobs list`, `tessera jobs retry`).' }),
  TESSERA_EMAIL_RETRY_DELAY_SECONDS: Type.Integer({ default: 5, minimum: 1, maximum: 3600, description: 'Base of the exponential backoff between attempts: attempt n waits between ½ and 1 × base × 2ⁿ (random jitter), capped by TESSERA_EMAIL_RETRY_DELAY_MAX_SECONDS. The defaults keep retrying for about an hour.' }),
  TESSERA_EMAIL_RETRY_DELAY_MAX_SECONDS: Type.Integer({ default: 900, minimum: 1, maximum: 86_400, description: 'Longest wait between two delivery attempts.' }),
})

export type Env = Static<typeof envSchema>

/** The parsed, validated and frozen configuration. Tests build one with {@link loadConfig} too. */
export interface Config {
  readonly http: {
    readonly host: string
    readonly port: number
    readonly bodyLimit: number
    readonly requestTimeoutMs: number
    readonly headersTimeoutMs: number
    readonly shutdownDelayMs: number
    readonly shutdownTimeoutMs: number
  }
  readonly logLevel: Env['LOG_LEVEL']
  readonly database: {
    /** Undefined in embedded mode until the embedded server has started. */
    readonly url: string | undefined
    readonly poolMax: number
    readonly statementTimeoutMs: number
    readonly connectTimeoutMs: number
    readonly migrateOnStart: boolean
  }
  readonly embedded: { readonly dataDir: string; readonly port: number }
  readonly redis: { readonly url: string | undefined }
  readonly publicUrl: string
  readonly jwt: {
    readonly issuer: string
    readonly audience: string
    readonly algorithm: Env['TESSERA_JWT_ALGORITHM']
    readonly accessTokenTtlSeconds: number
    readonly leewaySeconds: number
    readonly verifiedCacheSize: number
  }
  readonly keys: {
    readonly jwksMaxAgeSeconds: number
    readonly rotationDays: number
    readonly reloadIntervalMs: number
  }
  /** Base64 key-encryption key; undefined only in embedded mode, where it is generated on first start. */
  readonly keyEncryptionKey: string | undefined
  readonly sessions: {
    readonly idleTtlSeconds: number
    readonly absoluteTtlSeconds: number
    readonly refreshGraceSeconds: number
    readonly revocationPollMs: number
  }
  readonly email: {
    /** `outbox`: development transport, messages stay in the database. */
    readonly transport: 'smtp' | 'outbox'
    readonly smtp: { readonly url: string | undefined; readonly from: string; readonly requireTls: boolean; readonly rejectUnauthorized: boolean; readonly timeoutMs: number }
    readonly templatesDir: string | undefined
    readonly requireVerification: boolean
    readonly tokenTtlSeconds: { readonly verify_email: number; readonly reset_password: number; readonly change_email: number }
    readonly throttle: { readonly minIntervalSeconds: number; readonly perHour: number }
    /** Minimum answer time of the requests that must not reveal an account (see http/timing.ts). */
    readonly enumerationFloorMs: number
  }
  readonly limits: {
    /** IPs/CIDRs of trusted reverse proxies (empty: the socket peer is the client). */
    readonly trustedProxies: readonly string[]
    /** The rate-limit rules: defaults with TESSERA_RATE_LIMITS applied (limits/limits.rules.ts). */
    readonly rules: Readonly<Record<string, Rule>>
    readonly lockout: { readonly threshold: number; readonly baseSeconds: number; readonly maxSeconds: number; readonly hardLimit: number }
    readonly maxEventLoopDelayMs: number
  }
  readonly audit: { readonly retentionDays: number }
  readonly management: { readonly enabled: boolean; readonly host: string; readonly port: number; readonly profiling: boolean }
  readonly worker: {
    readonly mode: Env['TESSERA_WORKER']
    readonly concurrency: number
    readonly pollMs: number
    readonly maxAttempts: number
    readonly retryDelaySeconds: number
    readonly retryDelayMaxSeconds: number
  }
  readonly passwords: {
    readonly minLength: number
    readonly maxLength: number
    readonly maxBytes: number
    readonly argon2: { readonly memoryCost: number; readonly timeCost: number; readonly parallelism: number }
    readonly concurrency: number
    readonly queueLimit: number
  }
}

export class ConfigError extends Error {
  readonly problems: readonly string[]
  constructor(problems: readonly string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`)
    this.name = 'ConfigError'
    this.problems = problems
  }
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const child of Object.values(value)) deepFreeze(child)
  }
  return value
}

function describe(key: string, raw: unknown, message: string): string {
  // Secrets never reach a log line, not even when they are malformed.
  const shown = /(_KEY|_URL|SECRET)$/.test(key) ? '(value hidden)' : JSON.stringify(raw)
  return `${key}=${shown}: ${message}`
}

/**
 * Parses the environment into a frozen {@link Config}.
 * @throws ConfigError listing every invalid key at once.
 */
export function loadConfig(env: Readonly<Record<string, string | undefined>>): Config {
  const picked: Record<string, unknown> = {}
  for (const key of Object.keys(envSchema.properties)) {
    const raw = env[key]
    if (raw !== undefined && raw !== '') picked[key] = raw
  }
  const converted = Value.Convert(envSchema, Value.Default(envSchema, Value.Clone(picked)))
  const problems: string[] = []
  const reported = new Set<string>()
  for (const error of Value.Errors(envSchema, converted)) {
    const key = error.instancePath.replace(/^\//, '') || 'environment'
    if (reported.has(key)) continue // one line per key, even when several rules fail
    reported.add(key)
    const choices = (envSchema.properties as Record<string, { anyOf?: Array<{ const?: unknown }> }>)[key]?.anyOf
    const message = choices ? `must be one of ${choices.map((c) => String(c.const)).join(', ')}` : error.message
    problems.push(describe(key, picked[key], message))
  }
  if (picked.DATABASE_URL !== undefined && picked.TESSERA_KEY_ENCRYPTION_KEY === undefined) {
    problems.push('TESSERA_KEY_ENCRYPTION_KEY is required when DATABASE_URL is set (generate one with `openssl rand -base64 32`)')
  }
  if (picked.DATABASE_URL !== undefined && picked.SMTP_URL === undefined && (converted as Partial<Env>).TESSERA_EMAIL_OUTBOX !== true) {
    problems.push('SMTP_URL is required when DATABASE_URL is set: Tessera will not run in production without a way to send email (TESSERA_EMAIL_OUTBOX=true keeps messages in the database, for development only)')
  }
  if (picked.SMTP_URL !== undefined && (converted as Partial<Env>).TESSERA_EMAIL_OUTBOX === true) {
    problems.push('SMTP_URL and TESSERA_EMAIL_OUTBOX=true are both set: choose one transport')
  }
  if (problems.length > 0) throw new ConfigError(problems)
  const e = converted as Env

  if (e.TESSERA_REFRESH_ABSOLUTE_TTL_SECONDS < e.TESSERA_REFRESH_IDLE_TTL_SECONDS) {
    problems.push('TESSERA_REFRESH_ABSOLUTE_TTL_SECONDS must be at least TESSERA_REFRESH_IDLE_TTL_SECONDS')
  }
  if (e.TESSERA_KEY_RELOAD_SECONDS >= e.TESSERA_JWKS_MAX_AGE_SECONDS) {
    problems.push('TESSERA_KEY_RELOAD_SECONDS must be below TESSERA_JWKS_MAX_AGE_SECONDS (a rotated key must reach every instance before it signs)')
  }
  if (e.TESSERA_PASSWORD_MAX_LENGTH < e.TESSERA_PASSWORD_MIN_LENGTH) {
    problems.push('TESSERA_PASSWORD_MAX_LENGTH must be at least TESSERA_PASSWORD_MIN_LENGTH')
  }
  let rules: Readonly<Record<string, Rule>> = {}
  try {
    rules = resolveRules(e.TESSERA_RATE_LIMITS)
  } catch (err) {
    problems.push((err as Error).message)
  }
  if (e.TESSERA_LOCKOUT_MAX_SECONDS < e.TESSERA_LOCKOUT_BASE_SECONDS) {
    problems.push('TESSERA_LOCKOUT_MAX_SECONDS must be at least TESSERA_LOCKOUT_BASE_SECONDS')
  }
  if (e.TESSERA_LOCKOUT_HARD_LIMIT <= e.TESSERA_LOCKOUT_THRESHOLD) {
    problems.push('TESSERA_LOCKOUT_HARD_LIMIT must be above TESSERA_LOCKOUT_THRESHOLD')
  }
  if (e.TESSERA_EMAIL_RETRY_DELAY_MAX_SECONDS < e.TESSERA_EMAIL_RETRY_DELAY_SECONDS) {
    problems.push('TESSERA_EMAIL_RETRY_DELAY_MAX_SECONDS must be at least TESSERA_EMAIL_RETRY_DELAY_SECONDS')
  }
  if (problems.length > 0) throw new ConfigError(problems)

  const publicUrl = e.TESSERA_PUBLIC_URL.replace(/\/+$/, '')
  return deepFreeze<Config>({
    http: {
      host: e.HOST,
      port: e.PORT,
      bodyLimit: e.TESSERA_BODY_LIMIT_BYTES,
      requestTimeoutMs: e.TESSERA_REQUEST_TIMEOUT_MS,
      headersTimeoutMs: e.TESSERA_HEADERS_TIMEOUT_MS,
      shutdownDelayMs: e.TESSERA_SHUTDOWN_DELAY_MS,
      shutdownTimeoutMs: e.TESSERA_SHUTDOWN_TIMEOUT_MS,
    },
    logLevel: e.LOG_LEVEL,
    database: {
      url: e.DATABASE_URL,
      poolMax: e.DATABASE_POOL_MAX,
      statementTimeoutMs: e.DATABASE_STATEMENT_TIMEOUT_MS,
      connectTimeoutMs: e.DATABASE_CONNECT_TIMEOUT_MS,
      migrateOnStart: e.TESSERA_MIGRATE_ON_START,
    },
    embedded: { dataDir: path.resolve(e.TESSERA_DATA_DIR), port: e.TESSERA_EMBEDDED_PG_PORT },
    redis: { url: e.REDIS_URL },
    publicUrl,
    jwt: {
      issuer: publicUrl,
      audience: e.TESSERA_JWT_AUDIENCE ?? publicUrl,
      algorithm: e.TESSERA_JWT_ALGORITHM,
      accessTokenTtlSeconds: e.TESSERA_ACCESS_TOKEN_TTL_SECONDS,
      leewaySeconds: e.TESSERA_JWT_LEEWAY_SECONDS,
      verifiedCacheSize: e.TESSERA_ACCESS_TOKEN_CACHE_SIZE,
    },
    keys: {
      jwksMaxAgeSeconds: e.TESSERA_JWKS_MAX_AGE_SECONDS,
      rotationDays: e.TESSERA_KEY_ROTATION_DAYS,
      reloadIntervalMs: e.TESSERA_KEY_RELOAD_SECONDS * 1000,
    },
    keyEncryptionKey: e.TESSERA_KEY_ENCRYPTION_KEY,
    sessions: {
      idleTtlSeconds: e.TESSERA_REFRESH_IDLE_TTL_SECONDS,
      absoluteTtlSeconds: e.TESSERA_REFRESH_ABSOLUTE_TTL_SECONDS,
      refreshGraceSeconds: e.TESSERA_REFRESH_GRACE_SECONDS,
      revocationPollMs: e.TESSERA_REVOCATION_POLL_MS,
    },
    email: {
      transport: e.SMTP_URL === undefined ? 'outbox' : 'smtp',
      smtp: {
        url: e.SMTP_URL,
        from: e.SMTP_FROM ?? `Tessera <no-reply@${new URL(publicUrl).hostname}>`,
        requireTls: e.SMTP_REQUIRE_TLS,
        rejectUnauthorized: e.SMTP_TLS_REJECT_UNAUTHORIZED,
        timeoutMs: e.SMTP_TIMEOUT_MS,
      },
      templatesDir: e.TESSERA_EMAIL_TEMPLATES_DIR === undefined ? undefined : path.resolve(e.TESSERA_EMAIL_TEMPLATES_DIR),
      requireVerification: e.TESSERA_REQUIRE_EMAIL_VERIFICATION,
      tokenTtlSeconds: {
        verify_email: e.TESSERA_VERIFY_TOKEN_TTL_SECONDS,
        reset_password: e.TESSERA_RESET_TOKEN_TTL_SECONDS,
        change_email: e.TESSERA_EMAIL_CHANGE_TOKEN_TTL_SECONDS,
      },
      throttle: { minIntervalSeconds: e.TESSERA_EMAIL_THROTTLE_SECONDS, perHour: e.TESSERA_EMAIL_THROTTLE_PER_HOUR },
      enumerationFloorMs: e.TESSERA_ENUMERATION_FLOOR_MS,
    },
    limits: {
      trustedProxies: (e.TESSERA_TRUSTED_PROXIES ?? '').split(',').map((x) => x.trim()).filter((x) => x !== ''),
      rules,
      lockout: {
        threshold: e.TESSERA_LOCKOUT_THRESHOLD,
        baseSeconds: e.TESSERA_LOCKOUT_BASE_SECONDS,
        maxSeconds: e.TESSERA_LOCKOUT_MAX_SECONDS,
        hardLimit: e.TESSERA_LOCKOUT_HARD_LIMIT,
      },
      maxEventLoopDelayMs: e.TESSERA_MAX_EVENT_LOOP_DELAY_MS,
    },
    audit: { retentionDays: e.TESSERA_AUDIT_RETENTION_DAYS },
    management: { enabled: e.TESSERA_METRICS_ENABLED, host: e.METRICS_HOST, port: e.METRICS_PORT, profiling: e.TESSERA_PROFILING },
    worker: {
      mode: e.TESSERA_WORKER,
      concurrency: e.TESSERA_WORKER_CONCURRENCY,
      pollMs: e.TESSERA_WORKER_POLL_MS,
      maxAttempts: e.TESSERA_EMAIL_MAX_ATTEMPTS,
      retryDelaySeconds: e.TESSERA_EMAIL_RETRY_DELAY_SECONDS,
      retryDelayMaxSeconds: e.TESSERA_EMAIL_RETRY_DELAY_MAX_SECONDS,
    },
    passwords: {
      minLength: e.TESSERA_PASSWORD_MIN_LENGTH,
      maxLength: e.TESSERA_PASSWORD_MAX_LENGTH,
      maxBytes: e.TESSERA_PASSWORD_MAX_BYTES,
      argon2: { memoryCost: e.TESSERA_ARGON2_MEMORY_KIB, timeCost: e.TESSERA_ARGON2_TIME_COST, parallelism: e.TESSERA_ARGON2_PARALLELISM },
      concurrency: e.TESSERA_HASH_CONCURRENCY === 0 ? availableParallelism() : e.TESSERA_HASH_CONCURRENCY,
      queueLimit: e.TESSERA_HASH_QUEUE_LIMIT,
    },
  })
}

/** Returns a copy of `config` with the database URL set (used once the embedded server is up). */
export function withDatabaseUrl(config: Config, url: string, keyEncryptionKey: string): Config {
  return deepFreeze({ ...config, database: { ...config.database, url }, keyEncryptionKey })
}
