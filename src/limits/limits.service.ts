/**
 * Rate limits shared by every instance through Redis (rate-limiter-flexible: one atomic Lua script per
 * consume), with an in-memory limiter per rule as the insurance while Redis is away (each instance then
 * enforces the budget alone, so a cluster allows up to N times the budget until Redis is back). Without
 * REDIS_URL the in-memory limiters are the limiters: right for one node.
 */
import { Redis } from 'ioredis'
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible'
import { AppError } from '../errors.ts'
import type { Logger } from '../logger.ts'
import type { Metrics } from '../observability/metrics.ts'
import { ipKey, OPERATIONS, type KeyKind, type Operation, type Rule } from './limits.rules.ts'

export interface LimitKeys {
  /** The client address (request.ip: the socket peer, or the rightmost untrusted hop behind trusted proxies). */
  readonly ip: string
  /** The canonical account identifier (email) the request names, if any. */
  readonly account?: string | undefined
}

/** What a request holds after passing: give its failure points back if it succeeds. */
export interface LimitTicket {
  /** The tightest attempts rule on the client address, for the RateLimit headers. */
  readonly policy: { readonly name: string; readonly rule: Rule; readonly remaining: number; readonly resetSeconds: number } | undefined
  succeeded(): Promise<void>
}

interface Limiter {
  readonly name: string
  readonly rule: Rule
  readonly kind: KeyKind
  readonly limiter: RateLimiterAbstract
}

/** draft-ietf-httpapi-ratelimit-headers: the policy (quota, window) and the current state (remaining, reset). */
export function rateLimitHeaders(p: { name: string; rule: Rule; remaining: number; resetSeconds: number }): Record<string, string> {
  return {
    'ratelimit-policy': `"${p.name}";q=${p.rule.points};w=${p.rule.seconds}`,
    ratelimit: `"${p.name}";r=${Math.max(0, p.remaining)};t=${p.resetSeconds}`,
  }
}

function keyFor(kind: KeyKind, keys: LimitKeys): string | undefined {
  const ip = ipKey(keys.ip)
  if (kind === 'ip') return ip
  if (keys.account === undefined || keys.account === '') return undefined
  return kind === 'account' ? keys.account : `${keys.account}|${ip}`
}

export function createRateLimits(deps: { rules: Readonly<Record<string, Rule>>; redisUrl: string | undefined; logger: Logger; metrics: Metrics }) {
  const { rules, logger, metrics } = deps
  const redis = deps.redisUrl === undefined ? undefined : new Redis(deps.redisUrl, {
    // rate-limiter-flexible's advice for ioredis: fail at once while disconnected (the insurance
    // limiter answers), never queue commands in memory.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    retryStrategy: (times: number) => Math.min(100 * 2 ** times, 2000),
  })
  redis?.on('error', (err: Error) => logger.debug({ err: { message: err.message } }, 'rate-limit redis error'))

  function build(name: string, kind: KeyKind): Limiter {
    const rule = rules[name]
    if (rule === undefined) throw new Error(`no rate-limit rule ${name}`)
    const memory = new RateLimiterMemory({ keyPrefix: name, points: rule.points, duration: rule.seconds })
    const limiter = redis === undefined
      ? memory
      : new RateLimiterRedis({ storeClient: redis, keyPrefix: `tessera:rl:${name}`, points: rule.points, duration: rule.seconds, insuranceLimiter: memory, rejectIfRedisNotReady: true })
    return { name, rule, kind, limiter }
  }

  const byOperation = new Map<Operation, { attempts: Limiter[]; failures: Limiter[] }>()
  for (const [op, spec] of Object.entries(OPERATIONS) as Array<[Operation, (typeof OPERATIONS)[Operation]]>) {
    byOperation.set(op, {
      attempts: spec.attempts.map((kind) => build(`${op}.${kind}`, kind)),
      failures: spec.failures.map((kind) => build(`${op}.${kind}.fail`, kind)),
    })
  }

  /** Consumes one point of each applicable limiter; on any refusal gives back what it took and throws 429. */
  async function consumeAll(limiters: Limiter[], keys: LimitKeys, refundOnRefusal: boolean): Promise<Array<{ l: Limiter; key: string; res: RateLimiterRes }>> {
    const applicable = limiters.flatMap((l) => {
      const key = keyFor(l.kind, keys)
      return key === undefined ? [] : [{ l, key }]
    })
    const results = await Promise.allSettled(applicable.map(({ l, key }) => l.limiter.consume(key)))
    const refused: Array<{ l: Limiter; res: RateLimiterRes }> = []
    const taken: Array<{ l: Limiter; key: string; res: RateLimiterRes }> = []
    results.forEach((r, i) => {
      const { l, key } = applicable[i] as { l: Limiter; key: string }
      if (r.status === 'fulfilled') taken.push({ l, key, res: r.value })
      else if (r.reason instanceof RateLimiterRes) refused.push({ l, res: r.reason })
      // A store error without insurance cannot happen (memory insurance); treat it as taken, not as a refusal.
      else logger.warn({ err: { message: String(r.reason) }, rule: l.name }, 'rate limiter failed; request allowed')
    })
    if (refused.length === 0) return taken
    if (refundOnRefusal) await Promise.all(taken.map(({ l, key }) => l.limiter.reward(key).catch(() => undefined)))
    const worst = refused.reduce((a, b) => (b.res.msBeforeNext > a.res.msBeforeNext ? b : a))
    for (const { l } of refused) metrics.rateLimited.inc({ rule: l.name, key_type: l.kind })
    const retryAfter = Math.max(1, Math.ceil(worst.res.msBeforeNext / 1000))
    throw new AppError('rate_limited', 'Too many requests: wait before trying again.', {}, {
      retryAfterSeconds: retryAfter,
      headers: rateLimitHeaders({ name: worst.l.name, rule: worst.l.rule, remaining: 0, resetSeconds: retryAfter }),
    })
  }

  return {
    /**
     * Counts a request of `op` against every budget that applies; the same work and the same answer
     * whether or not the account exists.
     * @throws AppError `rate_limited` (429, with `Retry-After`) when any budget is spent.
     */
    async check(op: Operation, keys: LimitKeys): Promise<LimitTicket> {
      const set = byOperation.get(op)
      if (set === undefined) throw new Error(`unknown rate-limited operation ${op}`)
      const attempts = await consumeAll(set.attempts, keys, false)
      const failures = await consumeAll(set.failures, keys, true)
      const ipAttempt = attempts.filter((a) => a.l.kind === 'ip').sort((a, b) => a.res.remainingPoints - b.res.remainingPoints)[0]
      return {
        policy: ipAttempt === undefined ? undefined : {
          name: ipAttempt.l.name,
          rule: ipAttempt.l.rule,
          remaining: ipAttempt.res.remainingPoints,
          resetSeconds: Math.max(1, Math.ceil(ipAttempt.res.msBeforeNext / 1000)),
        },
        async succeeded() {
          await Promise.all(failures.map(({ l, key }) => l.limiter.reward(key).catch(() => undefined)))
        },
      }
    },

    /** Forgets an account's failure budgets (after a password reset: the owner proved themselves). */
    async forgetAccount(op: Operation, account: string): Promise<void> {
      const set = byOperation.get(op)
      await Promise.all((set?.failures ?? []).filter((l) => l.kind === 'account').map((l) => l.limiter.delete(account).catch(() => undefined)))
    },

    close(): void {
      redis?.disconnect()
    },
  }
}

export type RateLimits = ReturnType<typeof createRateLimits>
