/**
 * Mail transports. `smtp` sends through nodemailer; `outbox` (development only) writes the message to
 * the `mail_outbox` table in the same transaction that marks it delivered, and logs its links.
 */
import nodemailer from 'nodemailer'
import type { Config } from '../config.ts'
import { PermanentJobError } from '../jobs/jobs.queue.ts'

export interface OutgoingMessage {
  /** The idempotency key, sent as the Message-ID so that a duplicate delivery is recognisable. */
  readonly messageId: string
  readonly to: string
  readonly subject: string
  readonly text: string
  readonly html: string
}

export interface SmtpMailer {
  /** @throws PermanentJobError when the server refused the message for good (5xx); Error otherwise. */
  send(message: OutgoingMessage): Promise<void>
  close(): void
}

export function messageIdHeader(messageId: string, from: string): string {
  const domain = /@([^>\s]+)>?\s*$/.exec(from)?.[1] ?? 'tessera.invalid'
  return `<${messageId}@${domain}>`
}

export function createSmtpMailer(smtp: Config['email']['smtp']): SmtpMailer {
  if (smtp.url === undefined) throw new Error('createSmtpMailer: SMTP_URL is not set')
  // The URL is parsed here, not handed to nodemailer as `url`: createTransport({ url }) drops every other
  // option (requireTLS and tls included), which would silently turn the TLS settings off.
  const url = new URL(smtp.url)
  const implicitTls = url.protocol === 'smtps:'
  const transport = nodemailer.createTransport({
    host: url.hostname.replace(/^\[|\]$/g, ''),
    port: url.port === '' ? (implicitTls ? 465 : 587) : Number(url.port),
    secure: implicitTls,
    ...(url.username === '' ? {} : { auth: { user: decodeURIComponent(url.username), pass: decodeURIComponent(url.password) } }),
    requireTLS: !implicitTls && smtp.requireTls,
    tls: { rejectUnauthorized: smtp.rejectUnauthorized, minVersion: 'TLSv1.2' },
    connectionTimeout: smtp.timeoutMs,
    greetingTimeout: smtp.timeoutMs,
    socketTimeout: smtp.timeoutMs,
    disableFileAccess: true,
    disableUrlAccess: true,
  })
  return {
    async send(m) {
      try {
        await transport.sendMail({
          from: smtp.from,
          to: m.to,
          subject: m.subject,
          text: m.text,
          html: m.html,
          messageId: messageIdHeader(m.messageId, smtp.from),
        })
      } catch (err) {
        const code = (err as { responseCode?: number }).responseCode
        const message = `SMTP: ${(err as Error).message}`
        // 5xx: the server will never take this message (bad recipient, policy); 4xx and network
        // failures are worth retrying.
        if (typeof code === 'number' && code >= 500 && code < 600) throw new PermanentJobError(message, { cause: err })
        throw new Error(message, { cause: err })
      }
    },
    close() {
      transport.close()
    },
  }
}
