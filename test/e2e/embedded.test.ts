/**
 * End-to-end: the `npm start` path. No DATABASE_URL: `tessera serve` starts its own PostgreSQL in the
 * data directory, generates a key-encryption key there, and keeps both across restarts.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { chmod, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose'
import { CHEAP_HASHING, RELAXED_LIMITS, uniqueEmail } from '../helpers/app.ts'
import { freePort, runCli, startServer, waitFor, type ServerProcess } from '../helpers/process.ts'

const PUBLIC_URL = 'http://tessera.embedded.e2e'
const START_TIMEOUT_MS = 120_000

interface Tokens { access_token: string; refresh_token: string }

async function exists(file: string): Promise<boolean> {
  return stat(file).then(() => true, () => false)
}

/** Pids of running processes whose command line names `dir` (the postgres server and its children). */
async function processesUsing(dir: string): Promise<number[]> {
  const pids: number[] = []
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')
    if (cmdline.split('\0').includes(dir)) pids.push(Number(entry))
  }
  return pids
}

async function postJson(base: string, route: string, body: unknown): Promise<Response> {
  return fetch(new URL(route, base), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
}

async function jwksKids(base: string): Promise<string[]> {
  const res = await fetch(new URL('/.well-known/jwks.json', base))
  assert.equal(res.status, 200)
  return ((await res.json()) as { keys: Array<{ kid: string }> }).keys.map((k) => k.kid).sort()
}

describe('embedded mode (npm start without DATABASE_URL)', () => {
  let dataDir: string
  let pgDir: string
  let env: Record<string, string>
  let server: ServerProcess | undefined
  const email = uniqueEmail('embedded')
  const password = `embedded horse battery ${randomBytes(6).toString('hex')}`
  let firstKids: string[] = []
  let firstSigningKid: string | undefined

  before(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), 'tessera-e2e-embedded-'))
    // PostgreSQL runs as the `postgres` user when we are root: it must be able to traverse the directory.
    await chmod(dataDir, 0o755)
    pgDir = path.join(dataDir, 'pg')
    env = {
      TESSERA_DATA_DIR: dataDir,
      TESSERA_EMBEDDED_PG_PORT: String(await freePort()),
      PORT: '0',
      METRICS_PORT: '0',
      TESSERA_PUBLIC_URL: PUBLIC_URL,
      LOG_LEVEL: 'info',
      ...CHEAP_HASHING,
      ...RELAXED_LIMITS,
    }
  })

  after(async () => {
    await server?.kill(30_000)
    // If the server could not stop its PostgreSQL (a failed test), stop it here: it is ours.
    const pidFile = await readFile(path.join(pgDir, 'postmaster.pid'), 'utf8').catch(() => undefined)
    const pid = Number(pidFile?.split('\n')[0])
    if (Number.isInteger(pid) && pid > 0) {
      try { process.kill(pid, 'SIGINT') } catch { /* already gone */ }
      for (let i = 0; i < 100 && (await exists(path.join(pgDir, 'postmaster.pid'))); i++) await new Promise((r) => setTimeout(r, 100))
    }
    await rm(dataDir, { recursive: true, force: true })
  })

  it('starts its own PostgreSQL, warns where the data lives, serves, and stops it on SIGTERM', async () => {
    server = await startServer(env, { timeoutMs: START_TIMEOUT_MS })
    const base = server.baseUrl

    const warning = server.logLines().find((l) => l.level === 'warn' && typeof l.msg === 'string' && l.msg.includes('EMBEDDED MODE'))
    assert.ok(warning, `an embedded-mode warning is logged:\n${server.stdout()}`)
    assert.match(String(warning.msg), /single node/i)
    assert.ok(String(warning.dataDir).startsWith(dataDir), `the warning names the data directory (${String(warning.dataDir)})`)
    assert.ok(server.logLines().some((l) => l.level === 'warn' && /generated a key-encryption key/.test(String(l.msg))), 'the first start says it generated a key-encryption key')

    assert.equal((await postJson(base, '/v1/accounts', { email, password })).status, 202)
    const unverified = await postJson(base, '/v1/auth/login', { email, password })
    assert.equal(unverified.status, 403)
    assert.equal(((await unverified.json()) as { code: string }).code, 'email_not_verified')

    // The in-process worker puts the message in the development outbox and logs it, loudly labelled.
    await waitFor('the verification message', () => server?.logLines().some((l) => String(l.msg).includes('DEVELOPMENT MAIL OUTBOX')) ?? false, 30_000)
    const listed = await runCli(['mail', 'list', '--to', email], env)
    assert.equal(listed.code, 0, listed.stderr)
    assert.match(listed.stderr, /not for production/i)
    const [message] = JSON.parse(listed.stdout) as Array<{ subject: string; links: string[] }>
    assert.equal(message?.subject, 'Confirm your email address')
    const link = new URL(message.links[0] ?? '')
    assert.equal(link.origin, PUBLIC_URL, 'links are built from TESSERA_PUBLIC_URL')
    // Opening the link renders a page and uses nothing (a mail scanner's prefetch is harmless)...
    for (let i = 0; i < 2; i++) {
      const page = await fetch(new URL(link.pathname + link.search, base))
      assert.equal(page.status, 200)
      assert.match(page.headers.get('content-type') ?? '', /text\/html/)
      assert.equal(page.headers.get('cache-control'), 'no-store')
      assert.equal(page.headers.get('referrer-policy'), 'no-referrer')
      assert.match(await page.text(), /<form method="post"/)
    }
    // ...and only the page's POST verifies the address.
    const confirmed = await fetch(new URL(link.pathname, base), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: link.searchParams.get('token') ?? '' }),
    })
    assert.equal(confirmed.status, 200)
    assert.match(await confirmed.text(), /Address confirmed/)

    const login = await postJson(base, '/v1/auth/login', { email, password })
    assert.equal(login.status, 200)
    const tokens = await login.json() as Tokens
    const me = await fetch(new URL('/v1/me', base), { headers: { authorization: `Bearer ${tokens.access_token}` } })
    assert.equal(me.status, 200)
    assert.equal(((await me.json()) as { email: string }).email, email)
    assert.equal((await fetch(new URL('/readyz', base))).status, 200)

    const kekFile = path.join(dataDir, 'key-encryption-key')
    const kekStat = await stat(kekFile)
    assert.equal(kekStat.mode & 0o777, 0o600, 'the key-encryption key file is private to its owner')
    assert.match((await readFile(kekFile, 'utf8')).trim(), /^[A-Za-z0-9+/]{43}=$/)
    assert.equal((await stat(path.join(dataDir, 'pg-password'))).mode & 0o777, 0o600)
    assert.equal(server.output().includes((await readFile(kekFile, 'utf8')).trim()), false, 'the key-encryption key is never logged')

    firstKids = await jwksKids(base)
    assert.ok(firstKids.length >= 1)
    firstSigningKid = decodeProtectedHeader(tokens.access_token).kid

    assert.ok(await exists(path.join(pgDir, 'postmaster.pid')), 'PostgreSQL is running from the data directory')
    assert.ok((await processesUsing(pgDir)).length > 0)

    const exit = await server.stop('SIGTERM')
    assert.deepEqual(exit, { code: 0, signal: null }, server.output())
    assert.equal(await exists(path.join(pgDir, 'postmaster.pid')), false, 'PostgreSQL stopped with the server')
    assert.deepEqual(await processesUsing(pgDir), [], 'no postgres process remains for the data directory')
    assert.equal(server.logLines().at(-1)?.msg, 'stopped')
  })

  it('keeps accounts and signing keys across a restart on the same data directory', async () => {
    assert.ok(firstKids.length > 0, 'the first start ran')
    await server?.kill(30_000)
    server = await startServer(env, { timeoutMs: START_TIMEOUT_MS })
    const base = server.baseUrl
    assert.equal(server.logLines().some((l) => /generated a key-encryption key/.test(String(l.msg))), false, 'the key-encryption key is reused, not regenerated')
    assert.equal(server.logLines().some((l) => /initialising embedded PostgreSQL/.test(String(l.msg))), false, 'the cluster is reused, not re-initialised')

    const login = await postJson(base, '/v1/auth/login', { email, password })
    assert.equal(login.status, 200, 'the account made before the restart still logs in')
    const tokens = await login.json() as Tokens

    assert.deepEqual(await jwksKids(base), firstKids, 'the JWKS publishes the same keys')
    assert.equal(decodeProtectedHeader(tokens.access_token).kid, firstSigningKid, 'tokens are signed with the same key')
    const jwks = createRemoteJWKSet(new URL('/.well-known/jwks.json', base))
    const { payload } = await jwtVerify(tokens.access_token, jwks, { issuer: PUBLIC_URL, audience: PUBLIC_URL, typ: 'at+jwt', algorithms: ['EdDSA'] })
    assert.equal(typeof payload.sid, 'string')

    const exit = await server.stop('SIGTERM')
    assert.deepEqual(exit, { code: 0, signal: null }, server.output())
    assert.equal(await exists(path.join(pgDir, 'postmaster.pid')), false)
    assert.deepEqual(await processesUsing(pgDir), [])
  })
})
