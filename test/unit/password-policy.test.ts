import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import fc from 'fast-check'
import { checkPassword, normalizePassword } from '../../src/passwords/passwords.policy.ts'

const policy = { minLength: 15, maxLength: 256, maxBytes: 1024 }

describe('password policy', () => {
  it('accepts a long passphrase', () => {
    assert.deepEqual(checkPassword('correct horse battery staple', policy), [])
  })

  it('counts length in code points, not UTF-16 units or bytes', () => {
    // 15 emoji are 15 code points (30 UTF-16 units, 60 bytes): long enough.
    assert.deepEqual(checkPassword('🐴🔋📎🐎🔌🖇🦄⚡📌🦓🔦📍🐪💡📏', policy), [])
    // 14 emoji: too short although .length is 28.
    assert.deepEqual(checkPassword('🐴🔋📎🐎🔌🖇🦄⚡📌🦓🔦📍🐪💡', policy), ['too_short'])
  })

  it('measures length after NFKC normalisation', () => {
    // U+FB01 (ﬁ ligature) becomes "fi" under NFKC.
    assert.equal(normalizePassword('ﬁ'), 'fi')
    const composed = 'caf\u00e9-and-more-words'
    const decomposed = 'cafe\u0301-and-more-words'
    assert.equal(normalizePassword(composed), normalizePassword(decomposed))
  })

  it('never truncates: one character over the maximum is rejected, not cut', () => {
    const max = 'x'.repeat(255) + 'y'
    assert.deepEqual(checkPassword(max, policy), [])
    assert.deepEqual(checkPassword(max + 'z', policy), ['too_long'])
  })

  it('rejects more than maxBytes of UTF-8 before anything else', () => {
    const huge = '€'.repeat(400) // 1,200 bytes, 400 code points
    assert.deepEqual(checkPassword(huge, { ...policy, maxLength: 1024 }), ['too_many_bytes'])
  })

  it('rejects common passwords whatever their case', () => {
    assert.ok(checkPassword('1qaz2wsx3edc4rfv', policy).includes('common'))
    assert.ok(checkPassword('1QAZ2WSX3EDC4RFV', policy).includes('common'))
  })

  it('rejects passwords containing the email local part', () => {
    assert.ok(checkPassword('my name is annabelle, hi there', policy, 'annabelle').includes('contains_email'))
    assert.ok(checkPassword('ANNABELLE-forever-and-ever', policy, 'annabelle').includes('contains_email'))
    assert.ok(!checkPassword('a completely different phrase', policy, 'annabelle').includes('contains_email'))
  })

  it('rejects one short unit repeated', () => {
    assert.ok(checkPassword('aaaaaaaaaaaaaaaaaaaa', policy).includes('repetitive'))
    assert.ok(checkPassword('abcabcabcabcabcabc', policy).includes('repetitive'))
    assert.ok(!checkPassword('abcabcabcabcabcabd', policy).includes('repetitive'))
  })

  it('honours a configured minimum', () => {
    assert.deepEqual(checkPassword('unusual8', { ...policy, minLength: 8 }), [])
    assert.deepEqual(checkPassword('unusual', { ...policy, minLength: 8 }), ['too_short'])
  })

  it('never throws and applies no composition rules (property)', () => {
    fc.assert(fc.property(fc.string({ minLength: 0, maxLength: 400, unit: 'binary' }), (s) => {
      const v = checkPassword(s, policy)
      assert.ok(Array.isArray(v))
    }), { numRuns: 1000 })
  })
})
