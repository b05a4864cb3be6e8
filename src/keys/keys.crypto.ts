/**
 * Secrets derived from TESSERA_KEY_ENCRYPTION_KEY (the KEK), and envelope encryption of signing keys.
 * Each purpose gets its own HKDF-derived key, so one derived key leaking says nothing about the others.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto'

export type KeyPurpose = 'signing-keys' | 'refresh-derivation' | 'email-tokens' | 'audit-chain'

export function deriveSecret(keyEncryptionKey: string, purpose: KeyPurpose): Buffer {
  const kek = Buffer.from(keyEncryptionKey, 'base64')
  if (kek.length !== 32) throw new Error('TESSERA_KEY_ENCRYPTION_KEY must decode to 32 bytes')
  return Buffer.from(hkdfSync('sha256', kek, Buffer.alloc(0), `tessera/${purpose}/v1`, 32))
}

/** AES-256-GCM; `aad` binds the ciphertext to its row (the kid), so rows cannot be swapped. */
export function encrypt(key: Buffer, plaintext: Buffer, aad: string): Buffer {
  const iv = randomBytes(12)
  const cipher = createCipheriv('aes-256-gcm', key, iv)
  cipher.setAAD(Buffer.from(aad, 'utf8'))
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()])
  return Buffer.concat([iv, cipher.getAuthTag(), ciphertext])
}

export function decrypt(key: Buffer, sealed: Buffer, aad: string): Buffer {
  const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, 12))
  decipher.setAAD(Buffer.from(aad, 'utf8'))
  decipher.setAuthTag(sealed.subarray(12, 28))
  return Buffer.concat([decipher.update(sealed.subarray(28)), decipher.final()])
}
