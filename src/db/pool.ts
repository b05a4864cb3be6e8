import pg from 'pg'
import type { Config } from '../config.ts'
import { isDatabaseUnavailable } from './errors.ts'

/** Anything that runs a query: the pool or a client inside a transaction. Repositories take one first. */
export type Queryable = Pick<pg.Pool | pg.PoolClient, 'query'>
export type Pool = pg.Pool

// Return int8/bigint columns as strings would surprise callers of counts; timestamps stay Date.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v))

export interface PoolLogger {
  warn(obj: object, msg: string): void
}

/** Creates the connection pool. `statement_timeout` bounds every query server-side. */
export function createPool(database: Config['database'], logger: PoolLogger, applicationName = 'tessera'): Pool {
  if (database.url === undefined) throw new Error('createPool: database.url is not set')
  const pool = new pg.Pool({
    connectionString: database.url,
    max: database.poolMax,
    connectionTimeoutMillis: database.connectTimeoutMs,
    idleTimeoutMillis: 30_000,
    statement_timeout: database.statementTimeoutMs,
    // A frozen server never answers, so statement_timeout never fires: bound the wait client-side too.
    query_timeout: database.statementTimeoutMs + 1000,
    application_name: applicationName,
  })
  // An idle client losing its server must not crash the process; the next checkout reconnects.
  pool.on('error', (err) => logger.warn({ err: { message: err.message } }, 'idle database client error'))
  return pool
}

/**
 * Runs `fn` inside a transaction: COMMIT when it resolves, ROLLBACK when it throws.
 * Either everything `fn` wrote is kept, or nothing is.
 */
export async function withTransaction<T>(pool: Pool, fn: (tx: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect()
  // A checked-out client whose connection drops emits 'error'; without a listener that would crash the
  // process. The failure reaches the caller through the failing query instead.
  const ignore = () => undefined
  client.on('error', ignore)
  let broken: Error | undefined
  try {
    await client.query('BEGIN')
    const result = await fn(client)
    await client.query('COMMIT')
    return result
  } catch (err) {
    if (isDatabaseUnavailable(err)) broken = err as Error
    else await client.query('ROLLBACK').catch((e: unknown) => { broken = e as Error })
    throw err
  } finally {
    client.off('error', ignore)
    // A client that failed at the connection level is destroyed, not returned to the pool.
    client.release(broken)
  }
}
