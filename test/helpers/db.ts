/**
 * A fresh, migrated database per test file, cloned from the template that `npm test` migrated once.
 */
import { randomBytes } from 'node:crypto'
import pg from 'pg'

export interface TestDatabase {
  readonly url: string
  readonly name: string
  drop(): Promise<void>
}

function requireEnv(name: string): string {
  const value = process.env[name]
  if (value === undefined || value === '') {
    throw new Error(`${name} is not set: run the suite with \`npm test\` (it provisions PostgreSQL), or pass TEST_DATABASE_URL`)
  }
  return value
}

export function databaseUrl(adminUrl: string, database: string): string {
  const u = new URL(adminUrl)
  u.pathname = `/${database}`
  return u.toString()
}

/** @param migrated false for an empty database (migrator tests). */
export async function createTestDatabase(options: { migrated?: boolean } = {}): Promise<TestDatabase> {
  const adminUrl = requireEnv('TEST_DATABASE_URL')
  const template = requireEnv('TESSERA_TEST_TEMPLATE')
  const name = `${process.env.TESSERA_TEST_DB_PREFIX ?? 'tessera_t_'}${randomBytes(6).toString('hex')}`
  const admin = new pg.Client({ connectionString: adminUrl })
  await admin.connect()
  try {
    // CREATE DATABASE … TEMPLATE fails while another session is connected to the template; retry briefly.
    for (let attempt = 0; ; attempt++) {
      try {
        await admin.query(options.migrated === false ? `CREATE DATABASE ${name}` : `CREATE DATABASE ${name} TEMPLATE ${template}`)
        break
      } catch (err) {
        if (attempt >= 20 || (err as { code?: string }).code !== '55006') throw err
        await new Promise((r) => setTimeout(r, 50 + attempt * 25))
      }
    }
  } finally {
    await admin.end()
  }
  return {
    url: databaseUrl(adminUrl, name),
    name,
    async drop() {
      const c = new pg.Client({ connectionString: adminUrl })
      await c.connect()
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).finally(() => c.end())
    },
  }
}

/**
 * A plain pool for tests that inspect rows. Its 'error' listener matters: when a database is dropped
 * (WITH FORCE) just after pool.end() resolved, a closing connection may still receive the server's
 * termination notice, and a pool without a listener would turn it into an uncaught exception.
 */
export function testPool(url: string, max = 2): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max })
  pool.on('error', () => undefined)
  return pool
}
