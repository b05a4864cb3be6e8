/**
 * End-to-end: email delivery as its own process. `tessera serve` with TESSERA_WORKER=separate only
 * enqueues; a `tessera worker` process delivers over real SMTP (STARTTLS) and drains on SIGTERM. A
 * message the mail server refuses for good (550) is dead-lettered at once without holding up the
 * others, `tessera jobs list` shows it and `tessera jobs retry` sends it again, with the same
 * Message-ID. `tessera mail list` reads the development outbox. Every process is the real CLI
 * (`node src/cli.ts …`) on a real PostgreSQL.
 */
import assert from 'node:assert/strict'

import { after, before, describe, it } from 'node:test'
import { uniqueEmail, VALID_PASSWORD } from '../helpers/app.ts'
import { createTestDatabase, testPool, type TestDatabase } from '../helpers/db.ts'
import { type CliProcess, type Exit, processEnv, runCli, type ServerProcess, spawnCli, startServer, waitFor } from '../helpers/process.ts'
import { smtpEnv, startSmtpServer, type ReceivedMail, type TestSmtpServer } from '../helpers/smtp.ts'

const PUBLIC_URL = 'http://tessera.e2e'
const VERIFY_LINK = `${PUBLIC_URL}/verify-email?token=`
const VERIFY_SUBJECT = 'Confirm your email address'

interface DeadEntry {
  job_id: string
  message_id: string
  kind: string | null
  attempts: number | null
  failed_at: string
  error: string | null
}

interface JobsList {
  queue: string
  pending: number
  oldest_pending_seconds: number
  failing: number
  dead: DeadEntry[]
}

interface OutboxEntry {
  message_id: string
  to: string
  subject: string
  created_at: string
  links: string[]
  text: string
}

/** The environment of every process of one database: the server, the worker and the CLI share the KEK. */
function baseEnv(db: TestDatabase, env: Record<string, string>): Record<string, string> {
  return processEnv(db.url, {
    TESSERA_PUBLIC_URL: PUBLIC_URL,
    ...env,
  })
}

function post(base: string, path: string, body: unknown): Promise<Response> {
  return fetch(new URL(path, base), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

async function jobsList(env: Record<string, string>): Promise<JobsList> {
  const res = await runCli(['jobs', 'list'], env, 30_000)
  assert.equal(res.code, 0, res.stderr)
  return JSON.parse(res.stdout) as JobsList
}

/** Resolves with the process's exit, or rejects if it is still running after `timeoutMs`. */
async function exitWithin(proc: CliProcess, timeoutMs: number): Promise<Exit> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      proc.exited,
      new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`still running after ${timeoutMs} ms\n${proc.output()}`)), timeoutMs)
      }),
    ])
  } finally {
    clearTimeout(timer)
  }
}

/** For after() hooks: SIGTERM, then SIGKILL if still there after `graceMs`. Never throws. */
async function killProcess(proc: CliProcess | undefined, graceMs = 10_000): Promise<void> {
  if (proc === undefined) return
  if (proc.running()) proc.child.kill('SIGTERM')
  try {
    await exitWithin(proc, graceMs)
  } catch {
    proc.child.kill('SIGKILL')
    await proc.exited.catch(() => undefined)
  }
}

async function mailTo(smtp: TestSmtpServer, address: string, timeoutMs = 20_000): Promise<ReceivedMail> {
  await waitFor(`a message to ${address} over SMTP`, () => smtp.to(address).length > 0, timeoutMs)
  const mail = smtp.to(address)[0]
  assert.ok(mail !== undefined)
  return mail
}

function verifyToken(mail: ReceivedMail): string {
  const link = mail.links.find((l) => l.startsWith(VERIFY_LINK))
  assert.ok(link !== undefined, `no verification link in: ${mail.text}`)
  const token = new URL(link).searchParams.get('token')
  assert.ok(token !== null)
  return token
}

function logged(proc: CliProcess, msg: string): boolean {
  return proc.logLines().some((l) => l.msg === msg)
}

describe('tessera worker: delivery as a separate process, dead letters and `tessera jobs`', () => {
  let db: TestDatabase
  let smtp: TestSmtpServer
  let server: ServerProcess | undefined
  let env: Record<string, string>
  const workers: CliProcess[] = []

  function startWorker(): CliProcess {
    const worker = spawnCli(['worker'], env)
    workers.push(worker)
    return worker
  }

  before(async () => {
    db = await createTestDatabase()
    smtp = await startSmtpServer()
    env = baseEnv(db, { ...smtpEnv(smtp), TESSERA_WORKER: 'separate' })
    server = await startServer(env)
  })
  after(async () => {
    await Promise.all(workers.map((w) => killProcess(w)))
    await server?.kill()
    await smtp?.stop()
    await db?.drop()
  })

  it('with TESSERA_WORKER=separate the server only enqueues; `tessera worker` delivers over STARTTLS and drains on SIGTERM', async () => {
    assert.ok(server !== undefined)
    const email = uniqueEmail('separate')
    const reg = await post(server.baseUrl, '/v1/accounts', { email, password: VALID_PASSWORD })
    assert.equal(reg.status, 202, await reg.clone().text())
    const early = await post(server.baseUrl, '/v1/auth/login', { email, password: VALID_PASSWORD })
    assert.equal(early.status, 403, 'not verified yet')

    // No worker: nothing is sent, the server does not even connect to the mail server.
    await sleep(1500)
    assert.equal(smtp.received.length, 0)
    assert.equal(smtp.connections, 0)
    const waiting = await jobsList(env)
    assert.equal(waiting.queue, 'email')
    assert.ok(waiting.pending >= 1, JSON.stringify(waiting))
    assert.ok(waiting.oldest_pending_seconds >= 1, JSON.stringify(waiting))
    assert.equal(waiting.failing, 0)
    assert.deepEqual(waiting.dead, [])
    assert.equal(smtp.received.length, 0, 'still nothing without a worker')

    const worker = startWorker()
    const mail = await mailTo(smtp, email)
    assert.equal(mail.secure, true, 'the session was upgraded with STARTTLS')
    assert.equal(mail.subject, VERIFY_SUBJECT)
    assert.match(mail.messageId, /^<[0-9a-f-]{36}@tessera\.test>$/)
    assert.ok(logged(worker, 'worker started'), worker.output())

    const confirm = await post(server.baseUrl, '/v1/email-verification/confirm', { token: verifyToken(mail) })
    assert.equal(confirm.status, 204, await confirm.clone().text())
    const login = await post(server.baseUrl, '/v1/auth/login', { email, password: VALID_PASSWORD })
    assert.equal(login.status, 200, await login.clone().text())

    await waitFor('the delivery to be recorded', async () => (await jobsList(env)).pending === 0, 15_000)

    worker.child.kill('SIGTERM')
    const exit = await exitWithin(worker, 15_000)
    assert.deepEqual(exit, { code: 0, signal: null }, worker.output())
    assert.ok(logged(worker, 'worker stopping: finishing the attempts in progress'), worker.output())
    assert.ok(logged(worker, 'stopped'), worker.output())
    assert.equal(smtp.to(email).length, 1, 'delivered once')
  })

  it('dead-letters a refused message at once without holding up the others; `tessera jobs retry` sends it again', async () => {
    assert.ok(server !== undefined)
    const sql = testPool(db.url, 1)
    try {
      const refusedA = uniqueEmail('refused-a')
      const refusedB = uniqueEmail('refused-b')
      const fine = uniqueEmail('fine')
      smtp.rejectRecipients.add(refusedA).add(refusedB)
      const worker = startWorker()
      // The refused ones are queued first: a dead letter must not delay the message behind it.
      for (const email of [refusedA, refusedB, fine]) {
        const reg = await post(server.baseUrl, '/v1/accounts', { email, password: VALID_PASSWORD })
        assert.equal(reg.status, 202, await reg.clone().text())
      }
      const delivered = await mailTo(smtp, fine)
      assert.equal(delivered.subject, VERIFY_SUBJECT)

      let listed: JobsList | undefined
      await waitFor('two dead letters in `tessera jobs list`', async () => {
        listed = await jobsList(env)
        return listed.dead.length === 2
      }, 20_000)
      assert.ok(listed !== undefined)
      for (const dead of listed.dead) {
        assert.equal(dead.kind, 'verify_email')
        assert.equal(dead.attempts, 1, 'a 550 is not retried')
        assert.match(dead.error ?? '', /550/)
        assert.match(dead.message_id, /^[0-9a-f-]{36}$/)
        assert.ok(dead.job_id.length > 0)
      }
      assert.equal(smtp.to(refusedA).length + smtp.to(refusedB).length, 0)
      assert.ok(logged(worker, 'email dead-lettered'), worker.output())

      // Which dead letter is whose: the message record still holds the address of an undelivered message.
      const idOf = async (address: string): Promise<string> => {
        const { rows } = await sql.query<{ id: string }>('SELECT id FROM email_messages WHERE recipient = $1', [address])
        assert.equal(rows.length, 1)
        return rows[0]?.id ?? ''
      }
      const messageA = await idOf(refusedA)
      const messageB = await idOf(refusedB)
      const jobA = listed.dead.find((d) => d.message_id === messageA)
      assert.ok(jobA !== undefined, JSON.stringify(listed.dead))
      assert.ok(listed.dead.some((d) => d.message_id === messageB))

      // Operator errors: exit 64 (EX_USAGE), nothing moved.
      const unknown = await runCli(['jobs', 'retry', 'unknown-id'], env, 30_000)
      assert.equal(unknown.code, 64, unknown.stderr)
      assert.match(unknown.stderr, /not in the dead-letter queue: unknown-id/)
      const none = await runCli(['jobs', 'retry'], env, 30_000)
      assert.equal(none.code, 64, none.stderr)
      assert.equal((await jobsList(env)).dead.length, 2)

      // The mail server takes them now. One by its job id…
      smtp.rejectRecipients.clear()
      const one = await runCli(['jobs', 'retry', jobA.job_id], env, 30_000)
      assert.equal(one.code, 0, one.stderr)
      assert.deepEqual(JSON.parse(one.stdout), { retried: 1, not_found: 0 })
      const redriven = await mailTo(smtp, refusedA)
      assert.equal(redriven.messageId, `<${messageA}@tessera.test>`, 'the same message, same idempotency key')
      assert.equal(redriven.secure, true)
      const confirm = await post(server.baseUrl, '/v1/email-verification/confirm', { token: verifyToken(redriven) })
      assert.equal(confirm.status, 204, 'the redriven link works')
      const left = await jobsList(env)
      assert.deepEqual(left.dead.map((d) => d.message_id), [messageB])

      // …and the rest with --all.
      const all = await runCli(['jobs', 'retry', '--all'], env, 30_000)
      assert.equal(all.code, 0, all.stderr)
      assert.deepEqual(JSON.parse(all.stdout), { retried: 1, not_found: 0 })
      const second = await mailTo(smtp, refusedB)
      assert.equal(second.messageId, `<${messageB}@tessera.test>`)

      await waitFor('an empty dead-letter queue and nothing pending', async () => {
        const now = await jobsList(env)
        return now.dead.length === 0 && now.pending === 0 && now.failing === 0
      }, 15_000)
      assert.equal(smtp.to(refusedA).length, 1, 'delivered once')
      assert.equal(smtp.to(refusedB).length, 1, 'delivered once')
      assert.equal(smtp.to(fine).length, 1, 'delivered once')
      // --all with nothing dead is not a usage error (runbooks and cron jobs run it blindly).
      const nothingDead = await runCli(['jobs', 'retry', '--all'], env, 30_000)
      assert.equal(nothingDead.code, 0, nothingDead.stderr)
      assert.deepEqual(JSON.parse(nothingDead.stdout), { retried: 0, not_found: 0 })

      worker.child.kill('SIGTERM')
      assert.deepEqual(await exitWithin(worker, 15_000), { code: 0, signal: null }, worker.output())
    } finally {
      smtp.rejectRecipients.clear()
      await sql.end()
    }
  })
})

describe('tessera mail list: the development outbox', () => {
  let db: TestDatabase
  let server: ServerProcess | undefined
  let env: Record<string, string>

  before(async () => {
    db = await createTestDatabase()
    // The outbox transport, the worker in the server process (the default).
    env = baseEnv(db, { TESSERA_EMAIL_OUTBOX: 'true' })
    server = await startServer(env)
  })
  after(async () => {
    await server?.kill()
    await db?.drop()
  })

  it('lists the messages the in-process worker kept, with their links, and warns it is not for production', async () => {
    assert.ok(server !== undefined)
    const email = uniqueEmail('outbox')
    const reg = await post(server.baseUrl, '/v1/accounts', { email, password: VALID_PASSWORD })
    assert.equal(reg.status, 202, await reg.clone().text())

    const sql = testPool(db.url, 1)
    try {
      await waitFor(`the message to ${email} in the outbox`, async () => {
        const { rows } = await sql.query('SELECT 1 FROM mail_outbox WHERE recipient = $1', [email])
        return rows.length > 0
      }, 20_000)
    } finally {
      await sql.end()
    }

    const listed = await runCli(['mail', 'list', '--to', email], env, 30_000)
    assert.equal(listed.code, 0, listed.stderr)
    assert.match(listed.stderr, /not for production/i)
    assert.doesNotMatch(listed.stderr, /SMTP_URL is set/)
    const messages = JSON.parse(listed.stdout) as OutboxEntry[]
    assert.equal(messages.length, 1, listed.stdout)
    const [message] = messages
    assert.ok(message !== undefined)
    assert.equal(message.to, email)
    assert.equal(message.subject, VERIFY_SUBJECT)
    assert.match(message.message_id, /^[0-9a-f-]{36}$/)
    assert.equal(message.links.length >= 1, true)
    assert.ok(message.links[0]?.startsWith(VERIFY_LINK), message.links.join(' '))
    assert.ok(message.text.includes(message.links[0] ?? '\0'))

    // The link in the outbox is the real one.
    const token = new URL(message.links[0] ?? '').searchParams.get('token')
    const confirm = await post(server.baseUrl, '/v1/email-verification/confirm', { token })
    assert.equal(confirm.status, 204, await confirm.clone().text())

    const other = await runCli(['mail', 'list', '--to', uniqueEmail('nobody')], env, 30_000)
    assert.equal(other.code, 0, other.stderr)
    assert.deepEqual(JSON.parse(other.stdout), [])

    const bad = await runCli(['mail', 'list', '--limit', '0'], env, 30_000)
    assert.equal(bad.code, 64, bad.stderr)
    assert.match(bad.stderr, /--limit must be an integer/)
    assert.equal(bad.stdout, '')
  })
})
