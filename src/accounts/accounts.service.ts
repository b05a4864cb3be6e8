import { randomUUID } from 'node:crypto'
import * as audit from '../audit/audit.repository.ts'
import type { Clock } from '../clock.ts'
import type { Config } from '../config.ts'
import { withTransaction, type Pool } from '../db/pool.ts'
import { AppError } from '../errors.ts'
import type { Principal } from '../http/authenticate.ts'
import type { RequestContext } from '../http/context.ts'
import type { PasswordHasher } from '../passwords/passwords.hasher.ts'
import { checkPassword, normalizePassword, violationMessages } from '../passwords/passwords.policy.ts'
import type { RevocationList } from '../sessions/revocation.ts'
import * as sessionsRepository from '../sessions/sessions.repository.ts'
import { canonicalEmail, localPart } from './accounts.email.ts'
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
}

function actorOf(p: Principal): string {
  return `account:${p.accountId}`
}

export function createAccountsService(deps: AccountsServiceDeps) {
  const { db, clock, hasher, policy, revocations } = deps

  function parseEmail(input: string): string {
    const email = canonicalEmail(input)
    if (email === undefined) {
      throw new AppError('validation_failed', 'The email address is not valid.', { errors: [{ pointer: '/email', detail: 'is not a valid email address' }] })
    }
    return email
  }

  function enforcePolicy(password: string, email: string, pointer: string): string {
    const violations = checkPassword(password, policy, localPart(email))
    if (violations.length > 0) {
      throw new AppError('password_policy', violations.map((v) => violationMessages[v]).join(' '), {
        violations,
        errors: violations.map((v) => ({ pointer, detail: violationMessages[v] })),
        min_length: policy.minLength,
      })
    }
    return normalizePassword(password)
  }

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
     * Registers an account. The outcome is not revealed: the same answer whether or not the address
     * already has an account, and the same work (one hash) either way.
     * @throws AppError `validation_failed` (email grammar), `password_policy`, `overloaded`.
     */
    async registerAccount(input: { email: string; password: string; displayName?: string | undefined }, ctx: RequestContext): Promise<void> {
      const email = parseEmail(input.email)
      const password = enforcePolicy(input.password, email, '/password')
      const passwordHash = await hasher.hash(password)
      const now = clock.now()
      const id = randomUUID()
      await withTransaction(db, async (tx) => {
        const created = await accountsRepository.insertIfAbsent(tx, { id, email, passwordHash, displayName: input.displayName ?? null, now })
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
        await accountsRepository.anonymise(tx, account.id, now)
        await audit.insertEvent(tx, { type: 'account.deleted', accountId: account.id, actor: actorOf(principal), ...ctx, data: { sessions_revoked: ids.length }, occurredAt: now })
        return ids
      })
      revocations.addSessions(revoked)
    },
  }
}

export type AccountsService = ReturnType<typeof createAccountsService>
