/**
 * On-demand profiles of this process through the V8 inspector (the Node.js counterpart of Go's pprof):
 * a CPU profile, a sampling heap profile and a full heap snapshot, in the formats Chrome DevTools loads.
 *
 * Profiles are expensive, and the inspector belongs to the whole process, so one operation runs at a
 * time per process (a second caller gets `conflict`), whichever management app asked. Every operation is
 * logged at info with the account that asked for it, never with its token.
 */
import type { Profiler as InspectorProfiler, HeapProfiler as InspectorHeapProfiler } from 'node:inspector'
import { Session } from 'node:inspector/promises'
import { createReadStream } from 'node:fs'
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import type { Readable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { writeHeapSnapshot } from 'node:v8'
import { AppError } from '../errors.ts'
import type { Logger } from '../logger.ts'

export type ProfileKind = 'cpu' | 'heap' | 'heapsnapshot'

/** Who asked, for the log line. */
export interface Requester {
  readonly accountId: string
}

export interface HeapSnapshotFile {
  /** The `.heapsnapshot` JSON, read from a private temporary file that is deleted when the stream closes. */
  readonly stream: Readable
  readonly size: number
}

export interface Profiler {
  /**
   * Samples the CPU for `seconds`, then returns the `.cpuprofile` (Profiler.Profile: `nodes`,
   * `startTime`, `endTime`, `samples`, `timeDeltas`).
   * @throws AppError `conflict` while another profiling operation runs; the signal's reason when aborted
   *   (the client went away), after the inspector session is closed.
   */
  cpuProfile(who: Requester, seconds: number, signal: AbortSignal): Promise<InspectorProfiler.Profile>
  /**
   * Samples allocations for `seconds`, then returns the `.heapprofile` (HeapProfiler.SamplingHeapProfile:
   * `head` call tree, `samples`): the sampled objects still alive at the end.
   * @throws AppError `conflict`; the signal's reason when aborted.
   */
  heapProfile(who: Requester, seconds: number, signal: AbortSignal): Promise<InspectorHeapProfiler.SamplingHeapProfile>
  /**
   * Writes a full heap snapshot. V8 stops the whole process while it walks the heap (every request
   * waits), and needs memory of the order of the heap's size to do it.
   * @throws AppError `conflict`.
   */
  heapSnapshot(who: Requester): Promise<HeapSnapshotFile>
}

// Process-wide: the inspector, the heap and the CPU are shared by every app in the process.
let running: ProfileKind | undefined

/** The profiling operation in progress in this process, if any (tests wait on it). */
export function profilingInProgress(): ProfileKind | undefined {
  return running
}

async function exclusively<T>(logger: Logger, who: Requester, kind: ProfileKind, details: Record<string, unknown>, work: () => Promise<T>): Promise<T> {
  if (running !== undefined) {
    logger.info({ account_id: who.accountId, profile: kind, running }, 'profiling refused: another profile is running')
    throw new AppError('conflict', `A ${running} profile is already running in this process; retry when it ends.`)
  }
  running = kind
  const started = performance.now()
  logger.info({ account_id: who.accountId, profile: kind, ...details }, 'profiling started')
  let outcome = 'failed'
  try {
    const result = await work()
    outcome = 'completed'
    return result
  } catch (err) {
    if (err instanceof Error && err.name === 'AbortError') outcome = 'client_gone'
    throw err
  } finally {
    running = undefined
    logger.info({ account_id: who.accountId, profile: kind, outcome, duration_ms: Math.round(performance.now() - started) }, 'profiling ended')
  }
}

/**
 * Runs `work` on a fresh in-process inspector session, always disconnected afterwards — also when the
 * wait is aborted. Disconnecting disables the session's Profiler/HeapProfiler agents, which stops any
 * profile or sampling it had started, so nothing keeps running after the request is gone.
 */
async function withSession<T>(work: (session: Session) => Promise<T>): Promise<T> {
  const session = new Session()
  session.connect()
  try {
    return await work(session)
  } finally {
    session.disconnect()
  }
}

export function createProfiler(deps: { logger: Logger }): Profiler {
  const { logger } = deps
  return {
    cpuProfile(who, seconds, signal) {
      return exclusively(logger, who, 'cpu', { seconds }, () => withSession(async (session) => {
        await session.post('Profiler.enable')
        await session.post('Profiler.start')
        await sleep(seconds * 1000, undefined, { signal })
        const { profile } = await session.post('Profiler.stop')
        return profile
      }))
    },

    heapProfile(who, seconds, signal) {
      return exclusively(logger, who, 'heap', { seconds }, () => withSession(async (session) => {
        await session.post('HeapProfiler.enable')
        await session.post('HeapProfiler.startSampling')
        await sleep(seconds * 1000, undefined, { signal })
        const { profile } = await session.post('HeapProfiler.stopSampling')
        return profile
      }))
    },

    heapSnapshot(who) {
      return exclusively(logger, who, 'heapsnapshot', {}, async () => {
        // Measured on Node 24: the inspector's addHeapSnapshotChunk events all arrive before the event
        // loop turns again, so "streaming" them to the socket would hold the whole serialised snapshot
        // (often larger than the heap) in memory first. V8 writes it to a file instead, chunk by chunk;
        // the file is streamed to the client and deleted. The directory is mkdtemp's (mode 0700): a heap
        // snapshot holds every secret the process has in memory.
        const dir = await mkdtemp(path.join(tmpdir(), 'tessera-heapsnapshot-'))
        const remove = () => rm(dir, { recursive: true, force: true })
        try {
          const file = writeHeapSnapshot(path.join(dir, 'tessera.heapsnapshot'))
          const { size } = await stat(file)
          const stream = createReadStream(file)
          // 'close' follows the end of the stream and its destruction (client gone) alike.
          stream.once('close', () => void remove().catch((err: unknown) => logger.warn({ err, dir }, 'could not remove a heap snapshot file')))
          return { stream, size }
        } catch (err) {
          await remove()
          throw err
        }
      })
    },
  }
}
