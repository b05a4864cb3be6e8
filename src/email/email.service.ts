/**
 * Email: one-time tokens, queueing messages inside the caller's transaction (with throttles), and
 * delivering them from the job queue.
 *
 * Delivery guarantee: at least once, with an idempotency key. Each message has a row in
 * `email_messages` whose id travels in the job, is checked before every attempt (a delivered message
 * is never sent again) and is sent as the Message-ID. The only window for a duplicate is a crash
 * between the SMTP server's "250 OK" and the UPDATE that records it; the duplicate then carries the
 * same Message-ID. The development outbox writes the message and marks it delivered in one
 * transaction: exactly once.
 *
 * Tokens: 256 bits, an HMAC of the token's row id under a key derived from the KEK. The database keeps
 * only its SHA-256 and the job only the message id, so no link can be rebuilt from a database dump,
 * and the worker computes the link again when it renders the message.
 */
import { createHash, createHmac, randomUUID, type KeyObject } from 'node:crypto'
import type { Clock } from '../clock.ts'
import type { Config } from '../config.ts'
import { withTransaction, type Pool, type Queryable } from '../db/pool.ts'
import { PermanentJobError, QUEUES, type JobAttempt, type JobQueue } from '../jobs/jobs.queue.ts'
import type { Logger } from '../logger.ts'
import type { Metrics } from '../observability/metrics.ts'
import type { SmtpMailer } from './email.mailer.ts'
import * as emailRepository from './email.repository.ts'
import type { TokenPurpose } from './email.repository.ts'
import { describeDuration, type MessageKind, type Templates } from './email.templates.ts'

/** The job payload: an id, nothing else (payloads are stored in plain text). */
export interface EmailJob {
  readonly messageId: string
}

const TOKEN_SHAPE = /^[A-Za-z0-9_-]{43}$/

/** The page each token's link opens. */
export const LINK_PATHS: Record<TokenPurpose, string> = {
  verify_email: '/verify-email',
  reset_password: '/reset-password',
  change_email: '/confirm-email-change',
}
export const FORGOT_PASSWORD_PATH = '/forgot-password'

const purposeOfKind: Partial<Record<MessageKind, TokenPurpose>> = {
  verify_email: 'verify_email',
  reset_password: 'reset_password',
  email_change_confirm: 'change_email',
}

export function hashEmailToken(token: string): Buffer {
  return createHash('sha256').update(token).digest()
}

export function looksLikeEmailToken(token: string): boolean {
  return TOKEN_SHAPE.test(token)
}

function recipientHash(address: string): Buffer {
  return createHash('sha256').update(address.toLowerCase()).digest()
}

export interface EmailServiceDeps {
  db: Pool
  clock: Clock
  queue: JobQueue
  logger: Logger
  metrics: Metrics
  templates: Templates
  config: Pick<Config, 'publicUrl' | 'email'>
  /** HMAC key that turns a token row id into the token (derived from the KEK). */
  tokenSecret: KeyObject
  /** Undefined with the development outbox. */
  smtp: SmtpMailer | undefined
}

export function createEmailService(deps: EmailServiceDeps) {
  const { db, clock, queue, logger, metrics, templates, config, tokenSecret, smtp } = deps
  const throttle = config.email.throttle

  function tokenFor(purpose: TokenPurpose, tokenId: string): string {
    return createHmac('sha256', tokenSecret).update(`${purpose}:${tokenId}`).digest('base64url')
  }

  function linkFor(purpose: TokenPurpose, token: string): string {
    return `${config.publicUrl}${LINK_PATHS[purpose]}?token=${token}`
  }

  async function deliver(job: JobAttempt<EmailJob>): Promise<void> {
    const now = clock.now()
    const message = await emailRepository.findMessage(db, job.data.messageId, now)
    // Already handled (a retry after a crash, a redriven dead letter): the idempotency check.
    if (message === undefined || message.delivered_at !== null || message.skipped_at !== null) return
    const kind = message.kind as MessageKind
    const purpose = purposeOfKind[kind]
    if (message.recipient === null || (purpose !== undefined && message.token_live !== true)) {
      // The link was used, replaced or expired while the message waited: sending it would only confuse.
      await emailRepository.markSkipped(db, message.id, now)
      metrics.emailDeliveries.inc({ result: 'skipped' })
      return
    }
    const to = message.recipient
    try {
      const link = purpose === undefined || message.token_id === null ? undefined : linkFor(purpose, tokenFor(purpose, message.token_id))
      let rendered
      try {
        rendered = templates.render(kind, {
          link,
          expires_in: purpose === undefined ? undefined : describeDuration(config.email.tokenTtlSeconds[purpose]),
          forgot_url: `${config.publicUrl}${FORGOT_PASSWORD_PATH}`,
          public_url: config.publicUrl,
        })
      } catch (err) {
        throw new PermanentJobError(`template: ${(err as Error).message}`)
      }
      if (smtp === undefined) {
        await withTransaction(db, async (tx) => {
          await emailRepository.insertOutbox(tx, { messageId: message.id, recipient: to, subject: rendered.subject, text: rendered.text, html: rendered.html, now })
          await emailRepository.markDelivered(tx, message.id, now)
        })
        logger.warn({ mail: { to, subject: rendered.subject, link: link ?? null } }, 'DEVELOPMENT MAIL OUTBOX, NOT FOR PRODUCTION: message kept in the database (tessera mail list), not sent')
      } else {
        await smtp.send({ messageId: message.id, to, ...rendered })
        await emailRepository.markDelivered(db, message.id, clock.now())
      }
      metrics.emailDeliveries.inc({ result: 'delivered' })
    } catch (err) {
      const dead = job.lastAttempt || err instanceof PermanentJobError
      const reason = err instanceof Error ? err.message : String(err)
      await emailRepository.markFailed(db, message.id, { error: reason, dead, now: clock.now() }).catch(() => undefined)
      metrics.emailDeliveries.inc({ result: dead ? 'dead' : 'failed' })
      logger.warn({ messageId: message.id, kind, attempt: job.attempt, dead, reason }, dead ? 'email dead-lettered' : 'email delivery failed; will retry')
      throw err
    }
  }

  let statsTimer: NodeJS.Timeout | undefined

  return {
    /**
     * Queues a message on the caller's transaction, unless the throttle says no: at most one message of
     * a kind per address and per account every `minIntervalSeconds`, and `perHour` an hour. With
     * `token`, a new one-time token is issued (revoking older ones of its purpose) only when the message
     * is queued: a throttled request never kills the link the user already has.
     * @returns whether it was queued; callers answer the requester identically either way.
     */
    async queueMessage(
      tx: Queryable,
      m: { kind: MessageKind; accountId: string | null; to: string; token?: { email: string } },
    ): Promise<boolean> {
      const now = clock.now()
      const hash = recipientHash(m.to)
      await emailRepository.lockRecipient(tx, m.accountId, hash)
      const recent = await emailRepository.recentMessages(tx, { kind: m.kind, accountId: m.accountId, recipientHash: hash, since: new Date(now.getTime() - 3_600_000) })
      const tooSoon = recent.last !== null && now.getTime() - recent.last.getTime() < throttle.minIntervalSeconds * 1000
      if (tooSoon || recent.count >= throttle.perHour) {
        metrics.emailMessages.inc({ kind: m.kind, result: 'throttled' })
        return false
      }
      let tokenId: string | null = null
      const purpose = purposeOfKind[m.kind]
      if (purpose !== undefined) {
        if (m.token === undefined || m.accountId === null) throw new Error(`queueMessage: ${m.kind} needs a token and an account`)
        tokenId = randomUUID()
        const expiresAt = new Date(now.getTime() + config.email.tokenTtlSeconds[purpose] * 1000)
        await emailRepository.insertToken(tx, { id: tokenId, accountId: m.accountId, purpose, email: m.token.email, hash: hashEmailToken(tokenFor(purpose, tokenId)), now, expiresAt })
      }
      const messageId = randomUUID()
      await emailRepository.insertMessage(tx, { id: messageId, kind: m.kind, accountId: m.accountId, recipient: m.to, recipientHash: hash, tokenId, now })
      await queue.enqueue(tx, QUEUES.email, { messageId } satisfies EmailJob)
      metrics.emailMessages.inc({ kind: m.kind, result: 'queued' })
      return true
    },

    /** Looks a token up without using it (what a confirmation page shows before the POST). */
    async peekToken(token: string, purpose: TokenPurpose): Promise<emailRepository.EmailTokenRow | undefined> {
      if (!looksLikeEmailToken(token)) return undefined
      return emailRepository.findLiveToken(db, hashEmailToken(token), purpose, clock.now())
    },

    /** Uses a token inside the caller's transaction; `undefined` when unknown, used, revoked or expired. */
    async consumeToken(tx: Queryable, token: string, purpose: TokenPurpose): Promise<emailRepository.EmailTokenRow | undefined> {
      if (!looksLikeEmailToken(token)) return undefined
      return emailRepository.consumeToken(tx, hashEmailToken(token), purpose, clock.now())
    },

    /** Kills every live link of the account (password or email changed). */
    async revokeTokens(tx: Queryable, accountId: string): Promise<number> {
      return emailRepository.revokeAccountTokens(tx, accountId, clock.now())
    },

    /** Delivers one message: the worker's job handler. */
    deliver,

    /** Starts delivering from the queue in this process, and refreshing the queue gauges. */
    async startWorker(): Promise<void> {
      await queue.work<EmailJob>(QUEUES.email, deliver)
      const refresh = async () => {
        const s = await emailRepository.deliveryStats(db, clock.now())
        metrics.emailQueueDepth.set(s.pending)
        metrics.emailOldestPendingSeconds.set(s.oldestPendingSeconds)
        metrics.emailDeadLetters.set(s.dead)
      }
      statsTimer = setInterval(() => { refresh().catch(() => undefined) }, 15_000)
      statsTimer.unref()
      await refresh().catch(() => undefined)
    },

    stopWorker(): void {
      if (statsTimer !== undefined) clearInterval(statsTimer)
      statsTimer = undefined
    },

    /** Queue figures for `tessera jobs list` and the metrics. */
    async stats() {
      return emailRepository.deliveryStats(db, clock.now())
    },
  }
}

export type EmailService = ReturnType<typeof createEmailService>
