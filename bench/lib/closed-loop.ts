/**
 * Saturation runs: closed loop with autocannon (each connection sends its next request as soon as the
 * previous answer arrives). The latency of every 2xx response is kept for exact percentiles; anything
 * else counts as an error.
 */
import autocannon, { type AutocannonInstance, type AutocannonRequest } from 'autocannon'
import { createSamples, type Segment } from './stats.ts'

export interface ClosedLoopSpec {
  readonly url: string
  readonly connections: number
  /** The request sequence of connection number `slot` (a connection repeats it until the end). */
  readonly requests: (slot: number) => AutocannonRequest[]
}

let current: AutocannonInstance | undefined
let stopRequested = false

/** Stops the run in progress (Ctrl-C). */
export function stopClosedLoop(): void {
  stopRequested = true
  current?.stop()
}

/** One closed-loop segment of about `durationS` seconds (autocannon stops on a one-second tick). */
export async function closedLoopSegment(spec: ClosedLoopSpec, durationS: number): Promise<Segment> {
  if (stopRequested) throw new Error('interrupted')
  let slot = 0
  const samples = createSamples()
  const statusCounts: Record<string, number> = {}
  let ok = 0
  let first = Number.NaN
  let last = Number.NaN
  const instance = autocannon({
    url: spec.url,
    connections: spec.connections,
    duration: durationS,
    timeout: 10,
    setupClient: (client) => { client.setRequests(spec.requests(slot++)) },
  })
  current = instance
  const started = performance.now()
  instance.on('response', (_client, statusCode, _bytes, responseTime) => {
    const now = performance.now()
    if (Number.isNaN(first)) first = now - responseTime
    last = now
    statusCounts[statusCode] = (statusCounts[statusCode] ?? 0) + 1
    if (statusCode >= 200 && statusCode < 300) {
      ok++
      samples.add(responseTime)
    }
  })
  const result = await instance
  current = undefined
  // The measured interval runs from the first request's send to the last response (autocannon's own
  // duration includes connection set-up and its stop tick).
  const elapsedS = Number.isNaN(first) ? (performance.now() - started) / 1000 : (last - first) / 1000
  const answered = Object.values(statusCounts).reduce((a, b) => a + b, 0)
  return {
    ok,
    errors: result.errors + (answered - ok),
    timeouts: result.timeouts,
    elapsedS,
    latencies: samples.values(),
    statusCounts,
  }
}
