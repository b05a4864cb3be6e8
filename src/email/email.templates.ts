/**
 * Message templates: a subject, a plain-text body and an HTML body per kind. Built-in defaults can be
 * overridden file by file from TESSERA_EMAIL_TEMPLATES_DIR (`<kind>.subject.txt`, `<kind>.txt`,
 * `<kind>.html`). Placeholders are `{{name}}`; in HTML they are escaped. Every link is built from
 * TESSERA_PUBLIC_URL by the caller, never from a request.
 */
import { readFileSync } from 'node:fs'
import path from 'node:path'

export const MESSAGE_KINDS = ['verify_email', 'registration_attempt', 'reset_password', 'password_changed', 'email_change_confirm', 'email_change_notice', 'account_locked'] as const
export type MessageKind = (typeof MESSAGE_KINDS)[number]

export interface TemplateVars {
  /** The action link (with its token), for kinds that have one. */
  link?: string
  /** How long the link works, in words ("60 minutes"). */
  expires_in?: string
  /** Where to ask for a password reset (no token). */
  forgot_url: string
  public_url: string
}

export interface Rendered {
  subject: string
  text: string
  html: string
}

interface Template { subject: string; text: string; html: string }

const footer = '\n\n— Tessera, {{public_url}}\nYou receive this message because this address is used by an account.'

const builtIn: Record<MessageKind, Template> = {
  verify_email: {
    subject: 'Confirm your email address',
    text: 'Confirm that this address is yours by opening this link (it works for {{expires_in}}):\n\n{{link}}\n\nIf you did not create an account, ignore this message.' + footer,
    html: '<p>Confirm that this address is yours (the link works for {{expires_in}}):</p><p><a href="{{link}}">Confirm my email address</a></p><p>If you did not create an account, ignore this message.</p>',
  },
  registration_attempt: {
    subject: 'Someone tried to create an account with your address',
    text: 'Someone tried to create an account with this address, which already has one. Nothing was changed.\n\nIf it was you, sign in instead. If you forgot your password, reset it here:\n\n{{forgot_url}}\n\nIf it was not you, ignore this message.' + footer,
    html: '<p>Someone tried to create an account with this address, which already has one. Nothing was changed.</p><p>If it was you, sign in instead. If you forgot your password, <a href="{{forgot_url}}">reset it here</a>.</p><p>If it was not you, ignore this message.</p>',
  },
  reset_password: {
    subject: 'Reset your password',
    text: 'Choose a new password by opening this link (it works for {{expires_in}}, once):\n\n{{link}}\n\nIf you did not ask for this, ignore this message: your password stays as it is.' + footer,
    html: '<p>Choose a new password (the link works for {{expires_in}}, once):</p><p><a href="{{link}}">Reset my password</a></p><p>If you did not ask for this, ignore this message: your password stays as it is.</p>',
  },
  password_changed: {
    subject: 'Your password was changed',
    text: 'The password of your account was just changed, and every other session was signed out.\n\nIf it was not you, reset your password now:\n\n{{forgot_url}}' + footer,
    html: '<p>The password of your account was just changed, and every other session was signed out.</p><p>If it was not you, <a href="{{forgot_url}}">reset your password now</a>.</p>',
  },
  email_change_confirm: {
    subject: 'Confirm your new email address',
    text: 'Confirm that this address should become the address of your account (the link works for {{expires_in}}):\n\n{{link}}\n\nIf you did not ask for this, ignore this message.' + footer,
    html: '<p>Confirm that this address should become the address of your account (the link works for {{expires_in}}):</p><p><a href="{{link}}">Confirm my new address</a></p><p>If you did not ask for this, ignore this message.</p>',
  },
  account_locked: {
    subject: 'Sign-in to your account was locked for a while',
    text: 'After many failed sign-in attempts, sign-in to your account is locked for a while; the correct password will work again once the lock ends.\n\nIf it was not you, someone may be guessing your password. A password reset always works, even during the lock:\n\n{{forgot_url}}' + footer,
    html: '<p>After many failed sign-in attempts, sign-in to your account is locked for a while; the correct password will work again once the lock ends.</p><p>If it was not you, someone may be guessing your password. <a href="{{forgot_url}}">A password reset</a> always works, even during the lock.</p>',
  },
  email_change_notice: {
    subject: 'A change of your email address was requested',
    text: 'Someone signed in to your account asked to change its email address. The change happens only when the new address is confirmed.\n\nIf it was not you, reset your password now:\n\n{{forgot_url}}' + footer,
    html: '<p>Someone signed in to your account asked to change its email address. The change happens only when the new address is confirmed.</p><p>If it was not you, <a href="{{forgot_url}}">reset your password now</a>.</p>',
  },
}

const htmlEscapes: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => htmlEscapes[c] ?? c)
}

function fill(template: string, vars: TemplateVars, escape: (s: string) => string): string {
  return template.replace(/\{\{\s*([a-z_]+)\s*\}\}/g, (_, name: string) => {
    const value = (vars as unknown as Record<string, string | undefined>)[name]
    if (value === undefined) throw new Error(`template variable {{${name}}} has no value`)
    return escape(value)
  })
}

function wrapHtml(subject: string, body: string): string {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${escapeHtml(subject)}</title></head><body style="font-family:sans-serif;line-height:1.5">${body}</body></html>`
}

/**
 * Loads the templates once (at start-up, so a broken override directory fails there, not at the first
 * message) and returns the renderer.
 * @throws Error when an override file cannot be read.
 */
export function createTemplates(dir: string | undefined) {
  const templates = {} as Record<MessageKind, Template>
  for (const kind of MESSAGE_KINDS) {
    const t = { ...builtIn[kind] }
    if (dir !== undefined) {
      for (const [part, file] of [['subject', `${kind}.subject.txt`], ['text', `${kind}.txt`], ['html', `${kind}.html`]] as const) {
        try {
          t[part] = readFileSync(path.join(dir, file), 'utf8')
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
        }
      }
    }
    templates[kind] = t
  }
  return {
    /** @throws Error when a placeholder has no value (a broken override): the message is dead-lettered. */
    render(kind: MessageKind, vars: TemplateVars): Rendered {
      const t = templates[kind]
      // Header injection: a subject is one line whatever the template says.
      const subject = fill(t.subject, vars, (s) => s).replace(/[\r\n]+/g, ' ').trim()
      const html = fill(t.html, vars, escapeHtml)
      return {
        subject,
        text: fill(t.text, vars, (s) => s),
        html: /<html[\s>]/i.test(html) ? html : wrapHtml(subject, html),
      }
    },
  }
}

export type Templates = ReturnType<typeof createTemplates>

/** "60 minutes", "24 hours": for "the link works for …". */
export function describeDuration(seconds: number): string {
  if (seconds % 86_400 === 0 && seconds >= 86_400 * 2) return `${seconds / 86_400} days`
  if (seconds % 3600 === 0 && seconds > 3600) return `${seconds / 3600} hours`
  return `${Math.round(seconds / 60)} minutes`
}
