import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type pg from 'pg'
import { appliedVersion, migrate, readMigrations, type Migration } from '../../src/db/migrator.ts'
import { createTestDatabase, type TestDatabase, testPool } from '../helpers/db.ts'

describe('migrator', () => {
  let db: TestDatabase
  let pools: pg.Pool[] = []
  const pool = () => {
    const p = testPool(db.url, 3)
    pools.push(p)
    return p
  }

  before(async () => { db = await createTestDatabase({ migrated: false }) })
  after(async () => {
    await Promise.all(pools.map((p) => p.end()))
    pools = []
    await db.drop()
  })

  it('applies every migration exactly once when several instances start together', async () => {
    const all = await readMigrations()
    assert.equal(await appliedVersion(pool()), 0)
    const results = await Promise.all([pool(), pool(), pool(), pool()].map((p) => migrate(p)))
    const applied = results.flat().sort()
    assert.deepEqual(applied, all.map((m) => m.version), 'each version applied by exactly one instance')
    const { rows } = await pool().query<{ version: number; n: number }>('SELECT version, count(*)::int AS n FROM schema_migrations GROUP BY version')
    assert.ok(rows.every((r) => r.n === 1))
    assert.equal(await appliedVersion(pool()), all.length)
    assert.deepEqual(await migrate(pool()), [], 'a second run is a no-op')
  })

  it('refuses to run when an applied migration was edited', async () => {
    const all = await readMigrations()
    const edited: Migration[] = all.map((m, i) => (i === 0 ? { ...m, sql: m.sql + '\n-- edited', checksum: 'f'.repeat(64) } : m))
    await assert.rejects(migrate(pool(), edited), /edited after it was applied/)
  })

  it('refuses to run an older build against a newer schema', async () => {
    const all = await readMigrations()
    await assert.rejects(migrate(pool(), all.slice(0, -1)), /does not know/)
  })

  it('rolls back a failing migration whole and records nothing', async () => {
    const all = await readMigrations()
    const broken: Migration = { version: all.length + 1, name: 'broken', sql: 'CREATE TABLE half_done (id int); SELECT * FROM no_such_table;', checksum: 'b'.repeat(64) }
    await assert.rejects(migrate(pool(), [...all, broken]), /broken failed/)
    const { rows } = await pool().query("SELECT to_regclass('half_done') AS t")
    assert.equal((rows[0] as { t: unknown }).t, null)
    assert.equal(await appliedVersion(pool()), all.length)
  })
})
