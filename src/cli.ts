#!/usr/bin/env node
/**
 * The `tessera` command: `serve` (the default of `npm start`), `migrate`, and operator tasks that act
 * on the database directly (service clients, signing keys). Every command reads the same configuration.
 */
import { parseArgs } from 'node:util'
import type { Config } from './config.ts'
import type { Pool } from './db/pool.ts'
import type { Logger } from './logger.ts'
import type { EmailJob } from './email/email.service.ts'
import { startTracingIfConfigured } from './observability/tracing.ts'

// Tracing first (only when OTEL_* configure it, see docs/tracing.md): its instrumentations patch pg,
// ioredis and node:http as they load, so every other module is imported after it has started — hence
// the dynamic imports below instead of static ones (which would load before this line runs). Only the
// long-running commands are traced: a one-shot operator command has no request to follow, and its
// arguments (an email address) would be in the exported resource (process.command_args).
if (['serve', 'worker'].includes(process.argv[2] ?? 'serve')) await startTracingIfConfigured(process.env)

const { createClientsService } = await import('./clients/clients.service.ts')
const { ADMIN_ROLE, createOperatorAccount } = await import('./admin/admin.service.ts')
const { createPasswordHasher } = await import('./passwords/passwords.hasher.ts')
const { Redis } = await import('ioredis')
const { createKeyStore } = await import('./keys/keys.service.ts')
const { KEYS_CHANNEL } = await import('./sessions/revocation.redis.ts')
const { systemClock } = await import('./clock.ts')
const { createPool } = await import('./db/pool.ts')
const { createLogger } = await import('./logger.ts')
const { loadConfigOrExit, openDatabase, runMigrations, serve, work } = await import('./main.ts')
const emailRepository = await import('./email/email.repository.ts')
const { auditChainKey } = await import('./audit/audit.chain.ts')
const { configureAudit } = await import('./audit/audit.repository.ts')
const { verifyChain } = await import('./audit/audit.service.ts')
const { createJobQueue, QUEUES } = await import('./jobs/jobs.queue.ts')

const usage = `Usage: tessera <command> [options]

Commands:
  serve                         Run the HTTP API (applies migrations first unless TESSERA_MIGRATE_ON_START=false)
  migrate                       Apply pending database migrations and exit
  clients create --id ID --name NAME [--scope S]... [--audience A]...
                                Create a service client; prints its secret once
  clients list                  List service clients
  clients disable ID            Disable a service client (its secret stops working)
  worker                        Deliver queued email (no HTTP); for TESSERA_WORKER=separate
  mail list [--to ADDRESS] [--limit N]
                                Development outbox (no SMTP_URL): the messages "sent", newest first
  jobs list                     Email queue: pending, oldest pending age, failing, dead letters
  jobs retry JOB_ID... | --all  Send dead-lettered messages through the queue again
  keys list                     List signing keys and their state
  keys rotate                   Publish a new signing key now; it signs after one JWKS cache period
  keys revoke KID               Emergency: remove a key from the JWKS and from signing at once
  audit verify                  Check the audit hash chain; prints its head; exit 1 when tampering is found
  users create --email E [--admin] [--password-stdin]
                                Create an active, verified account (--admin: the admin role);
                                without --password-stdin a password is generated and printed once
  help                          Show this help

Configuration comes from environment variables: see docs/configuration.md.`

class UsageError extends Error {}

/** Opens the configured database (starting the embedded one if need be), runs `fn`, closes everything. */
async function withDatabase<T>(fn: (ctx: { db: Pool; config: Config; logger: Logger }) => Promise<T>): Promise<T> {
  const initial = loadConfigOrExit(process.env)
  // Logs go to stderr: stdout carries the command's JSON output, so it can be piped.
  const logger = createLogger(initial.logLevel === 'info' ? 'warn' : initial.logLevel, process.stderr)
  const { config, embedded } = await openDatabase(initial, logger)
  const db = createPool(config.database, logger, 'tessera-cli')
  // Commands that change clients, keys or users write chained audit events (without the key they refuse to).
  if (config.keyEncryptionKey !== undefined) configureAudit({ keyEncryptionKey: config.keyEncryptionKey, log: logger })
  try {
    return await fn({ db, config, logger })
  } finally {
    await db.end()
    await embedded?.stop()
  }
}

async function clientsCommand(args: string[]): Promise<void> {
  const { positionals, values } = parseArgs({
    args,
    allowPositionals: true,
    options: { id: { type: 'string' }, name: { type: 'string' }, scope: { type: 'string', multiple: true }, audience: { type: 'string', multiple: true }, json: { type: 'boolean' } },
  })
  const action = positionals[0]
  await withDatabase(async ({ db }) => {
    const clients = createClientsService({ db, clock: systemClock })
    if (action === 'create') {
      if (values.id === undefined || values.name === undefined) throw new UsageError('clients create needs --id and --name')
      const { client, clientSecret } = await clients.createClient({ clientId: values.id, name: values.name, scopes: values.scope ?? [], audiences: values.audience ?? [] }, 'cli')
      console.log(JSON.stringify({ client_id: client.clientId, client_secret: clientSecret, name: client.name, scopes: client.scopes, audiences: client.audiences }, null, 2))
      console.error('The secret is shown once and stored only as a hash: keep it in your secret store now.')
    } else if (action === 'list') {
      console.log(JSON.stringify((await clients.listClients()).map((c) => ({ client_id: c.clientId, name: c.name, scopes: c.scopes, audiences: c.audiences, created_at: c.createdAt, disabled: c.disabled })), null, 2))
    } else if (action === 'disable') {
      const id = positionals[1]
      if (id === undefined) throw new UsageError('clients disable needs a client id')
      if (!(await clients.disableClient(id, 'cli'))) throw new UsageError(`no enabled client ${id}`)
      console.log(`disabled ${id}`)
    } else {
      throw new UsageError(`unknown clients action "${action ?? ''}"`)
    }
  })
}

/** Tells running instances (through Redis, when configured) to re-read the keys now. */
async function announceKeysChanged(config: Config): Promise<void> {
  if (config.redis.url === undefined) return
  const redis = new Redis(config.redis.url, { maxRetriesPerRequest: 1, connectTimeout: 2000 })
  redis.on('error', () => undefined)
  try {
    await redis.publish(KEYS_CHANNEL, 'cli')
  } catch {
    console.error('Redis did not answer: instances will pick the change up on their next reload.')
  } finally {
    redis.disconnect()
  }
}

async function keysCommand(args: string[]): Promise<void> {
  const { positionals } = parseArgs({ args, allowPositionals: true, options: {} })
  const action = positionals[0]
  await withDatabase(async ({ db, config }) => {
    // No reload timer or schedule here: a one-shot command.
    const keys = createKeyStore({ db, config, clock: systemClock, schedule: { ...config.keys, rotationDays: 0, reloadIntervalMs: 0 } })
    if (action === 'list') {
      console.log(JSON.stringify(await keys.list(), null, 2))
    } else if (action === 'rotate') {
      await keys.init()
      const { kid, activatesAt } = await keys.rotate()
      await announceKeysChanged(config)
      console.log(JSON.stringify({ kid, published: true, signs_from: activatesAt }, null, 2))
    } else if (action === 'revoke') {
      const kid = positionals[1]
      if (kid === undefined) throw new UsageError('keys revoke needs a kid')
      const result = await keys.revoke(kid)
      if (result === undefined) throw new UsageError(`no published key ${kid}`)
      await announceKeysChanged(config)
      console.log(JSON.stringify({ revoked: kid, replacement: result.replacement ?? null }, null, 2))
      console.error(`Instances stop using ${kid} within TESSERA_KEY_RELOAD_SECONDS (${config.keys.reloadIntervalMs / 1000} s); resource servers when their JWKS cache expires.`)
    } else {
      throw new UsageError(`unknown keys action "${action ?? ''}"`)
    }
  })
}

/**
 * `audit verify`: recomputes the audit hash chain. Prints the report as JSON on stdout (keep its `head`
 * somewhere outside the database: a later run whose chain no longer contains it shows a cut tail) and
 * exits 1 when it found a problem, listing the problem rows on stderr too.
 */
async function auditCommand(args: string[]): Promise<void> {
  const { positionals } = parseArgs({ args, allowPositionals: true, options: {} })
  if (positionals[0] !== 'verify') throw new UsageError(`unknown audit action "${positionals[0] ?? ''}"`)
  await withDatabase(async ({ db, config }) => {
    if (config.keyEncryptionKey === undefined) throw new UsageError('audit verify needs TESSERA_KEY_ENCRYPTION_KEY (the chain key is derived from it)')
    const started = performance.now()
    const report = await verifyChain(db, auditChainKey(config.keyEncryptionKey))
    const seconds = (performance.now() - started) / 1000
    console.log(JSON.stringify({ ...report, seconds: Math.round(seconds * 1000) / 1000 }, null, 2))
    if (!report.ok) {
      for (const p of report.problems) console.error(`audit event ${p.id}: ${p.problem}`)
      if (report.problemsOmitted > 0) console.error(`… and ${report.problemsOmitted} more`)
      console.error('tessera: the audit chain does not verify')
      process.exitCode = 1
    }
  })
}

/**
 * `users create`: the way to bootstrap the first administrator (the admin API cannot create one). The
 * password comes from stdin (`--password-stdin`, one trailing newline dropped: `printf`/`echo` both
 * work) so that it never appears in the process list or shell history; otherwise one is generated and
 * printed once.
 */
async function usersCommand(args: string[]): Promise<void> {
  const { positionals, values } = parseArgs({ args, allowPositionals: true, options: { email: { type: 'string' }, admin: { type: 'boolean' }, 'password-stdin': { type: 'boolean' } } })
  if (positionals[0] !== 'create') throw new UsageError(`unknown users action "${positionals[0] ?? ''}"`)
  if (values.email === undefined) throw new UsageError('users create needs --email')
  let password: string | undefined
  if (values['password-stdin'] === true) {
    if (process.stdin.isTTY) throw new UsageError('--password-stdin reads a password piped to stdin, not typed at a terminal')
    const chunks: Buffer[] = []
    let size = 0
    for await (const chunk of process.stdin) {
      size += (chunk as Buffer).length
      // The policy refuses far less (TESSERA_PASSWORD_MAX_BYTES); this only bounds the memory.
      if (size > 65_536) throw new UsageError('the password on stdin is too long')
      chunks.push(chunk as Buffer)
    }
    password = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '')
  }
  await withDatabase(async ({ db, config }) => {
    const created = await createOperatorAccount(
      { db, clock: systemClock, hasher: createPasswordHasher(config.passwords), policy: config.passwords },
      { email: values.email ?? '', password, roles: values.admin === true ? [ADMIN_ROLE] : [] },
      'cli',
    )
    console.log(JSON.stringify({
      id: created.id, email: created.email, roles: created.roles, status: 'active', email_verified: true,
      ...(created.generatedPassword === undefined ? {} : { password: created.generatedPassword }),
    }, null, 2))
    if (created.generatedPassword !== undefined) console.error('The password is shown once and stored only as a hash: hand it over now, and have it changed.')
  })
}

async function mailCommand(args: string[]): Promise<void> {
  const { positionals, values } = parseArgs({ args, allowPositionals: true, options: { to: { type: 'string' }, limit: { type: 'string' } } })
  if (positionals[0] !== 'list') throw new UsageError(`unknown mail action "${positionals[0] ?? ''}"`)
  const limit = values.limit === undefined ? 20 : Number(values.limit)
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new UsageError('--limit must be an integer from 1 to 1000')
  await withDatabase(async ({ db, config }) => {
    if (config.email.transport !== 'outbox') console.error('SMTP_URL is set: messages go to the mail server; this outbox only holds what was kept before.')
    const rows = await emailRepository.listOutbox(db, limit, values.to?.trim().toLowerCase())
    console.error('DEVELOPMENT MAIL OUTBOX: not for production. Set SMTP_URL to send real email.')
    console.log(JSON.stringify(rows.map((r) => ({
      message_id: r.message_id,
      to: r.recipient,
      subject: r.subject,
      created_at: r.created_at,
      links: r.text_body.match(/https?:\/\/\S+/g) ?? [],
      text: r.text_body,
    })), null, 2))
  })
}

async function jobsCommand(args: string[]): Promise<void> {
  const { positionals, values } = parseArgs({ args, allowPositionals: true, options: { all: { type: 'boolean' } } })
  const action = positionals[0]
  await withDatabase(async ({ db, config, logger }) => {
    const queue = createJobQueue({ pool: db, logger, worker: config.worker })
    await queue.start({ supervise: false })
    try {
      const dead = await queue.listDead<EmailJob>(QUEUES.email, 1000)
      if (action === 'list') {
        const stats = await emailRepository.deliveryStats(db, new Date())
        const details = await Promise.all(dead.map(async (d) => {
          const m = await emailRepository.findMessage(db, d.data.messageId, new Date())
          return { job_id: d.id, message_id: d.data.messageId, kind: m?.kind ?? null, attempts: m?.attempts ?? null, failed_at: d.failedAt, error: d.error ?? m?.last_error ?? null }
        }))
        console.log(JSON.stringify({
          queue: QUEUES.email,
          pending: stats.pending,
          oldest_pending_seconds: Math.round(stats.oldestPendingSeconds),
          failing: stats.failing,
          dead: details,
        }, null, 2))
      } else if (action === 'retry') {
        const ids = values.all === true ? dead.map((d) => d.id) : positionals.slice(1)
        if (ids.length === 0 && values.all !== true) throw new UsageError('jobs retry needs job ids (from `tessera jobs list`) or --all')
        const unknown = ids.filter((id) => !dead.some((d) => d.id === id))
        if (unknown.length > 0) throw new UsageError(`not in the dead-letter queue: ${unknown.join(', ')}`)
        // One job at a time, and the message is marked alive only once its job really moved: a job
        // deleted meanwhile (retention) must not leave a message counted as pending with no job.
        let moved = 0
        for (const d of dead.filter((x) => ids.includes(x.id))) {
          if ((await queue.retryDead(QUEUES.email, [d.id])) === 1) {
            await emailRepository.clearDead(db, d.data.messageId)
            moved++
          }
        }
        console.log(JSON.stringify({ retried: moved, not_found: ids.length - moved }, null, 2))
      } else {
        throw new UsageError(`unknown jobs action "${action ?? ''}"`)
      }
    } finally {
      await queue.stop({ graceful: false, timeoutMs: 1000 })
    }
  })
}

async function main(argv: string[]): Promise<void> {
  const command = argv[0] ?? 'serve'
  if (command === 'help' || command === '--help' || command === '-h') {
    console.log(usage)
    return
  }
  switch (command) {
    case 'serve':
      await serve(process.env)
      return
    case 'migrate': {
      const initial = loadConfigOrExit(process.env)
      const logger = createLogger(initial.logLevel)
      const { config, embedded } = await openDatabase(initial, logger)
      try {
        await runMigrations(config, logger)
      } finally {
        await embedded?.stop()
      }
      return
    }
    case 'worker':
      await work(process.env)
      return
    case 'mail':
      await mailCommand(argv.slice(1))
      return
    case 'jobs':
      await jobsCommand(argv.slice(1))
      return
    case 'clients':
      await clientsCommand(argv.slice(1))
      return
    case 'keys':
      await keysCommand(argv.slice(1))
      return
    case 'audit': await auditCommand(argv.slice(1)); return
    case 'users': await usersCommand(argv.slice(1)); return
    default:
      throw new UsageError(`unknown command "${command}"`)
  }
}

try {
  await main(process.argv.slice(2))
} catch (err) {
  if (err instanceof UsageError || (err instanceof Error && 'code' in err && String(err.code).startsWith('ERR_PARSE_ARGS'))) {
    console.error(`tessera: ${err.message}\n\n${usage}`)
    process.exitCode = 64
  } else if (err instanceof Error && err.name === 'AppError') {
    console.error(`tessera: ${err.message}`)
    process.exitCode = 65
  } else {
    throw err
  }
}
