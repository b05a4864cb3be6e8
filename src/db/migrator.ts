/**
 * Forward-only plain-SQL migrations.
 *
 * Files in `migrations/` named `NNNN_description.sql` are applied in order, each in its own transaction,
 * and recorded with a SHA-256 checksum. An applied file that was edited afterwards stops the migrator:
 * history is never rewritten. A session-level advisory lock serialises concurrent migrators, so several
 * instances starting together apply each migration exactly once.
 */
import { createHash } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Pool, Queryable } from './pool.ts'

export const migrationsDir = fileURLToPath(new URL('../../migrations/', import.meta.url))

// Arbitrary constant shared by every Tessera instance: pg_advisory_lock key of the migrator.
const MIGRATION_LOCK_KEY = 7_365_211_842

export interface Migration {
  readonly version: number
  readonly name: string
  readonly sql: string
  readonly checksum: string
}

export async function readMigrations(dir = migrationsDir): Promise<Migration[]> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.sql')).sort()
  const migrations: Migration[] = []
  for (const file of files) {
    const match = /^(\d{4})_([a-z0-9_]+)\.sql$/.exec(file)
    if (!match) throw new Error(`migration file name must look like 0001_name.sql: ${file}`)
    const sql = await readFile(path.join(dir, file), 'utf8')
    migrations.push({ version: Number(match[1]), name: match[2] ?? '', sql, checksum: createHash('sha256').update(sql).digest('hex') })
  }
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) throw new Error(`migration versions must be contiguous from 0001; found ${m.version} at position ${i + 1}`)
  })
  return migrations
}

const createTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
  version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`

/** Applies pending migrations; returns the versions applied by this call. */
export async function migrate(pool: Pool, migrations?: readonly Migration[]): Promise<number[]> {
  const all = migrations ?? (await readMigrations())
  const client = await pool.connect()
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY])
    try {
      await client.query(createTable)
      const { rows } = await client.query<{ version: number; checksum: string }>('SELECT version, checksum FROM schema_migrations ORDER BY version')
      const applied = new Map(rows.map((r) => [r.version, r.checksum]))
      for (const [version, checksum] of applied) {
        const file = all.find((m) => m.version === version)
        if (!file) throw new Error(`database has migration ${version}, which this build does not know: refusing to run an older build against a newer schema`)
        if (file.checksum !== checksum) throw new Error(`migration ${version}_${file.name} was edited after it was applied; migrations are forward-only`)
      }
      const done: number[] = []
      for (const m of all) {
        if (applied.has(m.version)) continue
        await client.query('BEGIN')
        try {
          await client.query(m.sql)
          await client.query('INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)', [m.version, m.name, m.checksum])
          await client.query('COMMIT')
        } catch (err) {
          await client.query('ROLLBACK')
          throw new Error(`migration ${m.version}_${m.name} failed: ${(err as Error).message}`, { cause: err })
        }
        done.push(m.version)
      }
      return done
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY])
    }
  } finally {
    client.release()
  }
}

/** The highest applied version, or 0 when the database has never been migrated. */
export async function appliedVersion(db: Queryable): Promise<number> {
  // Checked first rather than caught: a failed query makes pg discard its pooled connection.
  const { rows: [exists] } = await db.query<{ t: string | null }>("SELECT to_regclass('schema_migrations')::text AS t")
  if (exists?.t == null) return 0
  const { rows } = await db.query<{ v: number | null }>('SELECT max(version) AS v FROM schema_migrations')
  return rows[0]?.v ?? 0
}
