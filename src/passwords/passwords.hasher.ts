/**
 * Password hashing: argon2id through `@node-rs/argon2`, which runs on libuv's thread pool, never on the
 * event loop. Concurrency is bounded here (one hash per core by default: more adds no capacity, see
 * PERFORMANCE.md), and the wait queue is bounded too: past it, callers get `overloaded` (503 +
 * Retry-After) at once instead of a request that times out in a queue.
 */
import { hash, parseOptions, verify, type Algorithm } from '@node-rs/argon2'
import { SpanStatusCode, trace } from '@opentelemetry/api'
import pLimit from 'p-limit'
import { AppError } from '../errors.ts'

export interface Argon2Params {
  readonly memoryCost: number
  readonly timeCost: number
  readonly parallelism: number
}

export interface PasswordHasherOptions {
  readonly argon2: Argon2Params
  readonly concurrency: number
  readonly queueLimit: number
}

export interface VerifyResult {
  readonly ok: boolean
  /** True when the stored hash was made with other parameters than the current ones: rehash it. */
  readonly needsRehash: boolean
}

export interface PasswordHasher {
  hash(password: string): Promise<string>
  /** Verifies against a stored PHC string. A hash with absurd parameters is refused, never computed. */
  verify(storedHash: string, password: string): Promise<VerifyResult>
  /** Spends the same work as a real verification, for accounts that do not exist (timing defence). */
  verifyDummy(password: string): Promise<void>
  readonly stats: () => { readonly active: number; readonly queued: number }
}

/**
 * Ceilings on parameters read back from stored hashes: a tampered or foreign hash must not make one
 * login cost seconds of CPU or gigabytes of memory (cf. kratos' hash limits).
 */
export const storedHashCeilings = { memoryCost: 262_144, timeCost: 10, parallelism: 8 } as const

const ARGON2ID = 2 as Algorithm // Algorithm.Argon2id: a const enum, which erasable TypeScript cannot import

const tracer = trace.getTracer('tessera')

/**
 * One span per operation (`password.hash`, `password.verify`), the wait for a slot included: that is
 * what a request pays. A no-op with tracing off. The dummy verification of unknown accounts is a
 * `password.verify` like any other, with nothing to tell it apart. Never an attribute from the input.
 */
function traced<T>(name: string, work: () => Promise<T>): Promise<T> {
  const span = tracer.startSpan(name)
  return work().then(
    (result) => {
      span.end()
      return result
    },
    (err: unknown) => {
      // The code (e.g. overloaded) or the error's name; never its message.
      span.setAttribute('error.type', err instanceof AppError ? err.code : err instanceof Error ? err.name : 'unknown')
      span.setStatus({ code: SpanStatusCode.ERROR })
      span.end()
      throw err
    },
  )
}

export function createPasswordHasher(options: PasswordHasherOptions): PasswordHasher {
  const limit = pLimit(options.concurrency)
  const params = { ...options.argon2, algorithm: ARGON2ID, outputLen: 32 }
  let dummyHash: Promise<string> | undefined

  function admit<T>(fn: () => Promise<T>): Promise<T> {
    // Counted together: p-limit moves a job from pending to active in a microtask, so either count
    // alone can lag behind a burst that arrives within one tick.
    if (limit.activeCount + limit.pendingCount >= options.concurrency + options.queueLimit) {
      return Promise.reject(new AppError('overloaded', 'Too many password operations in progress; retry shortly.', {}, { retryAfterSeconds: 1 }))
    }
    return limit(fn)
  }

  function isCurrent(stored: string): { usable: boolean; current: boolean } {
    let parsed
    try {
      parsed = parseOptions(stored)
    } catch {
      return { usable: false, current: false }
    }
    const usable = parsed.algorithm === ARGON2ID && parsed.memoryCost <= storedHashCeilings.memoryCost &&
      parsed.timeCost <= storedHashCeilings.timeCost && parsed.parallelism <= storedHashCeilings.parallelism
    const current = parsed.memoryCost === params.memoryCost && parsed.timeCost === params.timeCost &&
      parsed.parallelism === params.parallelism && parsed.outputLen === params.outputLen
    return { usable, current }
  }

  async function verifyDummy(password: string): Promise<void> {
    dummyHash ??= hash('tessera-dummy-password-for-unknown-accounts', params)
    const stored = await dummyHash
    await admit(() => verify(stored, password))
  }

  async function verifyStored(storedHash: string, password: string): Promise<VerifyResult> {
    const { usable, current } = isCurrent(storedHash)
    if (!usable) {
      await verifyDummy(password)
      return { ok: false, needsRehash: false }
    }
    const ok = await admit(() => verify(storedHash, password))
    return { ok, needsRehash: ok && !current }
  }

  return {
    hash: (password) => traced('password.hash', () => admit(() => hash(password, params))),
    verify: (storedHash, password) => traced('password.verify', () => verifyStored(storedHash, password)),
    verifyDummy: (password) => traced('password.verify', () => verifyDummy(password)),
    stats: () => ({ active: limit.activeCount, queued: limit.pendingCount }),
  }
}
