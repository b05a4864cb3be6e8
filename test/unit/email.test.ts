import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import fc from 'fast-check'
import { canonicalEmail, localPart } from '../../src/accounts/accounts.email.ts'

describe('canonicalEmail', () => {
  it('trims, NFKC-normalises and lower-cases', () => {
    assert.equal(canonicalEmail('  Ann@Example.COM \n'), 'ann@example.com')
    // Full-width letters and the full-width @ fold to ASCII under NFKC.
    assert.equal(canonicalEmail('ＡＮＮ＠ＥＸＡＭＰＬＥ．ＣＯＭ'), 'ann@example.com')
    assert.equal(canonicalEmail('Ünïcödé@bücher.de'), 'ünïcödé@bücher.de')
  })

  it('accepts the documented grammar', () => {
    for (const ok of ['a@b.co', "o'brien+tag@mail.example.org", 'x_y-z@sub-domain.example.io', 'a.b.c@d.e.fg', '1@2.xyz']) {
      assert.notEqual(canonicalEmail(ok), undefined, ok)
    }
  })

  it('rejects what the grammar excludes', () => {
    const bad = [
      '', 'plain', '@example.com', 'ann@', 'ann@@example.com', 'a@b@c.com', 'ann@example', '.ann@example.com',
      'ann.@example.com', 'a..b@example.com', 'ann@-example.com', 'ann@example-.com', 'ann@exa_mple.com',
      'ann@[127.0.0.1]', 'ann@1.2.3.4', '"quoted"@example.com', 'ann (comment)@example.com', 'an n@example.com',
      `${'a'.repeat(65)}@example.com`, `a@${'b'.repeat(64)}.com`, `a@${'b.'.repeat(130)}com`, 'ann@example..com',
    ]
    for (const input of bad) assert.equal(canonicalEmail(input), undefined, JSON.stringify(input))
  })

  it('bounds the input before any work (ReDoS-shaped and huge strings)', () => {
    assert.equal(canonicalEmail('a'.repeat(100_000) + '@example.com'), undefined)
    assert.equal(canonicalEmail(`a@${'a-'.repeat(200)}`), undefined)
    assert.equal(canonicalEmail('@'.repeat(500)), undefined)
  })

  it('is idempotent and never throws (property)', () => {
    fc.assert(fc.property(fc.string({ maxLength: 300 }), (s) => {
      const once = canonicalEmail(s)
      if (once !== undefined) assert.equal(canonicalEmail(once), once)
    }), { numRuns: 2000 })
  })

  it('maps case and width variants of a valid address to one identity (property)', () => {
    const atom = fc.stringMatching(/^[a-z0-9]{1,12}$/)
    fc.assert(fc.property(atom, atom, fc.constantFrom('com', 'org', 'io'), (user, host, tld) => {
      const base = `${user}@${host}.${tld}`
      const upper = base.toUpperCase()
      const wide = [...upper].map((c) => (c >= '!' && c <= '~' ? String.fromCodePoint(c.codePointAt(0)! + 0xfee0) : c)).join('')
      assert.equal(canonicalEmail(upper), base)
      assert.equal(canonicalEmail(wide), base)
      assert.equal(canonicalEmail(` ${base}\t`), base)
    }), { numRuns: 500 })
  })

  it('extracts the local part', () => {
    assert.equal(localPart('ann.lee@example.com'), 'ann.lee')
  })
})
