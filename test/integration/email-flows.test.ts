/**
 * The email flows end to end inside the app: verification, password reset, email change, their
 * one-time links (single use, expiry, newest-only, bound to the address), the confirmation pages
 * (a GET never uses a token), throttles, and links built only from TESSERA_PUBLIC_URL. Messages are
 * delivered through the real job handler into the development outbox and read back from it.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type pg from 'pg'
import {
  bearer, createTestApp, inbox, login, refresh, register, registerVerified, signUp, tokenFromInbox, uniqueEmail, VALID_PASSWORD, verifyEmail, type TestApp,
} from '../helpers/app.ts'
import { FakeClock } from '../helpers/clock.ts'
import { testPool } from '../helpers/db.ts'
import { violatedInvariants } from '../helpers/invariants.ts'

const NEW_PASSWORD = 'a brand new passphrase for this test'

describe('email flows', () => {
  const clock = new FakeClock(new Date('2026-03-01T09:00:00Z'))
  let t: TestApp
  let sql: pg.Pool

  before(async () => {
    t = await createTestApp({ clock })
    sql = testPool(t.db.url, 2)
  })
  after(async () => {
    await sql.end()
    await t.close()
  })

  /** Moves past the per-kind throttle interval (60 s by default) between two messages of one kind. */
  const pastThrottle = () => clock.advanceSeconds(61)
  const post = (url: string, payload: unknown, headers: Record<string, string> = {}) => t.app.inject({ method: 'POST', url, payload: payload as object, headers })
  const form = (url: string, fields: Record<string, string>) => t.app.inject({
    method: 'POST', url, headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: new URLSearchParams(fields).toString(),
  })
  const code = (res: { json<T>(): T }) => res.json<{ code: string }>().code
  const count = async (q: string, params: unknown[] = []) => (await sql.query<{ n: number }>(q, params)).rows[0]?.n ?? -1

  describe('verification', () => {
    it('sends a link on registration; an unverified account learns it only after the right password', async () => {
      const email = uniqueEmail('verify')
      assert.equal((await register(t.app, email)).statusCode, 202)
      const wrong = await post('/v1/auth/login', { email, password: 'not the password at all' })
      assert.equal(wrong.statusCode, 401)
      assert.equal(code(wrong), 'invalid_credentials')
      const right = await post('/v1/auth/login', { email, password: VALID_PASSWORD })
      assert.equal(right.statusCode, 403)
      assert.equal(code(right), 'email_not_verified')

      const [message] = await inbox(t.app, email)
      assert.equal(message?.subject, 'Confirm your email address')
      assert.match(message.text, /24 hours/)
      assert.match(message.html, /<a href="http:\/\/tessera\.test\/verify-email\?token=[A-Za-z0-9_-]{43}">/)
      await verifyEmail(t.app, email)
      await login(t.app, email)
      assert.equal(await count("SELECT count(*)::int AS n FROM audit_events WHERE type = 'email.verified' AND account_id = (SELECT id FROM accounts WHERE email = $1)", [email]), 1)
    })

    it('lets unverified accounts log in when TESSERA_REQUIRE_EMAIL_VERIFICATION=false', async () => {
      const lenient = await createTestApp({ env: { TESSERA_REQUIRE_EMAIL_VERIFICATION: 'false' } })
      try {
        const email = uniqueEmail('lenient')
        await register(lenient.app, email)
        const tokens = await login(lenient.app, email)
        const me = await lenient.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(tokens.access_token) })
        assert.equal(me.json<{ email_verified: boolean }>().email_verified, false)
        assert.equal((await inbox(lenient.app, email))[0]?.subject, 'Confirm your email address', 'the link is still sent')
      } finally {
        await lenient.close()
      }
    })

    it('renders the page on GET without using the token; only the POST uses it, once', async () => {
      const email = uniqueEmail('page')
      await register(t.app, email)
      const token = await tokenFromInbox(t.app, email, '/verify-email')
      for (let i = 0; i < 3; i++) {
        const page = await t.app.inject({ method: 'GET', url: `/verify-email?token=${token}` })
        assert.equal(page.statusCode, 200)
        assert.match(String(page.headers['content-type']), /^text\/html/)
        assert.equal(page.headers['cache-control'], 'no-store')
        assert.equal(page.headers['referrer-policy'], 'no-referrer')
        assert.match(String(page.headers['content-security-policy']), /default-src 'none'/)
        assert.match(page.body, /<form method="post" action="http:\/\/tessera\.test\/verify-email">/)
      }
      assert.equal(await count('SELECT count(*)::int AS n FROM email_tokens WHERE consumed_at IS NOT NULL AND account_id = (SELECT id FROM accounts WHERE email = $1)', [email]), 0)
      const done = await form('/verify-email', { token })
      assert.equal(done.statusCode, 200)
      assert.match(done.body, /Address confirmed/)
      const again = await form('/verify-email', { token })
      assert.equal(again.statusCode, 400)
      assert.match(again.body, /does not work/)
      assert.equal((await post('/v1/email-verification/confirm', { token })).statusCode, 400)
      const gone = await t.app.inject({ method: 'GET', url: `/verify-email?token=${token}` })
      assert.equal(gone.statusCode, 400)
    })

    it('refuses malformed, unknown and wrong-purpose tokens with confirmation_invalid', async () => {
      const email = uniqueEmail('purpose')
      await registerVerified(t.app, email)
      pastThrottle()
      await post('/v1/password-reset', { email })
      const resetToken = await tokenFromInbox(t.app, email, '/reset-password')
      for (const token of ['', 'x', 'A'.repeat(43), resetToken, `${resetToken}=`, '../../etc/passwd']) {
        const res = await post('/v1/email-verification/confirm', { token })
        assert.equal(res.statusCode, 400, token)
        assert.ok(['confirmation_invalid', 'validation_failed'].includes(code(res)), token)
      }
      assert.equal((await post('/v1/email-verification/confirm', { token: 'A'.repeat(300) })).statusCode, 400)
      assert.equal((await post('/v1/email-verification/confirm', { token: resetToken, extra: 1 })).statusCode, 400)
    })

    it('resends on request: the newer link works and kills the older one; throttled requests change nothing', async () => {
      const email = uniqueEmail('resend')
      await register(t.app, email)
      const first = await tokenFromInbox(t.app, email, '/verify-email')
      // Within the throttle interval: same answer, no message, and the first link still works.
      const throttled = await post('/v1/email-verification', { email })
      assert.equal(throttled.statusCode, 202)
      assert.equal((await inbox(t.app, email)).length, 1)
      pastThrottle()
      assert.equal((await post('/v1/email-verification', { email })).statusCode, 202)
      assert.equal((await inbox(t.app, email)).length, 2)
      const second = await tokenFromInbox(t.app, email, '/verify-email')
      assert.notEqual(first, second)
      assert.equal(code(await post('/v1/email-verification/confirm', { token: first })), 'confirmation_invalid')
      assert.equal((await post('/v1/email-verification/confirm', { token: second })).statusCode, 204)
    })

    it('expires verification links after 24 hours', async () => {
      const email = uniqueEmail('expire')
      await register(t.app, email)
      const token = await tokenFromInbox(t.app, email, '/verify-email')
      clock.advanceSeconds(24 * 3600 + 1)
      assert.equal(code(await post('/v1/email-verification/confirm', { token })), 'confirmation_invalid')
    })

    it('does not send a link whose token died while it waited in the queue', async () => {
      const email = uniqueEmail('stale')
      await register(t.app, email)
      // A second, newer link before the first message was delivered: the first is skipped, not sent.
      pastThrottle()
      await post('/v1/email-verification', { email })
      const messages = await inbox(t.app, email)
      assert.equal(messages.length, 1)
      assert.equal(await count("SELECT count(*)::int AS n FROM email_messages WHERE skipped_at IS NOT NULL AND account_id = (SELECT id FROM accounts WHERE email = $1)", [email]), 1)
    })

    it('notifies the owner of an address when someone registers it again, and reveals nothing', async () => {
      const email = uniqueEmail('again')
      await registerVerified(t.app, email)
      const before = await inbox(t.app, email)
      const res = await register(t.app, email, 'an attacker chosen passphrase')
      assert.equal(res.statusCode, 202)
      const after = await inbox(t.app, email)
      assert.equal(after.length, before.length + 1)
      const notice = after.find((m) => m.subject === 'Someone tried to create an account with your address')
      assert.ok(notice?.links.includes('http://tessera.test/forgot-password'))
      // A flood of attempts yields no flood of notices.
      for (let i = 0; i < 5; i++) await register(t.app, email, 'an attacker chosen passphrase')
      assert.equal((await inbox(t.app, email)).length, after.length)
      await login(t.app, email)
    })
  })

  describe('password reset', () => {
    it('resets in one transaction: password set, link used, every session ended, other links dead, audit row, notice', async () => {
      const user = await signUp(t.app)
      const other = await login(t.app, user.email)
      pastThrottle()
      assert.equal((await post('/v1/password-reset', { email: user.email })).statusCode, 202)
      const token = await tokenFromInbox(t.app, user.email, '/reset-password')
      const message = (await inbox(t.app, user.email)).find((m) => m.subject === 'Reset your password')
      assert.match(message?.text ?? '', /60 minutes/)

      const page = await t.app.inject({ method: 'GET', url: `/reset-password?token=${token}` })
      assert.equal(page.statusCode, 200)
      assert.match(page.body, /name="new_password"/)
      const weak = await post('/v1/password-reset/confirm', { token, new_password: 'password' })
      assert.equal(code(weak), 'password_policy')
      assert.equal((await post('/v1/password-reset/confirm', { token, new_password: NEW_PASSWORD })).statusCode, 204)

      for (const s of [user, other]) {
        assert.equal((await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(s.access_token) })).statusCode, 401, 'access tokens die at once')
        assert.equal((await refresh(t.app, s.refresh_token)).statusCode, 400, 'refresh tokens die for good')
      }
      assert.equal((await post('/v1/auth/login', { email: user.email, password: VALID_PASSWORD })).statusCode, 401)
      await login(t.app, user.email, NEW_PASSWORD)
      assert.equal(code(await post('/v1/password-reset/confirm', { token, new_password: `${NEW_PASSWORD} again` })), 'confirmation_invalid')
      assert.ok((await inbox(t.app, user.email)).some((m) => m.subject === 'Your password was changed'))
      assert.equal(await count("SELECT count(*)::int AS n FROM audit_events WHERE type = 'password.reset' AND account_id = (SELECT id FROM accounts WHERE email = $1)", [user.email]), 1)
    })

    it('lets exactly one of two concurrent confirmations of one link win', async () => {
      for (let trial = 0; trial < 5; trial++) {
        const user = await signUp(t.app)
        pastThrottle()
        await post('/v1/password-reset', { email: user.email })
        const token = await tokenFromInbox(t.app, user.email, '/reset-password')
        const passwords = [`first concurrent passphrase ${trial}`, `second concurrent passphrase ${trial}`]
        const results = await Promise.all(passwords.map((p) => post('/v1/password-reset/confirm', { token, new_password: p })))
        const winners = results.map((r, i) => (r.statusCode === 204 ? i : -1)).filter((i) => i >= 0)
        assert.equal(winners.length, 1, results.map((r) => r.body).join(' | '))
        const loser = results.find((r) => r.statusCode !== 204)
        assert.equal(loser && code(loser), 'confirmation_invalid')
        const winner = passwords[winners[0] ?? 0] ?? ''
        await login(t.app, user.email, winner)
        const loserPassword = passwords[1 - (winners[0] ?? 0)] ?? ''
        assert.equal((await post('/v1/auth/login', { email: user.email, password: loserPassword })).statusCode, 401)
      }
    })

    it('keeps only the newest link alive, and a password change kills outstanding ones', async () => {
      const user = await signUp(t.app)
      pastThrottle()
      await post('/v1/password-reset', { email: user.email })
      const first = await tokenFromInbox(t.app, user.email, '/reset-password')
      pastThrottle()
      await post('/v1/password-reset', { email: user.email })
      const second = await tokenFromInbox(t.app, user.email, '/reset-password')
      assert.notEqual(first, second)
      assert.equal(code(await post('/v1/password-reset/confirm', { token: first, new_password: NEW_PASSWORD })), 'confirmation_invalid')
      const changed = await post('/v1/me/password', { current_password: VALID_PASSWORD, new_password: NEW_PASSWORD }, bearer(user.access_token))
      assert.equal(changed.statusCode, 204)
      assert.equal(code(await post('/v1/password-reset/confirm', { token: second, new_password: 'yet another passphrase here' })), 'confirmation_invalid')
      assert.ok((await inbox(t.app, user.email)).some((m) => m.subject === 'Your password was changed'))
    })

    it('expires reset links after 60 minutes', async () => {
      const user = await signUp(t.app)
      pastThrottle()
      await post('/v1/password-reset', { email: user.email })
      const token = await tokenFromInbox(t.app, user.email, '/reset-password')
      clock.advanceSeconds(3601)
      assert.equal(code(await post('/v1/password-reset/confirm', { token, new_password: NEW_PASSWORD })), 'confirmation_invalid')
    })

    it('hands the account to the owner of the address when a squatter registered it first', async () => {
      const email = uniqueEmail('squatted')
      const squatterPassword = 'the squatter chose this passphrase'
      await register(t.app, email, squatterPassword)
      pastThrottle()
      await post('/v1/password-reset', { email })
      const token = await tokenFromInbox(t.app, email, '/reset-password')
      const done = await form('/reset-password', { token, new_password: NEW_PASSWORD })
      assert.equal(done.statusCode, 200)
      assert.match(done.body, /Password changed/)
      assert.equal((await post('/v1/auth/login', { email, password: squatterPassword })).statusCode, 401)
      await login(t.app, email, NEW_PASSWORD)
      assert.equal(await count('SELECT count(*)::int AS n FROM accounts WHERE email = $1 AND email_verified_at IS NOT NULL', [email]), 1, 'the reset proved the address')
    })

    it('answers the page form with the policy message and keeps the link usable', async () => {
      const user = await signUp(t.app)
      pastThrottle()
      await post('/v1/password-reset', { email: user.email })
      const token = await tokenFromInbox(t.app, user.email, '/reset-password')
      const weak = await form('/reset-password', { token, new_password: 'short' })
      assert.equal(weak.statusCode, 400)
      assert.match(weak.body, /role="alert"/)
      assert.equal((await form('/reset-password', { token, new_password: NEW_PASSWORD })).statusCode, 200)
    })

    it('serves the forgot-password page, whose form asks for a link', async () => {
      const user = await signUp(t.app)
      pastThrottle()
      const page = await t.app.inject({ method: 'GET', url: '/forgot-password' })
      assert.equal(page.statusCode, 200)
      assert.match(page.body, /name="email"/)
      const sent = await form('/forgot-password', { email: user.email })
      assert.equal(sent.statusCode, 200)
      assert.ok((await inbox(t.app, user.email)).some((m) => m.subject === 'Reset your password'))
    })
  })

  describe('email change', () => {
    it('requires the password, confirms at the new address, notifies the old one, and changes only on confirmation', async () => {
      const user = await signUp(t.app)
      const newEmail = uniqueEmail('moved')
      const wrong = await post('/v1/me/email', { new_email: newEmail, password: 'not my password at all' }, bearer(user.access_token))
      assert.equal(wrong.statusCode, 403)
      assert.equal(code(wrong), 'current_password_invalid')
      assert.equal((await post('/v1/me/email', { new_email: newEmail, password: VALID_PASSWORD })).statusCode, 401)

      const res = await post('/v1/me/email', { new_email: newEmail, password: VALID_PASSWORD }, bearer(user.access_token))
      assert.equal(res.statusCode, 202)
      assert.ok((await inbox(t.app, user.email)).some((m) => m.subject === 'A change of your email address was requested'))
      const token = await tokenFromInbox(t.app, newEmail, '/confirm-email-change')
      const me = await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(user.access_token) })
      assert.equal(me.json<{ email: string }>().email, user.email, 'nothing changes before confirmation')

      const page = await t.app.inject({ method: 'GET', url: `/confirm-email-change?token=${token}` })
      assert.equal(page.statusCode, 200)
      const done = await form('/confirm-email-change', { token })
      assert.equal(done.statusCode, 200)
      const after = await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(user.access_token) })
      assert.deepEqual(after.json<{ email: string; email_verified: boolean }>().email, newEmail)
      assert.equal(after.json<{ email_verified: boolean }>().email_verified, true)
      await login(t.app, newEmail)
      assert.equal((await post('/v1/auth/login', { email: user.email, password: VALID_PASSWORD })).statusCode, 401)
      assert.equal(code(await post('/v1/me/email/confirm', { token })), 'confirmation_invalid')
    })

    it('kills links bound to the old address once the address changed', async () => {
      const user = await signUp(t.app)
      pastThrottle()
      await post('/v1/password-reset', { email: user.email })
      const resetToken = await tokenFromInbox(t.app, user.email, '/reset-password')
      const newEmail = uniqueEmail('moved')
      await post('/v1/me/email', { new_email: newEmail, password: VALID_PASSWORD }, bearer(user.access_token))
      assert.equal((await post('/v1/me/email/confirm', { token: await tokenFromInbox(t.app, newEmail, '/confirm-email-change') })).statusCode, 204)
      assert.equal(code(await post('/v1/password-reset/confirm', { token: resetToken, new_password: NEW_PASSWORD })), 'confirmation_invalid')
    })

    it('answers the same for a taken address and sends it nothing; a race for an address ends in email_taken', async () => {
      const user = await signUp(t.app)
      const taken = (await signUp(t.app)).email
      const before = (await inbox(t.app, taken)).length
      const res = await post('/v1/me/email', { new_email: taken, password: VALID_PASSWORD }, bearer(user.access_token))
      assert.equal(res.statusCode, 202)
      assert.equal((await inbox(t.app, taken)).length, before)

      pastThrottle()
      const contested = uniqueEmail('contested')
      await post('/v1/me/email', { new_email: contested, password: VALID_PASSWORD }, bearer(user.access_token))
      const token = await tokenFromInbox(t.app, contested, '/confirm-email-change')
      await registerVerified(t.app, contested)
      const lost = await post('/v1/me/email/confirm', { token })
      assert.equal(lost.statusCode, 409)
      assert.equal(code(lost), 'email_taken')
      const me = await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(user.access_token) })
      assert.equal(me.json<{ email: string }>().email, user.email)
    })

    it('refuses the current address and invalid addresses', async () => {
      const user = await signUp(t.app)
      for (const new_email of [user.email, user.email.toUpperCase(), 'not-an-address']) {
        const res = await post('/v1/me/email', { new_email, password: VALID_PASSWORD }, bearer(user.access_token))
        assert.equal(res.statusCode, 400, new_email)
        assert.equal(code(res), 'validation_failed')
      }
    })
  })

  describe('throttles and links', () => {
    it('caps messages per address and per account over an hour', async () => {
      const user = await signUp(t.app)
      const before = (await inbox(t.app, user.email)).length
      let resets = 0
      for (let i = 0; i < 8; i++) {
        pastThrottle()
        assert.equal((await post('/v1/password-reset', { email: user.email })).statusCode, 202)
        // Delivered at once: a link replaced before delivery is dropped, which would hide the count.
        resets = (await inbox(t.app, user.email)).length - before
      }
      assert.equal(resets, 5, 'TESSERA_EMAIL_THROTTLE_PER_HOUR (5) reset messages in the hour')
      clock.advanceSeconds(3600)
      await post('/v1/password-reset', { email: user.email })
      assert.equal((await inbox(t.app, user.email)).length - before, 6, 'the budget comes back after an hour')
    })

    it('builds every link from TESSERA_PUBLIC_URL, whatever the request headers say', async () => {
      const email = uniqueEmail('poison')
      await t.app.inject({
        method: 'POST', url: '/v1/accounts', payload: { email, password: VALID_PASSWORD },
        headers: { host: 'evil.example', 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'https', forwarded: 'host=evil.example' },
      })
      const [message] = await inbox(t.app, email)
      assert.ok(message)
      const hrefs = Array.from(message.html.matchAll(/href="([^"]+)"/g), (m) => m[1] ?? '')
      assert.ok(hrefs.length > 0)
      for (const link of [...message.links, ...hrefs]) {
        assert.ok(link === 'http://tessera.test' || link.startsWith('http://tessera.test/'), link)
      }
      assert.equal(message.text.includes('evil'), false)
    })

    it('leaves no broken invariant behind', async () => {
      assert.deepEqual(await violatedInvariants(sql), [])
    })
  })
})
