/**
 * The bench's throwaway database: created on the server given by BENCH_DATABASE_URL, dropped at the end.
 */
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { postmasterOf } from './machine.ts'

export interface BenchDatabase {
  readonly name: string
  readonly url: string
  readonly serverVersion: string
  /** The server's postmaster pid when it runs on this machine (for CPU accounting). */
  readonly postmasterPid: number | undefined
  drop(): Promise<void>
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url)
  u.pathname = `/${database}`
  return u.toString()
}

export async function createBenchDatabase(adminUrl: string): Promise<BenchDatabase> {
  const name = `tessera_bench_${randomBytes(5).toString('hex')}`
  const admin = new pg.Client({ connectionString: adminUrl, application_name: 'tessera-bench' })
  await admin.connect()
  let serverVersion: string
  let postmasterPid: number | undefined
  try {
    serverVersion = (await admin.query<{ server_version: string }>('SHOW server_version')).rows[0]?.server_version ?? 'unknown'
    const backend = (await admin.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid
    postmasterPid = backend === undefined ? undefined : await postmasterOf(backend)
    await admin.query(`CREATE DATABASE ${name}`)
  } finally {
    await admin.end()
  }
  let dropped = false
  return {
    name,
    url: withDatabase(adminUrl, name),
    serverVersion,
    postmasterPid,
    async drop() {
      if (dropped) return
      const c = new pg.Client({ connectionString: adminUrl, application_name: 'tessera-bench' })
      await c.connect()
      try {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
        dropped = true
      } finally {
        await c.end()
      }
    },
  }
}
