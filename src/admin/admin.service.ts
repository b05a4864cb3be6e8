/**
 * The admin API's service: listing and inspecting accounts, disabling and enabling them, granting and
 * withdrawing roles, deleting accounts, ending their sessions, and reading the audit trail. Plus
 * {@link createOperatorAccount}, the CLI's way to create the first administrator.
 *
 * Every change is written with its audit event (actor `account:<admin id>`) in one transaction, and
 * every change re-checks the acting administrator inside that transaction: the `roles` claim of an
 * access token is only as fresh as the token, and another instance may not have heard of a revocation
 * yet (TESSERA_REVOCATION_POLL_MS without Redis). Reads re-check too, with one indexed lookup.
 */
import { randomBytes, randomUUID } from 'node:crypto'
import * as audit from '../audit/audit.repository.ts'
import { canonicalEmail, localPart } from '../accounts/accounts.email.ts'
import * as accountsRepository from '../accounts/accounts.repository.ts'
import type { Clock } from '../clock.ts'
import { withTransaction, type Pool, type Queryable } from '../db/pool.ts'
import * as emailRepository from '../email/email.repository.ts'
import type { EmailService } from '../email/email.service.ts'
import { AppError } from '../errors.ts'
import type { Principal } from '../http/authenticate.ts'
import type { RequestContext } from '../http/context.ts'
import type { PasswordHasher } from '../passwords/passwords.hasher.ts'
import { checkPassword, enforcePasswordPolicy, type PasswordPolicy } from '../passwords/passwords.policy.ts'
import type { RevocationList } from '../sessions/revocation.ts'
import * as sessionsRepository from '../sessions/sessions.repository.ts'
import * as adminRepository from './admin.repository.ts'
import type { AdminAccountRow, AuditEventRow } from './admin.repository.ts'

/** The role that opens the admin API. */
export const ADMIN_ROLE = 'admin'

export type AccountStatus = 'active' | 'disabled' | 'deleted'

/** What an administrator sees of an account: profile, state, roles and the security bookkeeping. */
export interface AdminUserView {
  id: string
  /** Null for a deleted account (its tombstone keeps no address). */
  email: string | null
  email_verified: boolean
  display_name: string | null
  status: AccountStatus
  roles: string[]
  created_at: string
  updated_at: string
  last_login_at: string | null
  last_login_ip: string | null
  failed_login_attempts: number
  locked_until: string | null
  /** True while `locked_until` is in the future: logins are refused whatever the password. */
  locked: boolean
  password_changed_at: string
}

export interface AdminUserDetail extends AdminUserView {
  /** Sessions that can still be refreshed (as in the user's own session list). */
  live_sessions: number
}

export interface AuditEventView extends Omit<AuditEventRow, 'occurred_at'> {
  occurred_at: string
}

function toUserView(a: AdminAccountRow, now: Date): AdminUserView {
  return {
    id: a.id,
    email: a.status === 'deleted' ? null : a.email,
    email_verified: a.email_verified_at !== null,
    display_name: a.display_name,
    status: a.status,
    roles: a.roles,
    created_at: a.created_at.toISOString(),
    updated_at: a.updated_at.toISOString(),
    last_login_at: a.last_login_at?.toISOString() ?? null,
    last_login_ip: a.last_login_ip,
    failed_login_attempts: a.failed_login_attempts,
    locked_until: a.locked_until?.toISOString() ?? null,
    locked: a.locked_until !== null && a.locked_until > now,
    password_changed_at: a.password_changed_at.toISOString(),
  }
}

function toEventView(e: AuditEventRow): AuditEventView {
  return {
    id: e.id,
    occurred_at: e.occurred_at.toISOString(),
    type: e.type,
    account_id: e.account_id,
    actor: e.actor,
    ip: e.ip,
    user_agent: e.user_agent,
    request_id: e.request_id,
    data: e.data,
  }
}

function invalidQuery(pointer: string, detail: string): AppError {
  return new AppError('validation_failed', `The ${pointer.split('/').pop() ?? 'query'} parameter is not valid.`, { errors: [{ pointer, detail }] })
}

const CREATED_AT_KEY = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3})\d{3}Z$/
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const EVENT_ID = /^[1-9][0-9]{0,18}$/
const MAX_BIGINT = 2n ** 63n - 1n

/** Strict base64url: the text must be exactly what encoding its decoded bytes gives back (no padding, no slack bits). */
function decodeBase64url(cursor: string): string | undefined {
  const text = Buffer.from(cursor, 'base64url').toString('utf8')
  return Buffer.from(text, 'utf8').toString('base64url') === cursor ? text : undefined
}

/** The users-list cursor: base64url of `<created_at, UTC, microseconds>|<id>` of the last row returned. */
export function encodeUserCursor(key: { createdAt: string; id: string }): string {
  return Buffer.from(`${key.createdAt}|${key.id}`, 'utf8').toString('base64url')
}

/**
 * Parses a users-list cursor, accepting only what {@link encodeUserCursor} produces (a real date, a
 * lower-case uuid), so nothing malformed reaches PostgreSQL as a cast error.
 */
export function decodeUserCursor(cursor: string): { createdAt: string; id: string } | undefined {
  const text = decodeBase64url(cursor)
  if (text === undefined) return undefined
  const [createdAt, id, ...rest] = text.split('|')
  if (createdAt === undefined || id === undefined || rest.length > 0 || !UUID.test(id)) return undefined
  const match = CREATED_AT_KEY.exec(createdAt)
  // Round-trips through Date, so "2026-02-30" or hour 25 are refused rather than normalised.
  if (match?.[1] === undefined || Number.isNaN(Date.parse(`${match[1]}Z`)) || new Date(`${match[1]}Z`).toISOString() !== `${match[1]}Z`) return undefined
  return { createdAt, id }
}

/** The audit-list cursor: base64url of the decimal id of the last event returned. */
export function encodeEventCursor(id: number | bigint): string {
  return Buffer.from(String(id), 'utf8').toString('base64url')
}

/** Parses an audit-list cursor: only a canonical encoding of an id in PostgreSQL's bigint range. */
export function decodeEventCursor(cursor: string): bigint | undefined {
  const text = decodeBase64url(cursor)
  if (text === undefined || !EVENT_ID.test(text)) return undefined
  const id = BigInt(text)
  return id <= MAX_BIGINT ? id : undefined
}

/** Roles are stored sorted and without repeats, so that "did they change?" is a plain comparison. */
function normaliseRoles(roles: readonly string[]): string[] {
  return [...new Set(roles)].sort()
}

function sameRoles(a: readonly string[], b: readonly string[]): boolean {
  const x = normaliseRoles(a)
  const y = normaliseRoles(b)
  return x.length === y.length && x.every((r, i) => r === y[i])
}

export interface AdminServiceDeps {
  db: Pool
  clock: Clock
  revocations: RevocationList
  email: EmailService
}

/** The admin API's operations; each one takes the calling administrator's {@link Principal}. */
export function createAdminService(deps: AdminServiceDeps) {
  const { db, clock, revocations, email } = deps

  const notFound = () => new AppError('not_found', 'No account has this id.')
  const sessionEnded = () => new AppError('invalid_token', 'The session of this access token has ended.')
  const notAdmin = () => new AppError('forbidden', 'This operation needs the admin role.')

  /** Re-checks outside a transaction (reads): the caller's session is live and the account still an active admin. */
  async function requireAdmin(principal: Principal): Promise<void> {
    const account = await accountsRepository.findBySession(db, principal.accountId, principal.sessionId, clock.now())
    if (account === undefined) throw sessionEnded()
    if (!account.roles.includes(ADMIN_ROLE)) throw notAdmin()
  }

  /**
   * Inside a change's transaction: locks the administrator's and the target's rows (in id order),
   * re-checks the administrator, and returns the target's locked state.
   * @throws AppError `invalid_token`, `forbidden`, `not_found`.
   */
  async function lockForChange(tx: Queryable, principal: Principal, targetId: string, now: Date): Promise<{ status: AccountStatus; roles: string[] }> {
    const rows = await adminRepository.lockAccounts(tx, [principal.accountId, targetId])
    const actor = rows.find((r) => r.id === principal.accountId)
    if (actor?.status !== 'active' || !(await sessionsRepository.isSessionLive(tx, principal.sessionId, now))) throw sessionEnded()
    if (!actor.roles.includes(ADMIN_ROLE)) throw notAdmin()
    const target = rows.find((r) => r.id === targetId)
    if (target === undefined) throw notFound()
    return { status: target.status as AccountStatus, roles: target.roles }
  }

  const actorOf = (principal: Principal) => `account:${principal.accountId}`
  // Ids arrive in either case (RFC 9562 uuids are case-insensitive on input); compared lower-cased, as
  // PostgreSQL prints them, so "is this the administrator's own account?" cannot be dodged with capitals.

  async function detail(id: string): Promise<AdminUserDetail> {
    const now = clock.now()
    const row = await adminRepository.findAccount(db, id)
    if (row === undefined) throw notFound()
    return { ...toUserView(row, now), live_sessions: await adminRepository.countLiveSessions(db, id, now) }
  }

  return {
    /**
     * Lists accounts newest first, a page at a time. `emailPrefix` is canonicalised like an address
     * (trimmed, NFKC, lower-cased) and matched literally (`%` and `_` are not wildcards); deleted
     * accounts have no address, so a prefix never matches them.
     * @throws AppError `validation_failed` (a cursor this service did not produce, an empty prefix),
     *   `invalid_token`, `forbidden`.
     */
    async listUsers(principal: Principal, query: { emailPrefix?: string | undefined; status?: AccountStatus | undefined; limit: number; cursor?: string | undefined }): Promise<{ users: AdminUserView[]; next_cursor: string | null }> {
      let emailPrefix: string | undefined
      if (query.emailPrefix !== undefined) {
        emailPrefix = query.emailPrefix.trim().normalize('NFKC').toLowerCase()
        if (emailPrefix.length === 0) throw invalidQuery('/querystring/email_prefix', 'must not be blank')
      }
      const after = query.cursor === undefined ? undefined : decodeUserCursor(query.cursor)
      if (query.cursor !== undefined && after === undefined) throw invalidQuery('/querystring/cursor', 'is not a cursor from this list')
      await requireAdmin(principal)
      const rows = await adminRepository.listAccounts(db, { emailPrefix, status: query.status, after, limit: query.limit + 1 })
      const page = rows.slice(0, query.limit)
      const last = page.at(-1)
      const now = clock.now()
      return {
        users: page.map((r) => toUserView(r, now)),
        next_cursor: rows.length > query.limit && last !== undefined ? encodeUserCursor({ createdAt: last.created_at_key, id: last.id }) : null,
      }
    },

    /**
     * The admin view of one account, deleted ones included (as tombstones).
     * @throws AppError `not_found`, `invalid_token`, `forbidden`.
     */
    async getUser(principal: Principal, rawId: string): Promise<AdminUserDetail> {
      await requireAdmin(principal)
      return detail(rawId.toLowerCase())
    },

    /**
     * Changes an account's status (`active` / `disabled`) and/or roles. Disabling ends every session of
     * the account and revokes its outstanding email links; changing roles ends every session too,
     * because roles travel inside access tokens: a demoted administrator's tokens stop working at once
     * rather than at their expiry. Sessions end in the same transaction as the change, and this
     * instance's revocation list learns of them right after the commit (the others through Redis or
     * their next poll). A request that changes nothing writes nothing.
     * @throws AppError `conflict` (disabling oneself or withdrawing one's own admin role, so the last
     *   administrator cannot lock everyone out; a deleted account), `not_found`, `invalid_token`, `forbidden`.
     */
    async updateUser(principal: Principal, rawId: string, input: { status?: 'active' | 'disabled' | undefined; roles?: readonly string[] | undefined }, ctx: RequestContext): Promise<AdminUserDetail> {
      const id = rawId.toLowerCase()
      const now = clock.now()
      const revoked = await withTransaction(db, async (tx) => {
        const target = await lockForChange(tx, principal, id, now)
        if (target.status === 'deleted') throw new AppError('conflict', 'A deleted account cannot be changed.')
        const self = id === principal.accountId
        const status = input.status ?? target.status
        const roles = input.roles === undefined ? normaliseRoles(target.roles) : normaliseRoles(input.roles)
        if (self && status !== 'active') throw new AppError('conflict', 'Administrators cannot disable their own account.')
        if (self && !roles.includes(ADMIN_ROLE)) throw new AppError('conflict', 'Administrators cannot withdraw their own admin role; another administrator can.')
        const changes: Record<string, { from: unknown; to: unknown }> = {}
        if (status !== target.status) changes.status = { from: target.status, to: status }
        if (!sameRoles(roles, target.roles)) changes.roles = { from: normaliseRoles(target.roles), to: roles }
        if (Object.keys(changes).length === 0) return []
        await adminRepository.setStatusAndRoles(tx, id, { status, roles, now })
        const disabling = changes.status !== undefined && status === 'disabled'
        const ids = disabling || changes.roles !== undefined
          ? await sessionsRepository.revokeAccountSessions(tx, id, disabling ? 'account_disabled' : 'roles_changed', now)
          : []
        if (disabling) await email.revokeTokens(tx, id)
        await audit.insertEvent(tx, { type: 'admin.user_updated', accountId: id, actor: actorOf(principal), ...ctx, data: { changes, sessions_revoked: ids.length }, occurredAt: now })
        return ids
      })
      revocations.addSessions(revoked)
      return detail(id)
    },

    /**
     * Deletes an account the way its owner would (`deleteMe`): every session ends, personal data is
     * erased at once, and a tombstone keeps the id for the audit trail. Its roles go too.
     * @throws AppError `conflict` (oneself: use `deleteMe`; an account already deleted), `not_found`,
     *   `invalid_token`, `forbidden`.
     */
    async deleteUser(principal: Principal, rawId: string, ctx: RequestContext): Promise<void> {
      const id = rawId.toLowerCase()
      const now = clock.now()
      const revoked = await withTransaction(db, async (tx) => {
        const target = await lockForChange(tx, principal, id, now)
        if (id === principal.accountId) throw new AppError('conflict', 'Administrators cannot delete their own account here; use DELETE /v1/me.')
        if (target.status === 'deleted') throw new AppError('conflict', 'The account is already deleted.')
        const ids = await sessionsRepository.revokeAccountSessions(tx, id, 'account_deleted', now)
        await emailRepository.forgetAccount(tx, id)
        await accountsRepository.anonymise(tx, id, now)
        await adminRepository.clearRoles(tx, id, now)
        await audit.insertEvent(tx, { type: 'admin.user_deleted', accountId: id, actor: actorOf(principal), ...ctx, data: { previous_status: target.status, previous_roles: target.roles, sessions_revoked: ids.length }, occurredAt: now })
        return ids
      })
      revocations.addSessions(revoked)
    },

    /**
     * Ends every session of an account (the administrator's own included, when it is theirs); the
     * account stays usable: its owner can log in again. Returns how many sessions ended.
     * @throws AppError `not_found`, `invalid_token`, `forbidden`.
     */
    async revokeUserSessions(principal: Principal, rawId: string, ctx: RequestContext): Promise<number> {
      const id = rawId.toLowerCase()
      const now = clock.now()
      const revoked = await withTransaction(db, async (tx) => {
        await lockForChange(tx, principal, id, now)
        const ids = await sessionsRepository.revokeAccountSessions(tx, id, 'revoked_by_admin', now)
        await audit.insertEvent(tx, { type: 'admin.sessions_revoked', accountId: id, actor: actorOf(principal), ...ctx, data: { sessions_revoked: ids.length }, occurredAt: now })
        return ids
      })
      revocations.addSessions(revoked)
      return revoked.length
    },

    /**
     * Audit events newest first, a page at a time. `since` is inclusive, `until` exclusive.
     * @throws AppError `validation_failed` (a foreign cursor, an unparseable time, `since` after
     *   `until`), `invalid_token`, `forbidden`.
     */
    async listAuditEvents(principal: Principal, query: { accountId?: string | undefined; type?: string | undefined; since?: string | undefined; until?: string | undefined; limit: number; cursor?: string | undefined }): Promise<{ events: AuditEventView[]; next_cursor: string | null }> {
      const time = (value: string | undefined, name: string): Date | undefined => {
        if (value === undefined) return undefined
        // The schema checked RFC 3339; a few of its forms (a leap second) are not instants JS can hold.
        const t = new Date(value)
        if (Number.isNaN(t.getTime())) throw invalidQuery(`/querystring/${name}`, 'is not a time this service can use')
        return t
      }
      const since = time(query.since, 'since')
      const until = time(query.until, 'until')
      if (since !== undefined && until !== undefined && since > until) throw invalidQuery('/querystring/since', 'must not be after until')
      const beforeId = query.cursor === undefined ? undefined : decodeEventCursor(query.cursor)
      if (query.cursor !== undefined && beforeId === undefined) throw invalidQuery('/querystring/cursor', 'is not a cursor from this list')
      await requireAdmin(principal)
      const rows = await adminRepository.listAuditEvents(db, { accountId: query.accountId?.toLowerCase(), type: query.type, since, until, beforeId, limit: query.limit + 1 })
      const page = rows.slice(0, query.limit)
      const last = page.at(-1)
      return {
        events: page.map(toEventView),
        next_cursor: rows.length > query.limit && last !== undefined ? encodeEventCursor(last.id) : null,
      }
    },
  }
}

export type AdminService = ReturnType<typeof createAdminService>

/** What {@link createOperatorAccount} needs: no revocation list, no email service (the CLI has neither). */
export interface OperatorAccountDeps {
  db: Pool
  clock: Clock
  hasher: PasswordHasher
  policy: PasswordPolicy
}

/** A random password that passes the policy: 192 bits, base64url (32 characters). */
function generatePassword(policy: PasswordPolicy, local: string): string {
  for (;;) {
    const candidate = randomBytes(24).toString('base64url')
    // Redrawn in the (rare) case the random text happens to contain the address's local part.
    if (checkPassword(candidate, policy, local).length === 0) return candidate
  }
}

/**
 * Creates an active account with a verified address (the operator vouches for it), for `tessera users
 * create`: the way to bootstrap the first administrator, who cannot be made through the API. Without a
 * password, a strong one is generated and returned (the caller shows it once). Audited with `actor`.
 * @throws AppError `validation_failed` (email grammar), `password_policy`, `conflict` (the address has an account).
 */
export async function createOperatorAccount(
  deps: OperatorAccountDeps,
  input: { email: string; password?: string | undefined; roles: readonly string[] },
  actor: string,
): Promise<{ id: string; email: string; roles: string[]; generatedPassword: string | undefined }> {
  const address = canonicalEmail(input.email)
  if (address === undefined) throw new AppError('validation_failed', 'The email address is not valid.')
  const generatedPassword = input.password === undefined ? generatePassword(deps.policy, localPart(address)) : undefined
  const password = enforcePasswordPolicy(input.password ?? generatedPassword ?? '', deps.policy, localPart(address), '/password')
  const passwordHash = await deps.hasher.hash(password)
  const id = randomUUID()
  const roles = normaliseRoles(input.roles)
  const now = deps.clock.now()
  await withTransaction(deps.db, async (tx) => {
    const created = await adminRepository.insertVerifiedAccount(tx, { id, email: address, passwordHash, roles, now })
    if (!created) throw new AppError('conflict', `An account with the address ${address} already exists.`)
    await audit.insertEvent(tx, { type: 'admin.user_created', accountId: id, actor, ip: null, userAgent: null, requestId: null, data: { roles, email_verified: true, password: generatedPassword === undefined ? 'given' : 'generated' }, occurredAt: now })
  })
  return { id, email: address, roles, generatedPassword }
}
