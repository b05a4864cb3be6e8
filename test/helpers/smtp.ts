/**
 * A real SMTP server for the suite (smtp-server from npm, STARTTLS with its built-in self-signed
 * certificate): Tessera talks SMTP to it over a socket, and tests read what arrived, parsed by
 * mailparser. It can refuse recipients for good (550), fail everything for a while (451), or go away
 * and come back on the same port.
 */
import { simpleParser } from 'mailparser'
import { SMTPServer } from 'smtp-server'
import { freePort } from '../../scripts/lib/free-port.ts'

export interface ReceivedMail {
  readonly to: string
  readonly subject: string
  readonly text: string
  readonly html: string
  readonly messageId: string
  readonly links: string[]
  /** Whether the session was upgraded with STARTTLS. */
  readonly secure: boolean
}

export interface TestSmtpServer {
  readonly url: string
  readonly port: number
  readonly received: ReceivedMail[]
  /** Recipients answered `550` (permanent): their messages must be dead-lettered. */
  readonly rejectRecipients: Set<string>
  /** Recipients answered `451` (temporary) every time: their messages use up every attempt. */
  readonly deferRecipients: Set<string>
  /** While true, every recipient is answered `451` (temporary). */
  failTemporarily: boolean
  /** Connection attempts seen (accepted sockets). */
  readonly connections: number
  /** Resolves once `count` messages arrived in total (rejects after `timeoutMs`). */
  waitForCount(count: number, timeoutMs?: number): Promise<ReceivedMail[]>
  to(address: string): ReceivedMail[]
  /** Closes the listener and every connection: clients now get ECONNREFUSED. */
  stop(): Promise<void>
  /** Listens again on the same port. */
  start(): Promise<void>
}

/** @param options.starttls false: a server that offers no STARTTLS (plain text only). */
export async function startSmtpServer(options: { starttls?: boolean } = {}): Promise<TestSmtpServer> {
  const port = await freePort()
  const received: ReceivedMail[] = []
  const rejectRecipients = new Set<string>()
  const deferRecipients = new Set<string>()
  let connections = 0
  let server: SMTPServer | undefined
  const state = { failTemporarily: false }

  const create = () => new SMTPServer({
    authOptional: true,
    logger: false,
    // Hiding STARTTLS is not enough (a client may try it anyway): the command is disabled.
    disabledCommands: options.starttls === false ? ['STARTTLS'] : [],
    size: 1024 * 1024,
    onConnect(_session, callback) {
      connections++
      callback()
    },
    onRcptTo(address, _session, callback) {
      const to = address.address.toLowerCase()
      if (rejectRecipients.has(to)) return callback(Object.assign(new Error('5.1.1 No such user here'), { responseCode: 550 }))
      if (state.failTemporarily || deferRecipients.has(to)) return callback(Object.assign(new Error('4.3.0 Try again later'), { responseCode: 451 }))
      callback()
    },
    onData(stream, session, callback) {
      simpleParser(stream).then((mail) => {
        const text = mail.text ?? ''
        received.push({
          to: (session.envelope.rcptTo[0]?.address ?? '').toLowerCase(),
          subject: mail.subject ?? '',
          text,
          html: typeof mail.html === 'string' ? mail.html : '',
          messageId: mail.messageId ?? '',
          links: text.match(/https?:\/\/\S+/g) ?? [],
          secure: session.secure,
        })
        callback()
      }, (err: unknown) => callback(err as Error))
    },
  })

  const listen = async () => {
    server = create()
    server.on('error', () => undefined)
    await new Promise<void>((resolve, reject) => {
      server?.once('error', reject)
      server?.listen(port, '127.0.0.1', () => resolve())
    })
  }
  await listen()

  return {
    url: `smtp://127.0.0.1:${port}`,
    port,
    received,
    rejectRecipients,
    deferRecipients,
    get failTemporarily() { return state.failTemporarily },
    set failTemporarily(v: boolean) { state.failTemporarily = v },
    get connections() { return connections },
    async waitForCount(count, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs
      while (received.length < count) {
        if (Date.now() > deadline) throw new Error(`SMTP: ${received.length} of ${count} messages after ${timeoutMs} ms`)
        await new Promise((r) => setTimeout(r, 25))
      }
      return received
    },
    to(address) {
      return received.filter((m) => m.to === address.toLowerCase())
    },
    async stop() {
      const s = server
      server = undefined
      if (s === undefined) return
      await new Promise<void>((resolve) => {
        s.close(() => resolve())
        // Open sessions would keep close() waiting: end them now.
        for (const c of (s as unknown as { connections: Set<{ close(): void }> }).connections) c.close()
      })
    },
    start: listen,
  }
}

/** Environment for an app or process that sends through `smtp` (STARTTLS required, test certificate). */
export function smtpEnv(smtp: TestSmtpServer): Record<string, string> {
  return {
    SMTP_URL: smtp.url,
    SMTP_FROM: 'Tessera Test <no-reply@tessera.test>',
    SMTP_TLS_REJECT_UNAUTHORIZED: 'false',
    SMTP_TIMEOUT_MS: '1500',
    TESSERA_EMAIL_OUTBOX: '',
    TESSERA_WORKER_POLL_MS: '500',
    TESSERA_EMAIL_RETRY_DELAY_SECONDS: '1',
    TESSERA_EMAIL_RETRY_DELAY_MAX_SECONDS: '2',
    TESSERA_EMAIL_MAX_ATTEMPTS: '4',
  }
}
