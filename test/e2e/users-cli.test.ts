/**
 * `tessera users create`, run as a real process against a real database, and the account it makes
 * used over HTTP by a running server: the way the first administrator is bootstrapped.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts'
import { processEnv, repoRoot, runCli, type ServerProcess, startServer } from '../helpers/process.ts'

/** Like runCli, with `input` piped to stdin (runCli gives the child no stdin). */
function runCliWithStdin(args: readonly string[], env: Record<string, string>, input: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['src/cli.ts', ...args], {
    cwd: repoRoot,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (c: string) => { stdout += c })
  child.stderr.setEncoding('utf8').on('data', (c: string) => { stderr += c })
  child.stdin.end(input)
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`tessera ${args.join(' ')} did not exit\n${stdout}\n${stderr}`)) }, 60_000)
    child.once('error', reject)
    child.once('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }) })
  })
}

interface Created { id: string; email: string; roles: string[]; status: string; email_verified: boolean; password?: string }

describe('tessera CLI: users create', () => {
  let db: TestDatabase
  let server: ServerProcess
  let env: Record<string, string>

  before(async () => {
    db = await createTestDatabase()
    env = processEnv(db.url)
    server = await startServer(env)
  })
  after(async () => {
    await server.kill()
    await db.drop()
  })

  const http = async (method: string, path: string, options: { token?: string; body?: unknown } = {}) => {
    const res = await fetch(`${server.baseUrl}${path}`, {
      method,
      headers: { ...(options.token === undefined ? {} : { authorization: `Bearer ${options.token}` }), ...(options.body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
    })
    return { status: res.status, body: (await res.json()) as Record<string, unknown> }
  }
  const login = async (email: string, password: string) => http('POST', '/v1/auth/login', { body: { email, password } })
  const rolesOf = (token: string) => (JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as { roles: string[] }).roles

  it('creates a verified administrator with a generated password shown once, who can log in and use the admin API', async () => {
    const email = `Root.${randomBytes(3).toString('hex')}@Example.com`
    const res = await runCli(['users', 'create', '--email', email, '--admin'], env)
    assert.equal(res.code, 0, res.stderr)
    const created = JSON.parse(res.stdout) as Created
    assert.equal(created.email, email.toLowerCase())
    assert.deepEqual(created.roles, ['admin'])
    assert.equal(created.status, 'active')
    assert.equal(created.email_verified, true)
    assert.match(created.password ?? '', /^[A-Za-z0-9_-]{32}$/)
    assert.match(res.stderr, /shown once/)

    const session = await login(email, created.password ?? '')
    assert.equal(session.status, 200, JSON.stringify(session.body))
    const token = String(session.body.access_token)
    assert.deepEqual(rolesOf(token), ['admin'])
    const view = await http('GET', `/v1/admin/users/${created.id}`, { token })
    assert.equal(view.status, 200, JSON.stringify(view.body))
    assert.deepEqual(view.body.roles, ['admin'])
    assert.equal(view.body.email_verified, true)
    assert.equal(view.body.live_sessions, 1)
    const events = await http('GET', `/v1/admin/audit-events?type=admin.user_created&account_id=${created.id}`, { token })
    assert.equal(events.status, 200)
    const [event] = events.body.events as Array<{ actor: string; data: Record<string, unknown> }>
    assert.equal(event?.actor, 'cli')
    assert.deepEqual(event?.data, { roles: ['admin'], email_verified: true, password: 'generated' })
    assert.ok(!JSON.stringify(events.body).includes(created.password ?? '-'), 'the password is in no audit event')
  })

  it('takes the password from stdin without printing it; without --admin the account has no admin rights', async () => {
    const email = `ops.${randomBytes(3).toString('hex')}@example.com`
    const password = 'a long passphrase for the operator'
    const res = await runCliWithStdin(['users', 'create', '--email', email, '--password-stdin'], env, `${password}\n`)
    assert.equal(res.code, 0, res.stderr)
    const created = JSON.parse(res.stdout) as Created
    assert.deepEqual(created.roles, [])
    assert.equal(created.password, undefined)
    assert.ok(!res.stdout.includes(password) && !res.stderr.includes(password))
    const session = await login(email, password) // the trailing newline was not part of the password
    assert.equal(session.status, 200)
    const token = String(session.body.access_token)
    assert.deepEqual(rolesOf(token), [])
    assert.equal((await http('GET', '/v1/admin/users', { token })).status, 403)
  })

  it('refuses a taken address, a weak password and bad usage with a clear message and a distinct exit status', async () => {
    const email = `dup.${randomBytes(3).toString('hex')}@example.com`
    assert.equal((await runCli(['users', 'create', '--email', email], env)).code, 0)
    const taken = await runCli(['users', 'create', '--email', email.toUpperCase(), '--admin'], env)
    assert.equal(taken.code, 65)
    assert.match(taken.stderr, /already exists/)
    assert.equal(taken.stdout, '')

    const weak = await runCliWithStdin(['users', 'create', '--email', `weak.${randomBytes(3).toString('hex')}@example.com`, '--password-stdin'], env, 'short\n')
    assert.equal(weak.code, 65)
    assert.match(weak.stderr, /too short/)
    const invalid = await runCli(['users', 'create', '--email', 'not an address'], env)
    assert.equal(invalid.code, 65)
    assert.match(invalid.stderr, /not valid/)
    const missing = await runCli(['users', 'create', '--admin'], env)
    assert.equal(missing.code, 64)
    assert.match(missing.stderr, /needs --email/)
    const unknown = await runCli(['users', 'promote'], env)
    assert.equal(unknown.code, 64)
    assert.match(unknown.stderr, /Usage: tessera/)
  })
})
