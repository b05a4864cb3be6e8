/**
 * Refresh tokens: opaque, 256 bits from the CSPRNG, stored only as SHA-256.
 *
 * A rotation's child is derived from its parent with a server secret: child = HMAC(secret, parent).
 * A retry of the same parent inside the grace window therefore yields the very same child, computed
 * again from what the client sent, while no plain token is ever kept at rest.
 */
import { createHash, createHmac, randomBytes, type KeyObject } from 'node:crypto'

/** Visible prefix: lets secret scanners recognise a leaked Tessera refresh token. */
export const REFRESH_TOKEN_PREFIX = 'tsr_'
const TOKEN_SHAPE = /^tsr_[A-Za-z0-9_-]{43}$/

export function generateRefreshToken(): string {
  return REFRESH_TOKEN_PREFIX + randomBytes(32).toString('base64url')
}

/** `secret` is best a KeyObject (createSecretKey), built once: a raw Buffer is imported on every call. */
export function deriveChildToken(secret: KeyObject | Buffer, parent: string): string {
  return REFRESH_TOKEN_PREFIX + createHmac('sha256', secret).update(parent).digest('base64url')
}

export function hashToken(token: string): Buffer {
  return createHash('sha256').update(token).digest()
}

/** Cheap shape check before any lookup: anything else cannot be one of ours. */
export function looksLikeRefreshToken(token: string): boolean {
  return TOKEN_SHAPE.test(token)
}
