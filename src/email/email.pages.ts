/**
 * The small HTML pages that email links open. A GET only renders (a mail scanner that prefetches the
 * link uses nothing); the page's form POSTs back, and only that POST uses the token. Pages are
 * `no-store`, `no-referrer` (the token never leaks to another site) and locked down by a CSP with no
 * script at all. Forms post to TESSERA_PUBLIC_URL, never to an address taken from the request.
 *
 * These handlers catch AppError themselves, unlike the JSON routes: a person reading a page needs an
 * HTML answer, not problem+json. Anything else still goes to the central error handler.
 */
import formbody from '@fastify/formbody'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply } from 'fastify'
import { Type } from 'typebox'
import type { AccountsService } from '../accounts/accounts.service.ts'
import { AppError } from '../errors.ts'
import { requestContext } from '../http/context.ts'
import type { ResetService } from '../passwords/reset.service.ts'
import type { EmailService } from './email.service.ts'
import { FORGOT_PASSWORD_PATH, LINK_PATHS } from './email.service.ts'
import { escapeHtml } from './email.templates.ts'

export interface PagesOptions {
  publicUrl: string
  email: EmailService
  accounts: AccountsService
  reset: ResetService
}

const FormField = Type.String({ maxLength: 4096 })

export const pagesRoutes: FastifyPluginAsyncTypebox<PagesOptions> = async (app, { publicUrl, email, accounts, reset }) => {
  await app.register(formbody, { bodyLimit: 16_384 })
  const origin = new URL(publicUrl).origin
  const csp = `default-src 'none'; style-src 'unsafe-inline'; form-action ${origin}; frame-ancestors 'none'; base-uri 'none'`

  function page(reply: FastifyReply, status: number, title: string, body: string) {
    return reply
      .code(status)
      .header('content-type', 'text/html; charset=utf-8')
      .header('cache-control', 'no-store')
      .header('referrer-policy', 'no-referrer')
      .header('content-security-policy', csp)
      .send(`<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><meta name="robots" content="noindex"><title>${escapeHtml(title)}</title><style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;line-height:1.5}input,button{font:inherit;padding:.4rem}label{display:block;margin:.8rem 0}</style></head><body><h1>${escapeHtml(title)}</h1>${body}</body></html>`)
  }

  function form(path: string, token: string, button: string, extra = ''): string {
    return `<form method="post" action="${escapeHtml(publicUrl + path)}"><input type="hidden" name="token" value="${escapeHtml(token)}">${extra}<button type="submit">${escapeHtml(button)}</button></form>`
  }

  const invalid = (reply: FastifyReply) => page(reply, 400, 'This link does not work', `<p>It is invalid, has expired, or was already used. Ask for a new one, or <a href="${escapeHtml(publicUrl + FORGOT_PASSWORD_PATH)}">reset your password</a>.</p>`)
  const passwordField = '<label>New password <input type="password" name="new_password" autocomplete="new-password" required></label>'
  const tokenQuery = { querystring: Type.Object({ token: Type.Optional(FormField) }), hide: true }
  const tokenForm = { body: Type.Object({ token: FormField }), hide: true }

  app.get(LINK_PATHS.verify_email, { schema: tokenQuery }, async (request, reply) => {
    const token = request.query.token ?? ''
    if ((await email.peekToken(token, 'verify_email')) === undefined) return invalid(reply)
    return page(reply, 200, 'Confirm your email address', `<p>Confirm that this address is yours.</p>${form(LINK_PATHS.verify_email, token, 'Confirm my address')}`)
  })
  app.post(LINK_PATHS.verify_email, { schema: tokenForm, config: { rateLimit: { op: 'email_verification_confirm' } } }, async (request, reply) => {
    try {
      await accounts.confirmEmailVerification({ token: request.body.token }, requestContext(request))
    } catch (err) {
      if (err instanceof AppError && err.code === 'confirmation_invalid') return invalid(reply)
      throw err
    }
    return page(reply, 200, 'Address confirmed', '<p>Your email address is verified. You can sign in now.</p>')
  })

  app.get(LINK_PATHS.change_email, { schema: tokenQuery }, async (request, reply) => {
    const token = request.query.token ?? ''
    if ((await email.peekToken(token, 'change_email')) === undefined) return invalid(reply)
    return page(reply, 200, 'Confirm your new email address', `<p>Confirm that this address should become the address of your account.</p>${form(LINK_PATHS.change_email, token, 'Use this address')}`)
  })
  app.post(LINK_PATHS.change_email, { schema: tokenForm, config: { rateLimit: { op: 'email_change' } } }, async (request, reply) => {
    try {
      await accounts.confirmEmailChange({ token: request.body.token }, requestContext(request))
    } catch (err) {
      if (err instanceof AppError && err.code === 'confirmation_invalid') return invalid(reply)
      if (err instanceof AppError && err.code === 'email_taken') return page(reply, 409, 'Address already in use', '<p>Another account now uses this address, so the change was not made.</p>')
      throw err
    }
    return page(reply, 200, 'Address changed', '<p>This is now the address of your account.</p>')
  })

  app.get(LINK_PATHS.reset_password, { schema: tokenQuery }, async (request, reply) => {
    const token = request.query.token ?? ''
    if (!(await reset.checkResetToken(token))) return invalid(reply)
    return page(reply, 200, 'Choose a new password', `<p>Every session of your account will be signed out.</p>${form(LINK_PATHS.reset_password, token, 'Set the new password', passwordField)}`)
  })
  app.post(LINK_PATHS.reset_password, { schema: { body: Type.Object({ token: FormField, new_password: FormField }), hide: true }, config: { rateLimit: { op: 'password_reset_confirm' } } }, async (request, reply) => {
    const { token, new_password } = request.body
    try {
      await reset.confirmPasswordReset({ token, newPassword: new_password }, requestContext(request))
    } catch (err) {
      if (err instanceof AppError && err.code === 'confirmation_invalid') return invalid(reply)
      if (err instanceof AppError && (err.code === 'password_policy' || err.code === 'overloaded')) {
        const status = err.code === 'overloaded' ? 503 : 400
        return page(reply, status, 'Choose a new password', `<p role="alert">${escapeHtml(err.message)}</p>${form(LINK_PATHS.reset_password, token, 'Set the new password', passwordField)}`)
      }
      throw err
    }
    return page(reply, 200, 'Password changed', '<p>Your new password is set and every session was signed out. Sign in again with it.</p>')
  })

  app.get(FORGOT_PASSWORD_PATH, { schema: { hide: true } }, async (_request, reply) => {
    return page(reply, 200, 'Reset your password', `<form method="post" action="${escapeHtml(publicUrl + FORGOT_PASSWORD_PATH)}"><label>Email address <input type="email" name="email" autocomplete="email" required></label><button type="submit">Send me a link</button></form>`)
  })
  app.post(FORGOT_PASSWORD_PATH, { schema: { body: Type.Object({ email: Type.String({ maxLength: 512 }) }), hide: true }, config: { rateLimit: { op: 'password_reset', account: 'email' } } }, async (request, reply) => {
    await reset.requestPasswordReset({ email: request.body.email }, requestContext(request))
    return page(reply, 200, 'Check your inbox', '<p>If this address has an account, a reset link is on its way to it.</p>')
  })
}
