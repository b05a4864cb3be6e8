/**
 * Rate-limit rules: which operations are limited, by which keys, with which budgets. Defaults are
 * chosen in docs/security.md (why each number); TESSERA_RATE_LIMITS overrides any rule by name.
 *
 * Two kinds of budget per operation:
 * - **attempts** (`<op>.<key>`): every request consumes a point; nothing is given back.
 * - **failures** (`<op>.<key>.fail`): a point is consumed *before* the work and given back when the
 *   request succeeds. Taking it first is what makes the budget hold under concurrency: of 100 parallel
 *   wrong passwords for one account, at most the budget reach the password check.
 */
import { Type, type Static } from 'typebox'
import { Value } from 'typebox/value'

/** What a request is counted by. `account` is the canonical email (the same for existing and unknown accounts). */
export type KeyKind = 'ip' | 'account' | 'account_ip'

export const OPERATIONS = {
  login: { attempts: ['ip', 'account'], failures: ['ip', 'account', 'account_ip'] },
  register: { attempts: ['ip'], failures: [] },
  refresh: { attempts: ['ip'], failures: ['ip'] },
  password_reset: { attempts: ['ip', 'account'], failures: [] },
  password_reset_confirm: { attempts: ['ip'], failures: ['ip'] },
  email_verification: { attempts: ['ip', 'account'], failures: [] },
  email_verification_confirm: { attempts: ['ip'], failures: ['ip'] },
  email_change: { attempts: ['ip'], failures: ['ip'] },
  introspect: { attempts: ['ip'], failures: ['ip'] },
  admin: { attempts: ['ip'], failures: [] },
} as const satisfies Record<string, { attempts: readonly KeyKind[]; failures: readonly KeyKind[] }>

export type Operation = keyof typeof OPERATIONS

export interface Rule {
  /** Points in the window. */
  readonly points: number
  /** Window length. */
  readonly seconds: number
}

const MINUTE = 60
const HOUR = 3600

/** Default budgets; the reasons are in docs/security.md. */
export const DEFAULT_RULES: Readonly<Record<string, Rule>> = {
  'login.ip': { points: 60, seconds: MINUTE },
  'login.account': { points: 20, seconds: MINUTE },
  'login.ip.fail': { points: 50, seconds: HOUR },
  'login.account.fail': { points: 50, seconds: HOUR },
  'login.account_ip.fail': { points: 5, seconds: 15 * MINUTE },
  'register.ip': { points: 20, seconds: HOUR },
  'refresh.ip': { points: 600, seconds: MINUTE },
  'refresh.ip.fail': { points: 60, seconds: 10 * MINUTE },
  'password_reset.ip': { points: 20, seconds: HOUR },
  'password_reset.account': { points: 5, seconds: HOUR },
  'password_reset_confirm.ip': { points: 30, seconds: 10 * MINUTE },
  'password_reset_confirm.ip.fail': { points: 20, seconds: 10 * MINUTE },
  'email_verification.ip': { points: 20, seconds: HOUR },
  'email_verification.account': { points: 5, seconds: HOUR },
  'email_verification_confirm.ip': { points: 30, seconds: 10 * MINUTE },
  'email_verification_confirm.ip.fail': { points: 20, seconds: 10 * MINUTE },
  'email_change.ip': { points: 20, seconds: HOUR },
  'email_change.ip.fail': { points: 10, seconds: HOUR },
  'introspect.ip': { points: 1200, seconds: MINUTE },
  'introspect.ip.fail': { points: 60, seconds: 10 * MINUTE },
  'admin.ip': { points: 300, seconds: MINUTE },
}

const Overrides = Type.Record(Type.String({ pattern: '^[a-z_]+\\.(ip|account|account_ip)(\\.fail)?$' }), Type.Object({
  points: Type.Integer({ minimum: 1, maximum: 1_000_000 }),
  seconds: Type.Integer({ minimum: 1, maximum: 86_400 }),
}, { additionalProperties: false }))

/**
 * The effective rules: defaults, with TESSERA_RATE_LIMITS applied.
 * @throws Error naming the problem when the overrides are not valid JSON, name an unknown rule, or
 *   have out-of-range values (start-up fails).
 */
export function resolveRules(overridesJson: string | undefined): Readonly<Record<string, Rule>> {
  if (overridesJson === undefined) return DEFAULT_RULES
  let parsed: unknown
  try {
    parsed = JSON.parse(overridesJson)
  } catch {
    throw new Error('TESSERA_RATE_LIMITS is not valid JSON')
  }
  if (!Value.Check(Overrides, parsed)) {
    const first = Value.Errors(Overrides, parsed)[0]
    throw new Error(`TESSERA_RATE_LIMITS: ${first?.instancePath ?? ''} ${first?.message ?? 'is not valid'}`)
  }
  const overrides: Static<typeof Overrides> = parsed
  const unknown = Object.keys(overrides).filter((name) => !(name in DEFAULT_RULES))
  if (unknown.length > 0) throw new Error(`TESSERA_RATE_LIMITS: unknown rule(s) ${unknown.join(', ')} (see docs/security.md)`)
  return Object.freeze({ ...DEFAULT_RULES, ...overrides })
}

/**
 * The key of a client address: an IPv4 address as is, an IPv6 address by its /64 (one customer's
 * network; a single host can use any address in it). IPv4-mapped IPv6 counts as IPv4.
 */
export function ipKey(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip)
  if (mapped?.[1] !== undefined) return mapped[1]
  if (!ip.includes(':')) return ip
  const [head = '', tail = ''] = ip.toLowerCase().split('::')
  const headParts = head === '' ? [] : head.split(':')
  const tailParts = ip.includes('::') ? (tail === '' ? [] : tail.split(':')) : []
  const missing = 8 - headParts.length - tailParts.length
  const groups = ip.includes('::') ? [...headParts, ...Array<string>(Math.max(0, missing)).fill('0'), ...tailParts] : headParts
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '')).join(':')}::/64`
}
