/**
 * Canonical email addresses. The canonical form is the account's identity: uniqueness, lookups and
 * rate-limit keys all use it, so "Ann@Example.com", " ann@example.com " and full-width variants are one
 * account. Grammar (documented in docs/api.md):
 *
 * - trimmed of surrounding white space, NFKC-normalised, then lower-cased;
 * - at most 254 code points and 320 UTF-8 bytes; exactly one `@`;
 * - local part: 1–64 code points of letters, digits, marks and ``!#$%&'*+/=?^_`{|}~-``, with dots
 *   between (none leading, trailing or doubled); no quoted strings or comments;
 * - domain: at least two dot-separated labels of 1–63 letters, digits or marks, with inner hyphens;
 *   the last label is not all digits (no IP literals). Internationalised names are kept in Unicode.
 *
 * Linear-time checks only: no backtracking regular expression sees unbounded input.
 */
export const EMAIL_MAX_INPUT_LENGTH = 512

const LOCAL_ATOM = /^[\p{L}\p{N}\p{M}!#$%&'*+/=?^_`{|}~-]+$/u
const DOMAIN_LABEL = /^[\p{L}\p{N}\p{M}](?:[\p{L}\p{N}\p{M}-]{0,61}[\p{L}\p{N}\p{M}])?$/u
const ALL_DIGITS = /^[0-9]+$/

/** Returns the canonical form, or undefined when the input is not an acceptable address. */
export function canonicalEmail(input: string): string | undefined {
  if (input.length > EMAIL_MAX_INPUT_LENGTH) return undefined
  const email = input.trim().normalize('NFKC').toLowerCase()
  if ([...email].length > 254 || Buffer.byteLength(email, 'utf8') > 320) return undefined
  const at = email.indexOf('@')
  if (at <= 0 || at !== email.lastIndexOf('@')) return undefined
  const local = email.slice(0, at)
  const domain = email.slice(at + 1)
  if ([...local].length > 64) return undefined
  if (!local.split('.').every((atom) => LOCAL_ATOM.test(atom))) return undefined
  if (domain.length === 0 || domain.length > 253) return undefined
  const labels = domain.split('.')
  if (labels.length < 2 || !labels.every((label) => DOMAIN_LABEL.test(label))) return undefined
  if (ALL_DIGITS.test(labels[labels.length - 1] ?? '')) return undefined
  return email
}

export function localPart(canonical: string): string {
  return canonical.slice(0, canonical.indexOf('@'))
}
