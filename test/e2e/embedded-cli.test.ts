/**
 * In embedded mode, operator commands run while the server runs: they use the server's embedded
 * PostgreSQL instead of starting a second one on the same data directory, and never stop it.
 */
import assert from 'node:assert/strict'
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { freePort, runCli, startServer, type ServerProcess } from '../helpers/process.ts'

describe('embedded mode: CLI next to a running server', () => {
  let dataDir: string
  let server: ServerProcess
  let env: Record<string, string>

  before(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), 'tessera-embedded-cli-'))
    await chmod(dataDir, 0o755)
    env = { TESSERA_DATA_DIR: dataDir, TESSERA_EMBEDDED_PG_PORT: String(await freePort()), PORT: '0', LOG_LEVEL: 'info', TESSERA_ARGON2_MEMORY_KIB: '1024', TESSERA_ARGON2_TIME_COST: '1' }
    server = await startServer(env, { timeoutMs: 90_000 })
  })
  after(async () => {
    await server.stop()
    await rm(dataDir, { recursive: true, force: true })
  })

  it('creates a client through the running embedded database, prints pure JSON on stdout, and leaves the server up', async () => {
    const res = await runCli(['clients', 'create', '--id', 'embedded-demo', '--name', 'Demo'], env)
    assert.equal(res.code, 0, res.stderr)
    const client = JSON.parse(res.stdout) as { client_id: string }
    assert.equal(client.client_id, 'embedded-demo')
    assert.equal((await fetch(`${server.baseUrl}/readyz`)).status, 200, 'the server still has its database')
    const listed = JSON.parse((await runCli(['clients', 'list'], env)).stdout) as Array<{ client_id: string }>
    assert.deepEqual(listed.map((c) => c.client_id), ['embedded-demo'])
  })
})
