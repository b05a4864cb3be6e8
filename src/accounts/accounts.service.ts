import { randomUUID } from 'node:crypto'
import * as audit from '../audit/audit.repository.ts'
import type { Clock } from '../clock.ts'
import type { Config } from '../config.ts'
import { withTransaction, type Pool } from '../db/pool.ts'
import { AppError } from '../errors.ts'
import type { Principal } from '../http/authenticate.ts'
import type { RequestContext } from '../http/context.ts'
import { withMinimumDuration } from '../http/timing.ts'
import type { PasswordHasher } from '../passwords/passwords.hasher.ts'
import { isUniqueViolation } from '../db/errors.ts'
import type { EmailService } from '../email/email.service.ts'
import { enforcePasswordPolicy, normalizePassword } from '../passwords/passwords.policy.ts'
import type { RevocationList } from '../sessions/revocation.ts'
import * as sessionsRepository from '../sessions/sessions.repository.ts'
import { canonicalEmail, localPart } from './accounts.email.ts'
import * as emailRepository from '../email/email.repository.ts'
import * as accountsRepository from './accounts.repository.ts'
import type { AccountRow } from './accounts.repository.ts'

/** What a user may see of their own account. */
export interface AccountView {
  id: string
  email: string
  email_verified: boolean
  display_name: string | null
  created_at: string
  updated_at: string
  password_changed_at: string
  last_login_at: string | null
  last_login_ip: string | null
  failed_login_attempts: number
  locked_until: string | null
}

export function toAccountView(a: AccountRow): AccountView {
  return {
    id: a.id,
    email: a.email,
    email_verified: a.email_verified_at !== null,
    display_name: a.display_name,
    created_at: a.created_at.toISOString(),
    updated_at: a.updated_at.toISOString(),
    password_changed_at: a.password_changed_at.toISOString(),
    last_login_at: a.last_login_at?.toISOString() ?? null,
    last_login_ip: a.last_login_ip,
    failed_login_attempts: a.failed_login_attempts,
    locked_until: a.locked_until?.toISOString() ?? null,
  }
}

export interface AccountsServiceDeps {
  db: Pool
  clock: Clock
  hasher: PasswordHasher
  policy: Config['passwords']
  revocations: RevocationList
  email: EmailService
  /** TESSERA_ENUMERATION_FLOOR_MS. */
  floorMs: number
  /** Called once per registration request (metrics). */
  onRegistration?: (result: 'created' | 'duplicate') => void
}

function actorOf(p: Principal): string {
  return `account:${p.accountId}`
}

export function createAccountsService(deps: AccountsServiceDeps) {
  const { db, clock, hasher, policy, revocations, email } = deps

  function parseEmail(input: string): string {
    const email = canonicalEmail(input)
    if (email === undefined) {
      throw new AppError('validation_failed', 'The email address is not valid.', { errors: [{ pointer: '/email', detail: 'is not a valid email address' }] })
    }
    return email
  }

  function enforcePolicy(password: string, address: string, pointer: string): string {
    return enforcePasswordPolicy(password, policy, localPart(address), pointer)
  }

  const invalidLink = () => new AppError('confirmation_invalid', 'The link is invalid, expired or already used. Ask for a new one.')

  /** Loads the caller's account, re-checking the session in the same primary-key read. */
  async function current(principal: Principal): Promise<AccountRow> {
    const account = await accountsRepository.findBySession(db, principal.accountId, principal.sessionId, clock.now())
    if (account === undefined) throw new AppError('invalid_token', 'The session of this access token has ended.')
    return account
  }

  async function requirePassword(account: AccountRow, password: string): Promise<void> {
    if (Buffer.byteLength(password, 'utf8') > policy.maxBytes) throw new AppError('current_password_invalid', 'The current password is not correct.')
    const { ok } = await hasher.verify(account.password_hash, normalizePassword(password))
    if (!ok) throw new AppError('current_password_invalid', 'The current password is not correct.')
  }

  return {
    /**
     * Registers an account and queues its verification message, in one transaction. The outcome is not
     * revealed: the same answer whether or not the address already has an account, and the same work
     * (one hash) either way; an existing account's owner gets a notice instead (throttled).
     * @throws AppError `validation_failed` (email grammar), `password_policy`, `overloaded`.
     */
    async registerAccount(input: { email: string; password: string; displayName?: string | undefined }, ctx: RequestContext): Promise<void> {
      const address = parseEmail(input.email)
      const password = enforcePolicy(input.password, address, '/password')
      const passwordHash = await hasher.hash(password)
      const now = clock.now()
      const id = randomUUID()
      await withTransaction(db, async (tx) => {
        const created = await accountsRepository.insertIfAbsent(tx, { id, email: address, passwordHash, displayName: input.displayName ?? null, now })
        if (created) {
          await email.queueMessage(tx, { kind: 'verify_email', accountId: id, to: address, token: { email: address } })
        } else {
          const owner = await accountsRepository.findByEmail(tx, address)
          if (owner !== undefined && owner.status === 'active') {
            await email.queueMessage(tx, { kind: 'registration_attempt', accountId: owner.id, to: owner.email })
          }
        }
        deps.onRegistration?.(created ? 'created' : 'duplicate')
        await audit.insertEvent(tx, {
          type: created ? 'account.registered' : 'account.registration_duplicate',
          accountId: created ? id : null,
          actor: created ? `account:${id}` : 'anonymous',
          ...ctx,
          occurredAt: now,
        })
      })
    },

    /** @throws AppError `invalid_token` when the session has ended. */
    async getAccount(principal: Principal): Promise<AccountView> {
      return toAccountView(await current(principal))
    },

    /** Changes the display name (the only field a user edits here). */
    async updateProfile(principal: Principal, input: { displayName: string | null }, ctx: RequestContext): Promise<AccountView> {
      await current(principal)
      const now = clock.now()
      const updated = await withTransaction(db, async (tx) => {
        const row = await accountsRepository.updateDisplayName(tx, principal.accountId, input.displayName, now)
        await audit.insertEvent(tx, { type: 'account.updated', accountId: principal.accountId, actor: actorOf(principal), ...ctx, data: { fields: ['display_name'] }, occurredAt: now })
        return row
      })
      if (updated === undefined) throw new AppError('invalid_token', 'The session of this access token has ended.')
      return toAccountView(updated)
    },

    /**
     * Changes the password after checking the current one; every other session of the account ends.
     * @throws AppError `current_password_invalid`, `password_policy`.
     */
    async changePassword(principal: Principal, input: { currentPassword: string; newPassword: string }, ctx: RequestContext): Promise<void> {
      const account = await current(principal)
      await requirePassword(account, input.currentPassword)
      const password = enforcePolicy(input.newPassword, account.email, '/new_password')
      const passwordHash = await hasher.hash(password)
      const now = clock.now()
      const revoked = await withTransaction(db, async (tx) => {
        await accountsRepository.updatePassword(tx, account.id, passwordHash, now)
        const ids = await sessionsRepository.revokeAccountSessions(tx, account.id, 'password_changed', now, principal.sessionId)
        await email.revokeTokens(tx, account.id)
        await email.queueMessage(tx, { kind: 'password_changed', accountId: account.id, to: account.email })
        // Last: the audit append holds the chain lock until commit (see audit.repository.ts).
        await audit.insertEvent(tx, { type: 'password.changed', accountId: account.id, actor: actorOf(principal), ...ctx, data: { sessions_revoked: ids.length }, occurredAt: now })
        return ids
      })
      revocations.addSessions(revoked)
    },

    /**
     * Deletes the caller's account after checking the password. Personal data is erased at once
     * (email, name, password hash, login IP, session IPs and user agents); a tombstone row keeps the id
     * so that audit events stay linkable and the ended sessions stay known as revoked. The address is
     * free to register again.
     * @throws AppError `current_password_invalid`.
     */
    async deleteAccount(principal: Principal, input: { password: string }, ctx: RequestContext): Promise<void> {
      const account = await current(principal)
      await requirePassword(account, input.password)
      const now = clock.now()
      const revoked = await withTransaction(db, async (tx) => {
        const ids = await sessionsRepository.revokeAccountSessions(tx, account.id, 'account_deleted', now)
        await emailRepository.forgetAccount(tx, account.id)
        await accountsRepository.anonymise(tx, account.id, now)
        await audit.insertEvent(tx, { type: 'account.deleted', accountId: account.id, actor: actorOf(principal), ...ctx, data: { sessions_revoked: ids.length }, occurredAt: now })
        return ids
      })
      revocations.addSessions(revoked)
    },
    /**
     * Sends a new verification link to an unverified account. Unknown and verified addresses get
     * nothing, and neither does a throttled request; the caller gets the same answer in every case,
     * after the same time (TESSERA_ENUMERATION_FLOOR_MS).
     */
    async requestEmailVerification(input: { email: string }, ctx: RequestContext): Promise<void> {
      await withMinimumDuration(deps.floorMs, async () => {
        const address = canonicalEmail(input.email)
        if (address === undefined) return
        const account = await accountsRepository.findByEmail(db, address)
        if (account === undefined || account.status !== 'active' || account.email_verified_at !== null) return
        await withTransaction(db, async (tx) => {
          const queued = await email.queueMessage(tx, { kind: 'verify_email', accountId: account.id, to: account.email, token: { email: account.email } })
          await audit.insertEvent(tx, { type: 'email.verification_requested', accountId: account.id, actor: 'anonymous', ...ctx, data: { queued }, occurredAt: clock.now() })
        })
      })
    },

    /**
     * Verifies the address a verification link was sent to. The token must still match the account's
     * current address (a link for an old address does nothing).
     * @throws AppError `confirmation_invalid`.
     */
    async confirmEmailVerification(input: { token: string }, ctx: RequestContext): Promise<void> {
      await withTransaction(db, async (tx) => {
        const token = await email.consumeToken(tx, input.token, 'verify_email')
        if (token === undefined) throw invalidLink()
        const account = await accountsRepository.findByIdForUpdate(tx, token.account_id)
        if (account === undefined || account.status !== 'active' || account.email !== token.email) throw invalidLink()
        const now = clock.now()
        await accountsRepository.markEmailVerified(tx, account.id, now)
        await audit.insertEvent(tx, { type: 'email.verified', accountId: account.id, actor: `account:${account.id}`, ...ctx, occurredAt: now })
      })
    },

    /**
     * Starts an email change: checks the password, sends a confirmation link to the new address and a
     * notice to the current one. Nothing changes until the link is used. An address already taken gets
     * no message, and the caller the same answer.
     * @throws AppError `current_password_invalid`, `validation_failed`.
     */
    async requestEmailChange(principal: Principal, input: { newEmail: string; password: string }, ctx: RequestContext): Promise<void> {
      const account = await current(principal)
      await requirePassword(account, input.password)
      const address = canonicalEmail(input.newEmail)
      if (address === undefined) {
        throw new AppError('validation_failed', 'The email address is not valid.', { errors: [{ pointer: '/new_email', detail: 'is not a valid email address' }] })
      }
      if (address === account.email) {
        throw new AppError('validation_failed', 'This is already the address of the account.', { errors: [{ pointer: '/new_email', detail: 'is the current address' }] })
      }
      await withTransaction(db, async (tx) => {
        const taken = await accountsRepository.findByEmail(tx, address)
        const queued = taken === undefined
          ? await email.queueMessage(tx, { kind: 'email_change_confirm', accountId: account.id, to: address, token: { email: address } })
          : false
        await email.queueMessage(tx, { kind: 'email_change_notice', accountId: account.id, to: account.email })
        await audit.insertEvent(tx, { type: 'email.change_requested', accountId: account.id, actor: actorOf(principal), ...ctx, data: { queued }, occurredAt: clock.now() })
      })
    },

    /**
     * Completes an email change from the link sent to the new address: the address changes and is
     * verified, and every other outstanding link of the account dies.
     * @throws AppError `confirmation_invalid`, `email_taken` (another account took the address meanwhile).
     */
    async confirmEmailChange(input: { token: string }, ctx: RequestContext): Promise<void> {
      try {
        await withTransaction(db, async (tx) => {
          const token = await email.consumeToken(tx, input.token, 'change_email')
          if (token === undefined) throw invalidLink()
          const account = await accountsRepository.findByIdForUpdate(tx, token.account_id)
          if (account === undefined || account.status !== 'active') throw invalidLink()
          const now = clock.now()
          await accountsRepository.changeEmail(tx, account.id, token.email, now)
          await email.revokeTokens(tx, account.id)
          await audit.insertEvent(tx, { type: 'email.changed', accountId: account.id, actor: `account:${account.id}`, ...ctx, occurredAt: now })
        })
      } catch (err) {
        if (isUniqueViolation(err)) throw new AppError('email_taken', 'Another account now uses this address; the change was not made.')
        throw err
      }
    },
  }
}

export type AccountsService = ReturnType<typeof createAccountsService>
