/**
 * The bare baseline server of the bench, started by bench/run.ts as a child process (like Tessera):
 * plain Fastify, no logger, no hooks, no schemas.
 *
 * - GET /constant      a small constant JSON (the bench passes Tessera's own JWKS, so the bytes match)
 * - GET /account/:id   one primary-key SELECT through pg (named prepared statement, pool of 10 like
 *                      Tessera's default), the row as JSON
 * - GET /readyz        200 once listening
 *
 * Environment: BASELINE_PORT, BASELINE_DATABASE_URL, BASELINE_CONSTANT_JSON.
 */
import Fastify from 'fastify'
import pg from 'pg'

const port = Number(process.env.BASELINE_PORT ?? '0')
const databaseUrl = process.env.BASELINE_DATABASE_URL
if (databaseUrl === undefined) throw new Error('BASELINE_DATABASE_URL is not set')
const constant: unknown = JSON.parse(process.env.BASELINE_CONSTANT_JSON ?? '{"ok":true}')

const pool = new pg.Pool({ connectionString: databaseUrl, max: 10, application_name: 'tessera-bench-baseline' })
const app = Fastify({ logger: false })

app.get('/readyz', async () => ({ status: 'ok' }))
app.get('/constant', async () => constant)
app.get<{ Params: { id: string } }>('/account/:id', async (request, reply) => {
  const { rows } = await pool.query({ name: 'account_by_id', text: 'SELECT * FROM accounts WHERE id = $1', values: [request.params.id] })
  if (rows[0] === undefined) return reply.code(404).send({ error: 'not found' })
  return rows[0] as unknown
})

await app.listen({ host: '127.0.0.1', port })

let closing = false
async function close(): Promise<void> {
  if (closing) return
  closing = true
  await app.close()
  await pool.end()
  process.exit(0)
}
process.once('SIGTERM', () => { void close() })
process.once('SIGINT', () => { void close() })
// The bench holds our stdin open: when it goes away (even killed), so do we.
process.stdin.on('end', () => { void close() })
process.stdin.resume()
