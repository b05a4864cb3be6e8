import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { describe, it } from 'node:test'
import { messageIdHeader } from '../../src/email/email.mailer.ts'
import { createTemplates, describeDuration, escapeHtml, MESSAGE_KINDS } from '../../src/email/email.templates.ts'

const vars = { link: 'https://auth.example.com/verify-email?token=abc', expires_in: '24 hours', forgot_url: 'https://auth.example.com/forgot-password', public_url: 'https://auth.example.com' }

describe('email templates', () => {
  it('renders a subject, a text and a full HTML document for every kind', () => {
    const templates = createTemplates(undefined)
    for (const kind of MESSAGE_KINDS) {
      const r = templates.render(kind, vars)
      assert.ok(r.subject.length > 0 && !/[\r\n]/.test(r.subject), kind)
      assert.ok(r.text.includes('https://auth.example.com'), kind)
      assert.match(r.html, /^<!doctype html><html>/, kind)
      assert.doesNotMatch(`${r.subject}${r.text}${r.html}`, /\{\{/, `${kind}: no placeholder left`)
    }
  })

  it('escapes values in HTML, not in text', () => {
    const templates = createTemplates(undefined)
    const r = templates.render('verify_email', { ...vars, link: 'https://x.example/"><script>alert(1)</script>' })
    assert.ok(!r.html.includes('<script>'))
    assert.ok(r.html.includes('&quot;&gt;&lt;script&gt;'))
    assert.ok(r.text.includes('"><script>'))
    assert.equal(escapeHtml(`<a href="x">'&'</a>`), '&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;')
  })

  it('takes overrides file by file from a directory, and keeps subjects on one line', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'tessera-templates-'))
    try {
      await writeFile(path.join(dir, 'reset_password.subject.txt'), 'Reset for {{public_url}}\nBcc: attacker@example.com')
      await writeFile(path.join(dir, 'reset_password.txt'), 'Go to {{ link }} within {{expires_in}}.')
      const templates = createTemplates(dir)
      const r = templates.render('reset_password', vars)
      assert.equal(r.subject, 'Reset for https://auth.example.com Bcc: attacker@example.com')
      assert.equal(r.text, `Go to ${vars.link} within 24 hours.`)
      assert.match(r.html, /Reset my password/, 'the HTML part falls back to the built-in one')
      await writeFile(path.join(dir, 'password_changed.txt'), 'Hello {{unknown_variable}}')
      assert.throws(() => createTemplates(dir).render('password_changed', vars), /unknown_variable/)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('fails at start-up when the override directory cannot be read', () => {
    assert.throws(() => createTemplates('/proc/self/mem/not-a-directory'))
  })

  it('describes link lifetimes in words', () => {
    assert.equal(describeDuration(3600), '60 minutes')
    assert.equal(describeDuration(86_400), '24 hours')
    assert.equal(describeDuration(7200), '2 hours')
    assert.equal(describeDuration(2 * 86_400), '2 days')
    assert.equal(describeDuration(900), '15 minutes')
  })

  it('builds the Message-ID from the message id and the sender domain', () => {
    assert.equal(messageIdHeader('0d4f', 'Tessera <no-reply@auth.example.com>'), '<0d4f@auth.example.com>')
    assert.equal(messageIdHeader('0d4f', 'no-reply@example.org'), '<0d4f@example.org>')
  })
})
