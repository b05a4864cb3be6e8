#!/usr/bin/env node
/**
 * The `tessera` command: `serve` (the default of `npm start`), `migrate`, and operator tasks that act
 * on the database directly (service clients, signing keys). Every command reads the same configuration.
 */
import { parseArgs } from 'node:util'
import { createClientsService } from './clients/clients.service.ts'
import { Redis } from 'ioredis'
import { createKeyStore } from './keys/keys.service.ts'
import { KEYS_CHANNEL } from './sessions/revocation.redis.ts'
import { systemClock } from './clock.ts'
import type { Config } from './config.ts'
import { createPool, type Pool } from './db/pool.ts'
import { createLogger, type Logger } from './logger.ts'
import { loadConfigOrExit, openDatabase, runMigrations, serve } from './main.ts'

const usage = `Usage: tessera <command> [options]

Commands:
  serve                         Run the HTTP API (applies migrations first unless TESSERA_MIGRATE_ON_START=false)
  migrate                       Apply pending database migrations and exit
  clients create --id ID --name NAME [--scope S]... [--audience A]...
                                Create a service client; prints its secret once
  clients list                  List service clients
  clients disable ID            Disable a service client (its secret stops working)
  keys list                     List signing keys and their state
  keys rotate                   Publish a new signing key now; it signs after one JWKS cache period
  keys revoke KID               Emergency: remove a key from the JWKS and from signing at once
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
    case 'clients':
      await clientsCommand(argv.slice(1))
      return
    case 'keys':
      await keysCommand(argv.slice(1))
      return
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
