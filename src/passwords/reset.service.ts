/**
 * Password reset by email link (OWASP Forgot Password cheat sheet): the request answers the same
 * whatever the address, and the confirmation is one transaction that sets the password, uses the
 * token, ends every session, kills every other link, writes the audit event and queues the notice.
 */
import { localPart, canonicalEmail } from '../accounts/accounts.email.ts'
import * as accountsRepository from '../accounts/accounts.repository.ts'
import * as audit from '../audit/audit.repository.ts'
import type { Clock } from '../clock.ts'
import type { Config } from '../config.ts'
import { withTransaction, type Pool } from '../db/pool.ts'
import type { EmailService } from '../email/email.service.ts'
import { AppError } from '../errors.ts'
import type { RequestContext } from '../http/context.ts'
import { withMinimumDuration } from '../http/timing.ts'
import type { RateLimits } from '../limits/limits.service.ts'
import type { RevocationList } from '../sessions/revocation.ts'
import * as sessionsRepository from '../sessions/sessions.repository.ts'
import type { PasswordHasher } from './passwords.hasher.ts'
import { enforcePasswordPolicy } from './passwords.policy.ts'

export interface ResetServiceDeps {
  db: Pool
  clock: Clock
  hasher: PasswordHasher
  policy: Config['passwords']
  revocations: RevocationList
  email: EmailService
  /** TESSERA_ENUMERATION_FLOOR_MS. */
  floorMs: number
  limits: RateLimits
}

export function createResetService(deps: ResetServiceDeps) {
  const { db, clock, hasher, policy, revocations, email } = deps
  const invalidLink = () => new AppError('confirmation_invalid', 'The link is invalid, expired or already used. Ask for a new one.')

  return {
    /**
     * Sends a reset link to the account's address. The answer is the same for unknown, unverified,
     * verified and throttled cases, after the same time (TESSERA_ENUMERATION_FLOOR_MS). A locked account
     * can always reset (the lock guards the password, not the mailbox).
     */
    async requestPasswordReset(input: { email: string }, ctx: RequestContext): Promise<void> {
      await withMinimumDuration(deps.floorMs, async () => {
        const address = canonicalEmail(input.email)
        if (address === undefined) return
        const account = await accountsRepository.findByEmail(db, address)
        if (account === undefined || account.status !== 'active') return
        await withTransaction(db, async (tx) => {
          const queued = await email.queueMessage(tx, { kind: 'reset_password', accountId: account.id, to: account.email, token: { email: account.email } })
          await audit.insertEvent(tx, { type: 'password.reset_requested', accountId: account.id, actor: 'anonymous', ...ctx, data: { queued }, occurredAt: clock.now() })
        })
      })
    },

    /** Whether a reset link still works (the page's GET shows the form only then); uses nothing. */
    async checkResetToken(token: string): Promise<boolean> {
      return (await email.peekToken(token, 'reset_password')) !== undefined
    },

    /**
     * Sets a new password from a reset link. Of two concurrent confirmations of one link exactly one
     * wins: the token is used by a single conditional UPDATE inside the transaction. The link also
     * proves control of the address, so the address becomes verified (an unverified squatter's
     * password and sessions are gone).
     * @throws AppError `confirmation_invalid`, `password_policy`, `overloaded`.
     */
    async confirmPasswordReset(input: { token: string; newPassword: string }, ctx: RequestContext): Promise<void> {
      // Check the link before paying for a hash, then use it for good inside the transaction.
      const peeked = await email.peekToken(input.token, 'reset_password')
      if (peeked === undefined) throw invalidLink()
      const password = enforcePasswordPolicy(input.newPassword, policy, localPart(peeked.email), '/new_password')
      const passwordHash = await hasher.hash(password)
      const revoked = await withTransaction(db, async (tx) => {
        const token = await email.consumeToken(tx, input.token, 'reset_password')
        if (token === undefined) throw invalidLink()
        const account = await accountsRepository.findByIdForUpdate(tx, token.account_id)
        if (account === undefined || account.status !== 'active' || account.email !== token.email) throw invalidLink()
        const now = clock.now()
        await accountsRepository.resetPassword(tx, account.id, passwordHash, now)
        const ids = await sessionsRepository.revokeAccountSessions(tx, account.id, 'password_reset', now)
        await email.revokeTokens(tx, account.id)
        await email.queueMessage(tx, { kind: 'password_changed', accountId: account.id, to: account.email })
        // Last: the audit append holds the chain lock until commit (see audit.repository.ts).
        await audit.insertEvent(tx, { type: 'password.reset', accountId: account.id, actor: `account:${account.id}`, ...ctx, data: { sessions_revoked: ids.length }, occurredAt: now })
        return ids
      })
      revocations.addSessions(revoked)
      // The owner proved control of the address: the login failure budget of the account starts over
      // (its lock and failure count were cleared in the transaction).
      await deps.limits.forgetAccount('login', peeked.email)
    },
  }
}

export type ResetService = ReturnType<typeof createResetService>
