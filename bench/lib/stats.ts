/**
 * Latency samples and percentiles. Every sample is kept (a few hundred thousand doubles at most per run),
 * so percentiles are exact, not bucketed.
 */

export interface Percentiles {
  readonly count: number
  readonly p50: number
  readonly p95: number
  readonly p99: number
  readonly max: number
  readonly mean: number
}

export interface Samples {
  add(ms: number): void
  readonly count: () => number
  percentiles(): Percentiles
  /** A copy of the samples. */
  values(): Float64Array
}

export function createSamples(initialCapacity = 65_536): Samples {
  let data = new Float64Array(initialCapacity)
  let n = 0
  return {
    add(ms) {
      if (n === data.length) {
        const bigger = new Float64Array(data.length * 2)
        bigger.set(data)
        data = bigger
      }
      data[n++] = ms
    },
    count: () => n,
    values: () => data.slice(0, n),
    percentiles() {
      const sorted = data.slice(0, n).sort()
      return percentilesOfSorted(sorted)
    },
  }
}

/** Nearest-rank percentile (the smallest sample with at least q of the samples at or below it). */
function rank(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))
  return sorted[index] ?? Number.NaN
}

export function percentilesOfSorted(sorted: Float64Array): Percentiles {
  let sum = 0
  for (const v of sorted) sum += v
  return {
    count: sorted.length,
    p50: rank(sorted, 0.5),
    p95: rank(sorted, 0.95),
    p99: rank(sorted, 0.99),
    max: sorted.length === 0 ? Number.NaN : (sorted[sorted.length - 1] ?? Number.NaN),
    mean: sorted.length === 0 ? Number.NaN : sum / sorted.length,
  }
}

/** One measured slice of a saturation run (one side of one round). */
export interface Segment {
  readonly ok: number
  readonly errors: number
  readonly timeouts: number
  readonly elapsedS: number
  readonly latencies: Float64Array
  readonly statusCounts: Readonly<Record<string, number>>
}

export interface Aggregate {
  readonly rounds: number
  readonly durationS: number
  readonly ok: number
  /** Successful operations per second over all rounds (sum of ok / sum of measured time). */
  readonly rps: number
  /** The rate of each round, in order. */
  readonly perRound: readonly number[]
  readonly latencyMs: Percentiles
  readonly errors: number
  readonly timeouts: number
  readonly statusCounts: Readonly<Record<string, number>>
}

export function aggregate(segments: readonly Segment[]): Aggregate {
  let ok = 0
  let errors = 0
  let timeouts = 0
  let durationS = 0
  let n = 0
  const statusCounts: Record<string, number> = {}
  for (const s of segments) {
    ok += s.ok
    errors += s.errors
    timeouts += s.timeouts
    durationS += s.elapsedS
    n += s.latencies.length
    for (const [k, v] of Object.entries(s.statusCounts)) statusCounts[k] = (statusCounts[k] ?? 0) + v
  }
  const all = new Float64Array(n)
  let at = 0
  for (const s of segments) {
    all.set(s.latencies, at)
    at += s.latencies.length
  }
  return {
    rounds: segments.length,
    durationS,
    ok,
    rps: durationS > 0 ? ok / durationS : 0,
    perRound: segments.map((s) => (s.elapsedS > 0 ? s.ok / s.elapsedS : 0)),
    latencyMs: percentilesOfSorted(all.sort()),
    errors,
    timeouts,
    statusCounts,
  }
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? (sorted[mid] ?? Number.NaN) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2
}
