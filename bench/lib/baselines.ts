/**
 * In-process baselines: the raw cost of the work that bounds a Tessera operation, measured in the same
 * run on the same machine.
 *
 * - argon2id capacity: hashes/second with `@node-rs/argon2` at the given parameters, with as many hashes
 *   in flight as cores (more adds no capacity: PERFORMANCE.md).
 * - raw refresh-shaped rotation: one UPDATE + one INSERT in one statement (a CTE), through `pg` with a
 *   named prepared statement, from several concurrent clients, on a scratch table shaped like
 *   `refresh_tokens` (same keys and indexes) in the bench database.
 */
import { randomBytes, randomUUID } from 'node:crypto'
import { hash } from '@node-rs/argon2'
import pg from 'pg'
import { createSamples, type Segment } from './stats.ts'

export interface Argon2Params {
  readonly memoryCost: number
  readonly timeCost: number
  readonly parallelism: number
}

const ARGON2ID = 2 // Algorithm.Argon2id (a const enum, which erasable TypeScript cannot import)

let stopRequested = false
export function stopBaselines(): void {
  stopRequested = true
}

/** Runs `op` from `concurrency` loops for `durationS` seconds; an operation counts if it started in time. */
async function loop(concurrency: number, durationS: number, op: (worker: number) => Promise<void>): Promise<Segment> {
  if (stopRequested) throw new Error('interrupted')
  const start = performance.now()
  const end = start + durationS * 1000
  const samples = createSamples()
  let ops = 0
  let last = start
  await Promise.all(Array.from({ length: concurrency }, async (_, worker) => {
    for (;;) {
      const t0 = performance.now()
      if (t0 >= end || stopRequested) return
      await op(worker)
      const t1 = performance.now()
      ops++
      samples.add(t1 - t0)
      if (t1 > last) last = t1
    }
  }))
  return { ok: ops, errors: 0, timeouts: 0, elapsedS: (last - start) / 1000, latencies: samples.values(), statusCounts: {} }
}

export interface Side {
  readonly description: string
  /** The server process doing the work, when it is not the bench process itself. */
  readonly serverPid?: number | undefined
  measure(durationS: number): Promise<Segment>
  close?(): Promise<void>
}

export function argon2Side(params: Argon2Params, concurrency: number): Side {
  const options = { ...params, algorithm: ARGON2ID, outputLen: 32 }
  const password = 'correct horse battery staple'
  return {
    description: `@node-rs/argon2 hash(), argon2id m=${params.memoryCost} KiB t=${params.timeCost} p=${params.parallelism}, ${concurrency} in flight, in the bench process`,
    measure: (durationS) => loop(concurrency, durationS, async () => { await hash(password, options) }),
  }
}

const ROTATE = {
  name: 'bench_rotate',
  text: `WITH used AS (
           UPDATE bench_refresh_tokens SET used_at = $3
           WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $3
           RETURNING session_id
         )
         INSERT INTO bench_refresh_tokens (token_hash, session_id, parent_hash, created_at, expires_at)
         SELECT $2, used.session_id, $1, $3, $3 + interval '14 days' FROM used
         RETURNING session_id`,
}

export async function pgRotationSide(databaseUrl: string, clients: number): Promise<Side> {
  const setup = new pg.Client({ connectionString: databaseUrl, application_name: 'tessera-bench' })
  await setup.connect()
  try {
    await setup.query(`CREATE TABLE IF NOT EXISTS bench_refresh_tokens (
      token_hash  bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
      session_id  uuid NOT NULL,
      parent_hash bytea,
      created_at  timestamptz NOT NULL,
      used_at     timestamptz,
      expires_at  timestamptz NOT NULL
    )`)
    await setup.query('CREATE INDEX IF NOT EXISTS bench_refresh_tokens_by_session ON bench_refresh_tokens (session_id)')
    await setup.query('CREATE UNIQUE INDEX IF NOT EXISTS bench_refresh_tokens_one_child ON bench_refresh_tokens (parent_hash) WHERE parent_hash IS NOT NULL')
  } finally {
    await setup.end()
  }
  const conns = await Promise.all(Array.from({ length: clients }, async () => {
    const c = new pg.Client({ connectionString: databaseUrl, application_name: 'tessera-bench' })
    await c.connect()
    return c
  }))
  // One chain of tokens per client, each with its own session id.
  const current: Buffer[] = []
  for (const c of conns) {
    const first = randomBytes(32)
    await c.query('INSERT INTO bench_refresh_tokens (token_hash, session_id, created_at, expires_at) VALUES ($1, $2, now(), now() + interval \'14 days\')', [first, randomUUID()])
    current.push(first)
  }
  return {
    description: `pg, UPDATE + INSERT in one statement (CTE), named prepared statement, ${clients} clients, in the bench process`,
    measure: (durationS) => loop(clients, durationS, async (worker) => {
      const c = conns[worker]
      const parent = current[worker]
      if (c === undefined || parent === undefined) throw new Error('no client')
      const child = randomBytes(32)
      const { rowCount } = await c.query({ ...ROTATE, values: [parent, child, new Date()] })
      if (rowCount !== 1) throw new Error(`raw rotation did not rotate (rowCount ${rowCount})`)
      current[worker] = child
    }),
    async close() {
      await Promise.all(conns.map((c) => c.end()))
    },
  }
}
