import { randomUUID, type KeyObject } from 'node:crypto'
import * as accountsRepository from '../accounts/accounts.repository.ts'
import { canonicalEmail } from '../accounts/accounts.email.ts'
import * as audit from '../audit/audit.repository.ts'
import type { Clock } from '../clock.ts'
import type { Config } from '../config.ts'
import { withTransaction, type Pool } from '../db/pool.ts'
import { AppError, OAuthError } from '../errors.ts'
import type { Principal } from '../http/authenticate.ts'
import type { RequestContext } from '../http/context.ts'
import type { LockoutPolicy } from '../accounts/accounts.repository.ts'
import type { EmailService } from '../email/email.service.ts'
import type { Metrics } from '../observability/metrics.ts'
import type { PasswordHasher } from '../passwords/passwords.hasher.ts'
import { normalizePassword } from '../passwords/passwords.policy.ts'
import type { AccessTokens } from '../tokens/access-tokens.ts'
import { deriveChildToken, generateRefreshToken, hashToken, looksLikeRefreshToken } from '../tokens/refresh-tokens.ts'
import type { RevocationList } from './revocation.ts'
import { deviceSummary } from './sessions.device.ts'
import * as sessionsRepository from './sessions.repository.ts'

/** RFC 6749 §5.1 token response. */
export interface TokenPair {
  access_token: string
  token_type: 'Bearer'
  expires_in: number
  refresh_token: string
}

/** A session as its owner sees it. */
export interface SessionView {
  id: string
  current: boolean
  device: string
  user_agent: string | null
  ip: string | null
  created_at: string
  last_used_at: string
  expires_at: string
}

export interface SessionsServiceDeps {
  db: Pool
  clock: Clock
  hasher: PasswordHasher
  accessTokens: AccessTokens
  revocations: RevocationList
  sessions: Config['sessions']
  passwordMaxBytes: number
  /** TESSERA_REQUIRE_EMAIL_VERIFICATION: an unverified account gets `email_not_verified`, after a correct password only. */
  requireEmailVerification: boolean
  lockout: LockoutPolicy
  email: EmailService
  metrics: Metrics
  /** HMAC key that derives a refresh token's child from the token itself (see refresh-tokens.ts). */
  refreshSecret: KeyObject
}

function invalidCredentials(): AppError {
  return new AppError('invalid_credentials', 'The email or password is incorrect.')
}

export function createSessionsService(deps: SessionsServiceDeps) {
  const { db, clock, hasher, accessTokens, revocations, sessions } = deps

  async function tokenPair(accountId: string, sessionId: string, roles: readonly string[], refreshToken: string): Promise<TokenPair> {
    const access = await accessTokens.issue({ accountId, sessionId, roles })
    return { access_token: access.token, token_type: 'Bearer', expires_in: access.expiresIn, refresh_token: refreshToken }
  }

  async function revokeForReuse(sessionId: string, ctx: RequestContext): Promise<void> {
    const now = clock.now()
    const accountId = await withTransaction(db, async (tx) => {
      const owner = await sessionsRepository.revokeSession(tx, sessionId, 'refresh_token_reuse', now)
      if (owner !== undefined) {
        await audit.insertEvent(tx, { type: 'refresh_token.reused', accountId: owner, actor: 'system', ...ctx, data: { session_id: sessionId }, occurredAt: now })
      }
      return owner
    })
    if (accountId !== undefined) revocations.addSessions([sessionId])
  }

  async function endSessions(principal: Principal, keep: string | null, reason: sessionsRepository.RevokeReason, type: string, ctx: RequestContext): Promise<number> {
    const now = clock.now()
    const ids = await withTransaction(db, async (tx) => {
      const revoked = await sessionsRepository.revokeAccountSessions(tx, principal.accountId, reason, now, keep)
      await audit.insertEvent(tx, { type, accountId: principal.accountId, actor: `account:${principal.accountId}`, ...ctx, data: { sessions_revoked: revoked.length }, occurredAt: now })
      return revoked
    })
    revocations.addSessions(ids)
    return ids.length
  }

  return {
    /**
     * Password login: a new session and its first token pair. Every failure is the same
     * `invalid_credentials` after the same work (a dummy hash for unknown accounts), so the answer
     * does not reveal whether the address has an account.
     * @throws AppError `invalid_credentials`, `email_not_verified` (correct password only), `overloaded`.
     */
    async login(input: { email: string; password: string }, ctx: RequestContext): Promise<TokenPair> {
      const failed = (reason: string): AppError => {
        deps.metrics.logins.inc({ result: 'failure', reason })
        return invalidCredentials()
      }
      const email = canonicalEmail(input.email)
      if (Buffer.byteLength(input.password, 'utf8') > deps.passwordMaxBytes) throw failed('invalid_input')
      const password = normalizePassword(input.password)
      const account = email === undefined ? undefined : await accountsRepository.findByEmail(db, email)
      if (account === undefined) {
        await hasher.verifyDummy(password)
        await withTransaction(db, (tx) => audit.insertEvent(tx, { type: 'login.failed', accountId: null, actor: 'anonymous', ...ctx, data: { reason: 'unknown_account' }, occurredAt: clock.now() }))
        throw failed('unknown_account')
      }
      if (account.locked_until !== null && account.locked_until > clock.now()) {
        // Locked: the password is not checked (a right one gets the same answer as a wrong one), but the
        // same work is done, so the answer's timing does not reveal the lock either.
        await hasher.verifyDummy(password)
        await withTransaction(db, (tx) => audit.insertEvent(tx, { type: 'login.failed', accountId: account.id, actor: 'anonymous', ...ctx, data: { reason: 'locked' }, occurredAt: clock.now() }))
        throw failed('locked')
      }
      const { ok, needsRehash } = await hasher.verify(account.password_hash, password)
      if (!ok || account.status !== 'active') {
        const reason = ok ? `account_${account.status}` : 'wrong_password'
        const now = clock.now()
        // Audit events go last: appending to the chain holds its lock until commit, so no other lock may
        // be taken after it (the account row, the email locks), or two logins could deadlock.
        const locked = await withTransaction(db, async (tx) => {
          if (ok) {
            await audit.insertEvent(tx, { type: 'login.failed', accountId: account.id, actor: 'anonymous', ...ctx, data: { reason }, occurredAt: now })
            return undefined
          }
          const { failures, lockedUntil } = await accountsRepository.recordLoginFailure(tx, account.id, now, deps.lockout)
          const lockedNow = lockedUntil !== null && lockedUntil > now && failures >= deps.lockout.threshold
          const untilReset = failures >= deps.lockout.hardLimit
          // The owner hears of it once per streak (and when it becomes a lock until reset); throttled too.
          if (lockedNow && (failures === deps.lockout.threshold || failures === deps.lockout.hardLimit)) {
            await deps.email.queueMessage(tx, { kind: 'account_locked', accountId: account.id, to: account.email })
          }
          await audit.insertEvent(tx, { type: 'login.failed', accountId: account.id, actor: 'anonymous', ...ctx, data: { reason }, occurredAt: now })
          if (!lockedNow) return undefined
          await audit.insertEvent(tx, { type: 'account.locked', accountId: account.id, actor: 'system', ...ctx, data: { failures, locked_until: untilReset ? 'password_reset' : (lockedUntil?.toISOString() ?? null) }, occurredAt: now })
          return untilReset ? 'until_reset' : 'temporary'
        })
        if (locked !== undefined) deps.metrics.lockouts.inc({ kind: locked })
        throw failed(reason)
      }
      if (deps.requireEmailVerification && account.email_verified_at === null) {
        await withTransaction(db, (tx) => audit.insertEvent(tx, { type: 'login.failed', accountId: account.id, actor: 'anonymous', ...ctx, data: { reason: 'email_not_verified' }, occurredAt: clock.now() }))
        deps.metrics.logins.inc({ result: 'failure', reason: 'email_not_verified' })
        throw new AppError('email_not_verified', 'Verify your email address before signing in: follow the link we sent, or ask for a new one.')
      }
      const rehash = needsRehash ? await hasher.hash(password) : null
      const now = clock.now()
      const sessionId = randomUUID()
      const refreshToken = generateRefreshToken()
      const sessionEnd = new Date(now.getTime() + sessions.absoluteTtlSeconds * 1000)
      const tokenEnd = new Date(Math.min(now.getTime() + sessions.idleTtlSeconds * 1000, sessionEnd.getTime()))
      const roles = await withTransaction(db, async (tx) => {
        // Re-checked under the row lock: a disable or role change that committed during the hash wins.
        const current = await accountsRepository.recordLoginSuccess(tx, account.id, { ip: ctx.ip, now, rehash })
        if (current === undefined) throw failed('account_changed')
        await sessionsRepository.insertSession(tx, { id: sessionId, accountId: account.id, now, expiresAt: sessionEnd, ip: ctx.ip, userAgent: ctx.userAgent })
        await sessionsRepository.insertRefreshToken(tx, { hash: hashToken(refreshToken), sessionId, now, expiresAt: tokenEnd })
        await audit.insertEvent(tx, { type: 'login.succeeded', accountId: account.id, actor: `account:${account.id}`, ...ctx, data: { session_id: sessionId, rehashed: rehash !== null }, occurredAt: now })
        return current.roles
      })
      deps.metrics.logins.inc({ result: 'success', reason: 'ok' })
      return tokenPair(account.id, sessionId, roles, refreshToken)
    },

    /**
     * Rotates a refresh token (RFC 6749 §6, RFC 9700 §4.14.2). A retry of the same token within the
     * grace window returns the same new refresh token; a replay after it ends the whole session.
     * @throws OAuthError `invalid_grant`.
     */
    async refresh(refreshToken: string, ctx: RequestContext): Promise<TokenPair> {
      const invalidGrant = () => {
        deps.metrics.refreshes.inc({ result: 'invalid' })
        return new OAuthError('invalid_grant', 'The refresh token is invalid, expired or revoked.')
      }
      if (!looksLikeRefreshToken(refreshToken)) throw invalidGrant()
      const hash = hashToken(refreshToken)
      const child = deriveChildToken(deps.refreshSecret, refreshToken)
      const now = clock.now()
      const rotated = await sessionsRepository.rotateRefreshToken(db, { hash, childHash: hashToken(child), now, idleSeconds: sessions.idleTtlSeconds })
      if (rotated !== undefined) {
        deps.metrics.refreshes.inc({ result: 'rotated' })
        return tokenPair(rotated.account_id, rotated.session_id, rotated.roles, child)
      }

      // Not rotated: unknown, expired, dead session, or already used. Only "used" needs more thought.
      const state = await sessionsRepository.findRefreshToken(db, hash)
      if (state === undefined || state.used_at === null) throw invalidGrant()
      if (state.session_revoked_at !== null || state.session_expires_at <= now || !state.account_active) throw invalidGrant()
      const sinceUse = now.getTime() - state.used_at.getTime()
      if (sinceUse <= sessions.refreshGraceSeconds * 1000 && state.has_child) {
        // A parallel tab or a lost response: hand back the same child, so the session never forks.
        deps.metrics.refreshes.inc({ result: 'grace_replay' })
        return tokenPair(state.account_id, state.session_id, state.roles, child)
      }
      await revokeForReuse(state.session_id, ctx)
      deps.metrics.refreshes.inc({ result: 'reuse_detected' })
      throw new OAuthError('invalid_grant', 'The refresh token is invalid, expired or revoked.')
    },

    /** The caller's live sessions, most recently used first, the current one marked. */
    async listSessions(principal: Principal): Promise<SessionView[]> {
      const rows = await sessionsRepository.listLive(db, principal.accountId, clock.now())
      return rows.map((s) => ({
        id: s.id,
        current: s.id === principal.sessionId,
        device: deviceSummary(s.user_agent),
        user_agent: s.user_agent,
        ip: s.ip,
        created_at: s.created_at.toISOString(),
        last_used_at: s.last_used_at.toISOString(),
        expires_at: s.expires_at.toISOString(),
      }))
    },

    /**
     * Ends one of the caller's sessions (the current one included). Another account's session id gets
     * the same `not_found` as an unknown one: nothing reveals that it exists.
     * @throws AppError `not_found`.
     */
    async revokeSession(principal: Principal, sessionId: string, ctx: RequestContext): Promise<void> {
      const now = clock.now()
      const done = await withTransaction(db, async (tx) => {
        const revoked = await sessionsRepository.revokeOwnSession(tx, principal.accountId, sessionId, 'revoked_by_user', now)
        if (revoked) {
          await audit.insertEvent(tx, { type: 'session.revoked', accountId: principal.accountId, actor: `account:${principal.accountId}`, ...ctx, data: { session_id: sessionId, current: sessionId === principal.sessionId }, occurredAt: now })
        }
        return revoked
      })
      if (!done) throw new AppError('not_found', 'No such session.')
      revocations.addSessions([sessionId])
    },

    /** Ends every session of the caller's account but the current one; returns how many ended. */
    async revokeOtherSessions(principal: Principal, ctx: RequestContext): Promise<number> {
      return endSessions(principal, principal.sessionId, 'revoked_by_user', 'session.revoked_others', ctx)
    },

    /** Ends every session of the caller's account, this one included ("log out everywhere"). */
    async logoutEverywhere(principal: Principal, ctx: RequestContext): Promise<number> {
      return endSessions(principal, null, 'logout_everywhere', 'session.logout_everywhere', ctx)
    },

    /** Ends the caller's current session: its refresh token dies and its access tokens are refused. */
    async logout(principal: Principal, ctx: RequestContext): Promise<void> {
      const now = clock.now()
      await withTransaction(db, async (tx) => {
        const owner = await sessionsRepository.revokeSession(tx, principal.sessionId, 'logout', now)
        if (owner !== undefined) {
          await audit.insertEvent(tx, { type: 'session.logout', accountId: owner, actor: `account:${owner}`, ...ctx, data: { session_id: principal.sessionId }, occurredAt: now })
        }
      })
      revocations.addSessions([principal.sessionId])
    },

    /**
     * RFC 7009 revocation. A refresh token, or one of our access tokens, ends its session. Unknown,
     * invalid or already revoked tokens are not an error (RFC 7009 §2.2): the answer is the same.
     */
    async revokeToken(token: string, ctx: RequestContext): Promise<void> {
      let sessionId: string | undefined
      if (looksLikeRefreshToken(token)) {
        sessionId = (await sessionsRepository.findRefreshToken(db, hashToken(token)))?.session_id
      } else {
        sessionId = await accessTokens.verify(token).then((c) => c.sid, () => undefined)
      }
      if (sessionId === undefined) return
      const now = clock.now()
      const target = sessionId
      await withTransaction(db, async (tx) => {
        const owner = await sessionsRepository.revokeSession(tx, target, 'token_revoked', now)
        if (owner !== undefined) {
          await audit.insertEvent(tx, { type: 'session.revoked', accountId: owner, actor: `account:${owner}`, ...ctx, data: { session_id: target, via: 'oauth_revoke' }, occurredAt: now })
        }
      })
      revocations.addSessions([target])
    },
  }
}

export type SessionsService = ReturnType<typeof createSessionsService>
