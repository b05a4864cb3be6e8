/**
 * `npm test`: runs the whole suite against a real PostgreSQL.
 *
 * - TEST_DATABASE_URL set (CI): that server is used.
 * - Unset (a fresh machine): an embedded PostgreSQL is started in a temporary directory for the run.
 *
 * A template database is migrated once; every test file clones its own database from it in
 * milliseconds (CREATE DATABASE … TEMPLATE), so files run in parallel with no shared state.
 * Extra arguments are passed to `node --test` (e.g. `npm test -- test/unit/config.test.ts`).
 */
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import pg from 'pg'
import { migrate } from '../src/db/migrator.ts'
import { migrateQueueSchema } from '../src/jobs/jobs.queue.ts'
import { freePort } from './lib/free-port.ts'


function withDatabase(url: string, database: string): string {
  const u = new URL(url)
  u.pathname = `/${database}`
  return u.toString()
}

let adminUrl = process.env.TEST_DATABASE_URL
let stopEmbedded: (() => Promise<void>) | undefined
let embeddedDir: string | undefined

if (adminUrl === undefined || adminUrl === '') {
  embeddedDir = await mkdtemp(path.join(tmpdir(), 'tessera-test-pg-'))
  await chmod(embeddedDir, 0o755)
  const port = await freePort()
  console.log(`# TEST_DATABASE_URL is not set: starting an embedded PostgreSQL on 127.0.0.1:${port} for this run`)
  const { startEmbeddedPostgres } = await import('../src/db/embedded.ts')
  const quiet = { info: () => undefined, warn: () => undefined }
  const embedded = await startEmbeddedPostgres({ dataDir: embeddedDir, port, logger: quiet })
  adminUrl = embedded.url
  stopEmbedded = () => embedded.stop()
}

const runId = randomBytes(4).toString('hex')
const template = `tessera_test_tpl_${runId}`
// Per-file databases are named after this run, so cleaning up never touches another run's databases.
const filePrefix = `tessera_t_${runId}_`
const admin = new pg.Client({ connectionString: adminUrl })
await admin.connect()
await admin.query(`CREATE DATABASE ${template}`)
const templatePool = new pg.Pool({ connectionString: withDatabase(adminUrl, template), max: 2 })
templatePool.on('error', () => undefined)
await migrate(templatePool)
await migrateQueueSchema(templatePool)
await templatePool.end()

const args = process.argv.slice(2)
const files = args.length > 0 ? args : ['test/**/*.test.ts']
const child = spawn(process.execPath, ['--test', '--test-concurrency=3', '--test-timeout=120000', ...files], {
  stdio: 'inherit',
  env: { ...process.env, TEST_DATABASE_URL: adminUrl, TESSERA_TEST_TEMPLATE: template, TESSERA_TEST_DB_PREFIX: filePrefix },
})
const code = await new Promise<number>((resolve) => { child.on('exit', (c, signal) => { resolve(c ?? (signal ? 1 : 0)) }) })

// Leftover per-file databases (a crashed file) and the template go too.
const { rows } = await admin.query<{ datname: string }>('SELECT datname FROM pg_database WHERE starts_with(datname, $1) OR datname = $2', [filePrefix, template])
for (const { datname } of rows) await admin.query(`DROP DATABASE IF EXISTS ${datname} WITH (FORCE)`).catch(() => undefined)
await admin.end()
if (stopEmbedded) await stopEmbedded()
if (embeddedDir) await rm(embeddedDir, { recursive: true, force: true })
process.exit(code)
