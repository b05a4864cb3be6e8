/**
 * Password policy (NIST SP 800-63B rev 4, OWASP ASVS 6.2): length in code points after NFKC, no
 * composition rules, no truncation, a byte cap before hashing, and a list of common passwords.
 */
import { dictionary } from '@zxcvbn-ts/language-common'
import { AppError } from '../errors.ts'

export interface PasswordPolicy {
  readonly minLength: number
  readonly maxLength: number
  readonly maxBytes: number
}

export type PasswordViolation = 'too_short' | 'too_long' | 'too_many_bytes' | 'common' | 'contains_email' | 'repetitive'

/** Lower-cased common passwords (the zxcvbn-ts common list, ~49k entries), loaded once. */
const commonPasswords: ReadonlySet<string> = new Set(
  (dictionary['passwords-common'] as readonly string[]).map((p) => p.normalize('NFKC').toLowerCase()),
)

/** NFKC is the only transformation applied to a password, here and before hashing. */
export function normalizePassword(password: string): string {
  return password.normalize('NFKC')
}

function codePoints(s: string): number {
  return Array.from(s).length
}

/** True when the string is one unit repeated ("aaaa…", "abcabc…", "passwordpassword"). Linear per unit. */
function isRepetition(s: string): boolean {
  const chars = [...s]
  outer: for (let unit = 1; unit <= chars.length / 2; unit++) {
    if (chars.length % unit !== 0) continue
    for (let i = unit; i < chars.length; i++) if (chars[i] !== chars[i % unit]) continue outer
    return true
  }
  return false
}

/**
 * Returns every rule the password breaks (empty when it is acceptable). `password` is the raw input;
 * `emailLocalPart` is the canonical local part of the account's email, when known.
 */
export function checkPassword(password: string, policy: PasswordPolicy, emailLocalPart?: string): PasswordViolation[] {
  // The byte cap is checked on the raw input first, so that no expensive work is done on huge strings.
  if (Buffer.byteLength(password, 'utf8') > policy.maxBytes) return ['too_many_bytes']
  const normalized = normalizePassword(password)
  if (Buffer.byteLength(normalized, 'utf8') > policy.maxBytes) return ['too_many_bytes']
  const violations: PasswordViolation[] = []
  const length = codePoints(normalized)
  if (length < policy.minLength) violations.push('too_short')
  if (length > policy.maxLength) violations.push('too_long')
  const lower = normalized.toLowerCase()
  if (commonPasswords.has(lower)) violations.push('common')
  if (emailLocalPart !== undefined && emailLocalPart.length >= 3 && lower.includes(emailLocalPart.toLowerCase())) {
    violations.push('contains_email')
  }
  if (isRepetition(lower)) violations.push('repetitive')
  return violations
}

export const violationMessages: Record<PasswordViolation, string> = {
  too_short: 'The password is too short.',
  too_long: 'The password is too long.',
  too_many_bytes: 'The password is too long.',
  common: 'The password is too common.',
  contains_email: 'The password must not contain the email address.',
  repetitive: 'The password must not be a short sequence repeated.',
}

/**
 * Checks `password` against the policy and returns its normalised form (what gets hashed).
 * @throws AppError `password_policy`, listing every violation with `pointer` (the request field).
 */
export function enforcePasswordPolicy(password: string, policy: PasswordPolicy, emailLocalPart: string, pointer: string): string {
  const violations = checkPassword(password, policy, emailLocalPart)
  if (violations.length > 0) {
    throw new AppError('password_policy', violations.map((v) => violationMessages[v]).join(' '), {
      violations,
      errors: violations.map((v) => ({ pointer, detail: violationMessages[v] })),
      min_length: policy.minLength,
    })
  }
  return normalizePassword(password)
}
