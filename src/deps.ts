/**
 * The wiring diagram: every component and what it is given, read top to bottom. No container, no magic.
 */
import { createSecretKey } from 'node:crypto'
import { createAccountsService } from './accounts/accounts.service.ts'
import { createAdminService } from './admin/admin.service.ts'
import { configureAudit } from './audit/audit.repository.ts'
import { startAuditRetention } from './audit/audit.service.ts'
import { createClientsService } from './clients/clients.service.ts'
import { systemClock, type Clock } from './clock.ts'
import type { Config } from './config.ts'
import { readMigrations } from './db/migrator.ts'
import { createPool, type Pool } from './db/pool.ts'
import { createSmtpMailer } from './email/email.mailer.ts'
import { createEmailService } from './email/email.service.ts'
import { createTemplates } from './email/email.templates.ts'
import { createHealth } from './health/health.ts'
import { createJobQueue } from './jobs/jobs.queue.ts'
import { createRateLimits } from './limits/limits.service.ts'
import { deriveSecret } from './keys/keys.crypto.ts'
import { createKeyStore } from './keys/keys.service.ts'
import { createLogger, type Logger } from './logger.ts'
import { createOAuthService } from './oauth/oauth.service.ts'
import { instrumentHasher, startActiveSessionsGauge } from './observability/instrument.ts'
import { createMetrics, registerSaturationGauges } from './observability/metrics.ts'
import { createRedisBus } from './sessions/revocation.redis.ts'
import { createPasswordHasher, type PasswordHasher } from './passwords/passwords.hasher.ts'
import { createResetService } from './passwords/reset.service.ts'
import { createRevocationList } from './sessions/revocation.ts'
import { createSessionsService } from './sessions/sessions.service.ts'
import { createAccessTokens } from './tokens/access-tokens.ts'

export interface Overrides {
  clock?: Clock
  logger?: Logger
  db?: Pool
  hasher?: PasswordHasher
}

export async function createDeps(config: Config, overrides: Overrides = {}) {
  if (config.keyEncryptionKey === undefined) throw new Error('createDeps: keyEncryptionKey is not set')
  const logger = overrides.logger ?? createLogger(config.logLevel)
  // Every audit event is chained with a key derived from the KEK and copied to the log.
  configureAudit({ keyEncryptionKey: config.keyEncryptionKey, log: logger })
  const clock = overrides.clock ?? systemClock
  const db = overrides.db ?? createPool(config.database, logger)
  const expectedVersion = (await readMigrations()).length

  const metrics = createMetrics()
  // A session revoked longer ago than one access-token lifetime (+ leeway) has no valid token left.
  const revocationWindowSeconds = config.jwt.accessTokenTtlSeconds + config.jwt.leewaySeconds + 60
  const bus = config.redis.url === undefined ? undefined : createRedisBus({ url: config.redis.url, logger, metrics, ttlSeconds: revocationWindowSeconds })

  const limits = createRateLimits({ rules: config.limits.rules, redisUrl: config.redis.url, logger, metrics })
  const hasher = instrumentHasher(overrides.hasher ?? createPasswordHasher(config.passwords), metrics)
  const keys = createKeyStore({
    db, config, clock, schedule: config.keys,
    onError: (err) => logger.warn({ err }, 'signing key reload failed; retrying'),
    onChange: () => bus?.publishKeysChanged(),
  })
  const accessTokens = createAccessTokens({ keys, jwt: config.jwt, clock, onIssued: (kind) => metrics.tokensIssued.inc({ kind }) })
  registerSaturationGauges(metrics, {
    pool: db,
    poolMax: config.database.poolMax,
    hashing: () => hasher.stats(),
    keys: () => keys.activationTimes(),
    now: () => clock.now(),
  })
  const revocations = createRevocationList({
    db,
    clock,
    windowSeconds: revocationWindowSeconds,
    pollMs: config.sessions.revocationPollMs,
    bus,
    onError: (err) => logger.warn({ err }, 'revocation poll failed; retrying'),
    onPropagated: (lagMs) => metrics.revocationPropagation.observe(lagMs / 1000),
    onRevoked: (kind, count) => metrics.revocations.inc({ kind }, count),
  })
  bus?.onReconnect(() => revocations.refresh().catch((err: unknown) => logger.warn({ err }, 'revocation rebuild failed')))
  bus?.onKeysChanged(() => { keys.reload().catch((err: unknown) => logger.warn({ err }, 'signing key reload failed')) })
  const queue = createJobQueue({ pool: db, logger, worker: config.worker })
  const smtp = config.email.transport === 'smtp' ? createSmtpMailer(config.email.smtp) : undefined
  const email = createEmailService({
    db, clock, queue, logger, metrics, smtp,
    templates: createTemplates(config.email.templatesDir),
    config,
    tokenSecret: createSecretKey(deriveSecret(config.keyEncryptionKey, 'email-tokens')),
  })
  const accounts = createAccountsService({ db, clock, hasher, policy: config.passwords, revocations, email, floorMs: config.email.enumerationFloorMs, onRegistration: (result) => metrics.registrations.inc({ result }) })
  const reset = createResetService({ db, clock, hasher, policy: config.passwords, revocations, email, floorMs: config.email.enumerationFloorMs, limits })
  const sessions = createSessionsService({
    db, clock, hasher, accessTokens, revocations,
    sessions: config.sessions,
    passwordMaxBytes: config.passwords.maxBytes,
    requireEmailVerification: config.email.requireVerification,
    lockout: config.limits.lockout,
    email,
    metrics,
    refreshSecret: createSecretKey(deriveSecret(config.keyEncryptionKey, 'refresh-derivation')),
  })
  const admin = createAdminService({ db, clock, revocations, email })
  const clients = createClientsService({ db, clock })
  const oauth = createOAuthService({ db, clock, config, clients, sessions, accessTokens, revocations })
  const health = createHealth({ db, expectedVersion, timeoutMs: 2000 })

  let stopAuditRetention: (() => Promise<void>) | undefined
  let stopSessionsGauge: (() => void) | undefined
  return {
    config, logger, clock, db, metrics, bus, hasher, keys, accessTokens, revocations, limits, queue, email, accounts, reset, sessions, admin, clients, oauth, health,
    /**
     * Loads what the hot paths keep in memory (keys, revocations) and connects the job queue. With
     * `worker`, this process also delivers queued email.
     */
    async start(options: { worker: boolean } = { worker: false }): Promise<void> {
      await keys.init()
      await revocations.start()
      await queue.start({ supervise: options.worker })
      stopSessionsGauge = startActiveSessionsGauge(db, metrics, () => clock.now())
      if (options.worker) {
        await email.startWorker()
        // Maintenance runs where workers run: audit retention (first pass after a minute, then daily).
        stopAuditRetention = startAuditRetention({ db, clock, retentionDays: config.audit.retentionDays, logger })
      }
    },
    /** Stops the worker after the attempts in progress (bounded by the shutdown timeout), then the rest. */
    async close(): Promise<void> {
      stopSessionsGauge?.()
      await stopAuditRetention?.()
      email.stopWorker()
      await queue.stop({ graceful: true, timeoutMs: config.http.shutdownTimeoutMs })
      smtp?.close()
      limits.close()
      revocations.stop()
      keys.close()
      await bus?.close()
      if (overrides.db === undefined) await db.end()
    },
  }
}

export type Deps = Awaited<ReturnType<typeof createDeps>>
