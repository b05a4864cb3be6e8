/**
 * Process entry for `tessera serve`: config → database (embedded or given) → migrations → deps → app →
 * listen → graceful close. The only file that listens.
 */
import { buildApp } from './app.ts'
import { ConfigError, loadConfig, withDatabaseUrl, type Config } from './config.ts'
import { startEmbeddedPostgres, type EmbeddedDatabase } from './db/embedded.ts'
import { migrate } from './db/migrator.ts'
import { createPool } from './db/pool.ts'
import { createDeps, type Deps } from './deps.ts'
import { buildManagementApp } from './observability/management.ts'
import { shutdownTracing } from './observability/tracing.ts'
import type { FastifyInstance } from 'fastify'
import { migrateQueueSchema } from './jobs/jobs.queue.ts'
import { createLogger, type Logger } from './logger.ts'

/** Reads the config or prints every problem and exits (status 78, EX_CONFIG). */
export function loadConfigOrExit(env: NodeJS.ProcessEnv): Config {
  try {
    return loadConfig(env)
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`tessera: ${err.message}\nSee docs/configuration.md.\n`)
      process.exit(78)
    }
    throw err
  }
}

/** Resolves the database: the configured server, or an embedded one started in the data directory. */
export async function openDatabase(config: Config, logger: Logger): Promise<{ config: Config; embedded: EmbeddedDatabase | undefined }> {
  if (config.database.url !== undefined) return { config, embedded: undefined }
  const embedded = await startEmbeddedPostgres({ dataDir: config.embedded.dataDir, port: config.embedded.port, logger })
  logger.warn(
    { dataDir: embedded.dataDir, port: config.embedded.port },
    'EMBEDDED MODE: using a PostgreSQL server started from the data directory. For a single node only; set DATABASE_URL (and TESSERA_KEY_ENCRYPTION_KEY) in production.',
  )
  return { config: withDatabaseUrl(config, embedded.url, embedded.keyEncryptionKey), embedded }
}

/** Advisory lock around every schema change a start-up makes (ours and pg-boss's). */
const SCHEMA_LOCK_KEY = 0x7e55e7a1

export async function runMigrations(config: Config, logger: Logger): Promise<void> {
  const pool = createPool(config.database, logger, 'tessera-migrate')
  // pg-boss's installer races on CREATE SCHEMA when two processes start together: both steps run under
  // one advisory lock of ours, held on a connection of its own.
  const lock = await pool.connect()
  try {
    await lock.query('SELECT pg_advisory_lock($1)', [SCHEMA_LOCK_KEY])
    const applied = await migrate(pool)
    // The job queue's own schema (pgboss), installed and upgraded by pg-boss.
    await migrateQueueSchema(pool)
    logger.info({ applied }, applied.length > 0 ? 'migrations applied' : 'database schema is up to date')
  } finally {
    await lock.query('SELECT pg_advisory_unlock($1)', [SCHEMA_LOCK_KEY]).catch(() => undefined)
    lock.release()
    await pool.end()
  }
}

/** Opens the management listener (metrics, profiling) unless disabled; logs where it listens. */
async function listenManagement(deps: Deps): Promise<FastifyInstance | undefined> {
  const { management } = deps.config
  if (!management.enabled) return undefined
  const app = await buildManagementApp(deps)
  const address = await app.listen({ host: management.host, port: management.port })
  deps.logger.info({ address, profiling: management.profiling }, 'management listener (metrics) ready')
  return app
}

export async function serve(env: NodeJS.ProcessEnv): Promise<void> {
  const initial = loadConfigOrExit(env)
  const logger = createLogger(initial.logLevel)
  const { config, embedded } = await openDatabase(initial, logger)
  const stopEmbedded = async () => { await embedded?.stop() }
  try {
    if (config.database.migrateOnStart) await runMigrations(config, logger)
    const deps = await createDeps(config, { logger })
    await deps.start({ worker: config.worker.mode === 'in-process' })
    const app = await buildApp(deps)
    // The management listener first: once the public listener logs "Server listening", the process must
    // already handle SIGTERM (the handlers below are installed with no await in between).
    const management = await listenManagement(deps)
    await app.listen({ host: config.http.host, port: config.http.port })

    let stopping = false
    const shutdown = async (signal: string) => {
      if (stopping) return
      stopping = true
      logger.info({ signal }, 'shutting down: readiness is now 503, draining in-flight requests')
      deps.health.markShuttingDown()
      if (config.http.shutdownDelayMs > 0) await new Promise((r) => setTimeout(r, config.http.shutdownDelayMs))
      const timeout = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), config.http.shutdownTimeoutMs).unref())
      const closed = await Promise.race([app.close().then(() => 'closed' as const), timeout])
      if (closed === 'timeout') logger.warn({ timeoutMs: config.http.shutdownTimeoutMs }, 'shutdown timeout: closing remaining connections')
      await management?.close()
      await deps.close()
      await shutdownTracing()
      await stopEmbedded()
      logger.info('stopped')
      process.exit(closed === 'timeout' ? 1 : 0)
    }
    process.once('SIGTERM', (s) => { void shutdown(s) })
    process.once('SIGINT', (s) => { void shutdown(s) })
  } catch (err) {
    logger.fatal({ err }, 'start-up failed')
    await stopEmbedded()
    process.exit(1)
  }
}

/**
 * Process entry for `tessera worker`: delivers queued email, serves no HTTP. Run it with
 * TESSERA_WORKER=separate on the API processes. SIGTERM lets the attempts in progress finish (up to
 * TESSERA_SHUTDOWN_TIMEOUT_MS); an attempt cut short is retried by another worker.
 */
export async function work(env: NodeJS.ProcessEnv): Promise<void> {
  const initial = loadConfigOrExit(env)
  const logger = createLogger(initial.logLevel)
  const { config, embedded } = await openDatabase(initial, logger)
  try {
    if (config.database.migrateOnStart) await runMigrations(config, logger)
    const deps = await createDeps(config, { logger })
    await deps.start({ worker: true })
    const management = await listenManagement(deps)
    logger.info({ concurrency: config.worker.concurrency, transport: config.email.transport }, 'worker started')
    let stopping = false
    const shutdown = async (signal: string) => {
      if (stopping) return
      stopping = true
      logger.info({ signal }, 'worker stopping: finishing the attempts in progress')
      await management?.close()
      await deps.close()
      await shutdownTracing()
      await embedded?.stop()
      logger.info('stopped')
      process.exit(0)
    }
    process.once('SIGTERM', (s) => { void shutdown(s) })
    process.once('SIGINT', (s) => { void shutdown(s) })
  } catch (err) {
    logger.fatal({ err }, 'start-up failed')
    await embedded?.stop()
    process.exit(1)
  }
}
