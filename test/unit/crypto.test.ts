import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import { decrypt, deriveSecret, encrypt } from '../../src/keys/keys.crypto.ts'
import { deriveChildToken, generateRefreshToken, hashToken, looksLikeRefreshToken } from '../../src/tokens/refresh-tokens.ts'

const kek = randomBytes(32).toString('base64')

describe('key encryption', () => {
  it('round-trips and derives distinct keys per purpose', () => {
    const a = deriveSecret(kek, 'signing-keys')
    const b = deriveSecret(kek, 'refresh-derivation')
    assert.equal(a.length, 32)
    assert.notDeepEqual(a, b)
    const sealed = encrypt(a, Buffer.from('secret key material'), 'kid-1')
    assert.equal(decrypt(a, sealed, 'kid-1').toString(), 'secret key material')
  })

  it('refuses a ciphertext moved to another row, or tampered, or under another KEK', () => {
    const key = deriveSecret(kek, 'signing-keys')
    const sealed = encrypt(key, Buffer.from('x'.repeat(48)), 'kid-1')
    assert.throws(() => decrypt(key, sealed, 'kid-2'))
    const flipped = Buffer.from(sealed)
    flipped[flipped.length - 1] = (flipped[flipped.length - 1] ?? 0) ^ 1
    assert.throws(() => decrypt(key, flipped, 'kid-1'))
    assert.throws(() => decrypt(deriveSecret(randomBytes(32).toString('base64'), 'signing-keys'), sealed, 'kid-1'))
  })

  it('rejects a KEK that is not 32 bytes', () => {
    assert.throws(() => deriveSecret(randomBytes(16).toString('base64'), 'signing-keys'), /32 bytes/)
  })
})

describe('refresh tokens', () => {
  it('are 256-bit, prefixed and recognisable', () => {
    const t = generateRefreshToken()
    assert.ok(looksLikeRefreshToken(t))
    assert.equal(Buffer.from(t.slice(4), 'base64url').length, 32)
    assert.notEqual(generateRefreshToken(), t)
    assert.ok(!looksLikeRefreshToken('eyJhbGciOi.x.y'))
  })

  it('derive the same child from the same parent, and different children otherwise', () => {
    const secret = deriveSecret(kek, 'refresh-derivation')
    const parent = generateRefreshToken()
    assert.equal(deriveChildToken(secret, parent), deriveChildToken(secret, parent))
    assert.notEqual(deriveChildToken(secret, parent), deriveChildToken(secret, generateRefreshToken()))
    assert.notEqual(deriveChildToken(secret, parent), deriveChildToken(deriveSecret(randomBytes(32).toString('base64'), 'refresh-derivation'), parent))
    assert.ok(looksLikeRefreshToken(deriveChildToken(secret, parent)))
  })

  it('hash to 32 bytes of SHA-256', () => {
    assert.equal(hashToken('abc').toString('hex'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')
  })
})
