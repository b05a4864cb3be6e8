/**
 * Response-time floor for answers that must not reveal whether an account exists. The work behind
 * "send a reset link" differs by a millisecond or two between an unknown address (one lookup) and a
 * known one (a transaction that writes a token, a message and a job); measured over enough requests,
 * that difference would enumerate accounts. Holding the answer until a fixed floor makes every case
 * take the floor, as long as the work fits under it (the floor is far above the measured work).
 */
import { setTimeout as sleep } from 'node:timers/promises'

export async function withMinimumDuration<T>(floorMs: number, fn: () => Promise<T>): Promise<T> {
  const started = performance.now()
  try {
    return await fn()
  } finally {
    const left = floorMs - (performance.now() - started)
    if (left > 0) await sleep(left)
  }
}
