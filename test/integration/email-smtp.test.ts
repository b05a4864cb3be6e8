/**
 * Delivery over real SMTP (smtp-server in the test process, STARTTLS required): the in-process worker
 * sends, the tests read what the server received and follow its links. Then the faults: the mail
 * server refusing connections, hanging, refusing one recipient for good (dead-lettered at once) or
 * for a while (every attempt used, then dead-lettered) — while requests keep succeeding and the other
 * messages keep flowing — and a server that offers no TLS.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type pg from 'pg'
import { QUEUES } from '../../src/jobs/jobs.queue.ts'
import type { EmailJob } from '../../src/email/email.service.ts'
import { createTestApp, login, register, uniqueEmail, type TestApp } from '../helpers/app.ts'
import { testPool } from '../helpers/db.ts'
import { violatedInvariants } from '../helpers/invariants.ts'
import { waitFor } from '../helpers/process.ts'
import { smtpEnv, startSmtpServer, type TestSmtpServer } from '../helpers/smtp.ts'
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.ts'

interface MessageState { attempts: number; last_error: string | null; delivered_at: Date | null; dead_at: Date | null }

describe('email over SMTP', () => {
  let smtp: TestSmtpServer
  let proxy: TcpProxy
  let t: TestApp
  let sql: pg.Pool
  let faults = 0

  before(async () => {
    smtp = await startSmtpServer()
    // Tessera reaches the mail server through a proxy that can freeze (a hung server).
    proxy = await startTcpProxy({ host: '127.0.0.1', port: smtp.port })
    t = await createTestApp({ worker: true, env: { ...smtpEnv(smtp), SMTP_URL: `smtp://127.0.0.1:${proxy.port}` } })
    sql = testPool(t.db.url, 2)
  })
  after(async () => {
    console.log(`# mail faults injected and survived: ${faults}`)
    await sql.end()
    await t.close()
    await proxy.close()
    await smtp.stop()
  })

  const state = async (email: string): Promise<MessageState[]> => (await sql.query<MessageState>(
    'SELECT attempts, last_error, delivered_at, dead_at FROM email_messages m JOIN accounts a ON a.id = m.account_id WHERE a.email = $1 ORDER BY m.created_at',
    [email],
  )).rows
  const registerAll = async (emails: string[]) => {
    for (const res of await Promise.all(emails.map((e) => register(t.app, e)))) assert.equal(res.statusCode, 202, 'requests succeed whatever the mail server does')
  }
  const delivered = async (emails: string[], timeoutMs = 20_000) => {
    await waitFor(`delivery to ${emails.length} recipients`, () => emails.every((e) => smtp.to(e).length > 0), timeoutMs)
  }

  it('delivers over SMTP with STARTTLS; the message carries its idempotency key and a working link', async () => {
    const email = uniqueEmail('smtp')
    await registerAll([email])
    await delivered([email])
    const [mail] = smtp.to(email)
    assert.ok(mail)
    assert.equal(mail.secure, true, 'the session was upgraded with STARTTLS')
    assert.equal(mail.subject, 'Confirm your email address')
    const { rows } = await sql.query<{ id: string }>("SELECT m.id FROM email_messages m JOIN accounts a ON a.id = m.account_id WHERE a.email = $1 AND m.kind = 'verify_email'", [email])
    assert.equal(mail.messageId, `<${rows[0]?.id}@tessera.test>`, 'the Message-ID is the message id')
    assert.match(mail.html, /<a href="http:\/\/tessera\.test\/verify-email\?token=/)
    const token = new URL(mail.links[0] ?? '').searchParams.get('token') ?? ''
    assert.equal((await t.app.inject({ method: 'POST', url: '/v1/email-verification/confirm', payload: { token } })).statusCode, 204)
    await login(t.app, email)
    assert.equal((await state(email))[0]?.attempts, 1)
  })

  it('keeps answering while the mail server refuses connections, backs off, and delivers everything once it is back', async () => {
    await proxy.cut()
    faults++
    const emails = Array.from({ length: 5 }, () => uniqueEmail('outage'))
    await registerAll(emails)
    // Each message fails and is retried with backoff (1 s base in tests) while the server is away.
    await waitFor('a second failed attempt', async () => (await Promise.all(emails.map(state))).every(([m]) => (m?.attempts ?? 0) >= 2), 20_000)
    const during = (await Promise.all(emails.map(state))).map(([m]) => m)
    for (const m of during) {
      assert.equal(m?.delivered_at, null)
      assert.match(m?.last_error ?? '', /ECONNREFUSED/)
      assert.equal(m?.dead_at, null, 'not dead: attempts are left')
    }
    await proxy.restore()
    await delivered(emails)
    await new Promise((r) => setTimeout(r, 1500))
    for (const e of emails) assert.equal(smtp.to(e).length, 1, `${e} got exactly one message`)
  })

  it('survives a hung mail server: the attempt times out, is retried, and the message arrives after recovery', async () => {
    proxy.freeze()
    faults++
    const email = uniqueEmail('hung')
    await registerAll([email])
    await waitFor('a timed-out attempt', async () => ((await state(email))[0]?.attempts ?? 0) >= 1, 20_000)
    assert.match((await state(email))[0]?.last_error ?? '', /time|Greeting never received|ETIMEDOUT/i)
    await proxy.restore()
    await delivered([email])
    assert.equal(smtp.to(email).length, 1)
  })

  it('dead-letters a message the server refuses for good at once, without holding up the others', async () => {
    const poison = uniqueEmail('poison')
    smtp.rejectRecipients.add(poison)
    faults++
    const others = Array.from({ length: 4 }, () => uniqueEmail('bystander'))
    await registerAll([poison, ...others])
    await delivered(others)
    await waitFor('the poison message dead-lettered', async () => (await state(poison))[0]?.dead_at != null, 20_000)
    const [m] = await state(poison)
    assert.equal(m?.attempts, 1, 'a 5xx is permanent: no retries')
    assert.match(m?.last_error ?? '', /550/)
    const dead = await t.deps.queue.listDead<EmailJob>(QUEUES.email)
    const stats = await t.deps.email.stats()
    assert.ok(stats.dead >= 1)

    // After the cause is fixed, a retry from the dead-letter queue delivers it.
    smtp.rejectRecipients.delete(poison)
    const { rows } = await sql.query<{ id: string }>('SELECT m.id FROM email_messages m JOIN accounts a ON a.id = m.account_id WHERE a.email = $1', [poison])
    const job = dead.find((d) => d.data.messageId === rows[0]?.id)
    assert.ok(job, 'the dead job carries the message id')
    await sql.query('UPDATE email_messages SET dead_at = NULL WHERE id = $1', [rows[0]?.id])
    assert.equal(await t.deps.queue.retryDead(QUEUES.email, [job.id]), 1)
    await delivered([poison])
    assert.equal(smtp.to(poison).length, 1)
  })

  it('uses every attempt on a message that keeps failing for a while, then dead-letters it; the rest flows', async () => {
    const deferred = uniqueEmail('deferred')
    smtp.deferRecipients.add(deferred)
    faults++
    const others = Array.from({ length: 3 }, () => uniqueEmail('flowing'))
    await registerAll([deferred, ...others])
    await delivered(others)
    // 4 attempts (TESSERA_EMAIL_MAX_ATTEMPTS in tests), 1–2 s apart with jitter.
    await waitFor('the deferred message dead-lettered', async () => (await state(deferred))[0]?.dead_at != null, 30_000)
    const [m] = await state(deferred)
    assert.equal(m?.attempts, 4)
    assert.match(m?.last_error ?? '', /451/)
    assert.equal(smtp.to(deferred).length, 0)
    smtp.deferRecipients.delete(deferred)
  })

  it('never sends in plain text to a server that offers no STARTTLS (SMTP_REQUIRE_TLS defaults to true)', async () => {
    const plain = await startSmtpServer({ starttls: false })
    faults++
    const other = await createTestApp({ worker: true, env: { ...smtpEnv(plain) } })
    try {
      const email = uniqueEmail('plain')
      assert.equal((await register(other.app, email)).statusCode, 202)
      const local = testPool(other.db.url, 1)
      try {
        await waitFor('a failed attempt', async () => {
          const { rows } = await local.query<{ attempts: number }>('SELECT attempts FROM email_messages')
          return (rows[0]?.attempts ?? 0) >= 1
        }, 20_000)
        const { rows } = await local.query<{ last_error: string; delivered_at: Date | null }>('SELECT last_error, delivered_at FROM email_messages')
        assert.equal(rows[0]?.delivered_at, null)
        assert.match(rows[0]?.last_error ?? '', /STARTTLS|TLS/i)
      } finally {
        await local.end()
      }
      assert.equal(plain.received.length, 0)
    } finally {
      await other.close()
      await plain.stop()
    }
  })

  it('leaves no broken invariant behind', async () => {
    assert.deepEqual(await violatedInvariants(sql), [])
  })
})
