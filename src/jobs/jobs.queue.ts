/**
 * The job queue: pg-boss behind a small interface of ours, so the rest of the code never imports it.
 *
 * Why pg-boss: jobs live in PostgreSQL, next to the data, and `enqueue` runs on the caller's
 * transaction, so a job exists exactly when the change that caused it committed. Claims use
 * `FOR UPDATE SKIP LOCKED` (one worker per job, no head-of-line blocking), retries back off
 * exponentially with jitter (`retryBackoff`), and a job that fails every attempt is copied to a
 * dead-letter queue. graphile-worker was the other candidate; its backoff has no jitter and cannot be
 * changed.
 *
 * pg-boss runs its statements on our own pool through an adapter: no second pool, the same
 * `statement_timeout`, and the same fault handling.
 */
import { SpanStatusCode, trace } from '@opentelemetry/api'
import { PgBoss, type JobResult, type JobWithMetadata } from 'pg-boss'
import type { Config } from '../config.ts'
import type { Pool, Queryable } from '../db/pool.ts'
import type { Logger } from '../logger.ts'

/** Every queue Tessera uses, with its dead-letter queue. */
export const QUEUES = { email: 'email', emailDead: 'email.dead' } as const
export type QueueName = (typeof QUEUES)[keyof typeof QUEUES]

export interface JobAttempt<T> {
  readonly id: string
  readonly data: T
  /** 1 for the first attempt. */
  readonly attempt: number
  /** True when a failure now sends the job to the dead-letter queue. */
  readonly lastAttempt: boolean
}

/** Thrown by a handler when retrying cannot help (e.g. the mail server rejected the message for good). */
export class PermanentJobError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'PermanentJobError'
  }
}

export interface DeadJob<T> {
  readonly id: string
  readonly data: T
  readonly failedAt: Date
  readonly error: string | null
}

function adapter(db: Queryable) {
  return { executeSql: (text: string, values?: unknown[]) => db.query(text, values) }
}

function bossOptions(pool: Pool, options: { supervise: boolean }) {
  return {
    db: adapter(pool),
    schema: 'pgboss',
    // Maintenance (expiring stuck jobs, retention) runs only where workers run.
    supervise: options.supervise,
    schedule: false,
    registerInstance: false,
    migrate: false,
    monitorVacuum: false,
    reindex: false,
    // With tracing on, a job's attempts join the trace of the request that queued it.
    openTelemetry: { propagateContext: true },
  }
}

/**
 * Installs or upgrades pg-boss's schema (`pgboss`). pg-boss takes its own advisory lock, so concurrent
 * starts are safe. Called by `tessera migrate` / migrate-on-start, after our SQL migrations.
 */
export async function migrateQueueSchema(pool: Pool): Promise<void> {
  const boss = new PgBoss({ ...bossOptions(pool, { supervise: false }), migrate: true })
  boss.on('error', () => undefined)
  await boss.start()
  await boss.stop({ graceful: false, close: false })
}

export interface JobQueueOptions {
  pool: Pool
  logger: Logger
  worker: Config['worker']
}

export function createJobQueue(options: JobQueueOptions) {
  const { pool, logger, worker } = options
  let boss: PgBoss | undefined
  let working = false

  function started(): PgBoss {
    if (boss === undefined) throw new Error('job queue: start() has not been called')
    return boss
  }

  return {
    /**
     * Connects to the queue schema and declares the queues. `supervise` (workers only) also runs
     * pg-boss's maintenance: expiring jobs whose worker died, applying retention.
     */
    async start(startOptions: { supervise: boolean }): Promise<void> {
      const b = new PgBoss(bossOptions(pool, startOptions))
      b.on('error', (err: Error) => logger.warn({ err: { message: err.message } }, 'job queue error; continuing'))
      await b.start()
      await b.createQueue(QUEUES.emailDead, { retentionSeconds: 30 * 86_400 })
      const options = {
        deadLetter: QUEUES.emailDead,
        retryLimit: worker.maxAttempts - 1,
        retryDelay: worker.retryDelaySeconds,
        retryBackoff: true,
        retryDelayMax: worker.retryDelayMaxSeconds,
        // A worker refreshes its claim every 15 s; a claim not refreshed for 30 s (its process died)
        // is retried at the next maintenance pass (every 60 s), not after the 5-minute expiry.
        heartbeatSeconds: 30,
        // The upper bound of one attempt; SMTP timeouts end attempts far sooner.
        expireInSeconds: 300,
        // A message not delivered in this long is stale (its links expired long before).
        retentionSeconds: 7 * 86_400,
        deleteAfterSeconds: 7 * 86_400,
      }
      await b.createQueue(QUEUES.email, options)
      // createQueue leaves an existing queue as it was: apply the current configuration (attempts, delays).
      await b.updateQueue(QUEUES.email, options)
      boss = b
    },

    /**
     * Enqueues a job on the caller's transaction: it exists if and only if the transaction commits.
     * Payloads carry identifiers, never secrets: they are stored in plain text.
     */
    async enqueue(tx: Queryable, queue: QueueName, data: object): Promise<string> {
      const id = await started().send(queue, data, { db: adapter(tx) })
      if (id === null) throw new Error(`job queue: ${queue} refused a job`)
      return id
    },

    /**
     * Runs `handler` for each job, `worker.concurrency` at a time, each worker on its own job (a slow
     * job holds one slot, never the queue). A throw fails the attempt: the job is retried after the
     * backoff, and after the last attempt moved to the dead-letter queue; a {@link PermanentJobError}
     * moves it there at once.
     */
    async work<T>(queue: QueueName, handler: (job: JobAttempt<T>) => Promise<void>): Promise<void> {
      working = true
      const b = started()
      // One pg-boss worker per slot, so that each can be woken on its own: pg-boss waits the polling
      // interval after every fetch, even one that returned a job (a burst drained at concurrency ÷ poll
      // interval, 4 messages a second). A slot that just handled a job looks again at once
      // (notifyWorker skips that wait); only an idle one polls.
      for (let i = 0; i < worker.concurrency; i++) {
        // Filled once work() resolves; the handler may run before that and then simply does not wake.
        const slot: { workerId?: string } = {}
        slot.workerId = await b.work(queue, {
          localConcurrency: 1,
          batchSize: 1,
          pollingIntervalSeconds: worker.pollMs / 1000,
          includeMetadata: true,
          perJobResults: true,
        }, async (jobs: JobWithMetadata<T>[]): Promise<JobResult[]> => {
          const results: JobResult[] = []
          for (const job of jobs) {
            try {
              await handler({ id: job.id, data: job.data, attempt: job.retryCount + 1, lastAttempt: job.retryCount >= job.retryLimit })
              results.push({ id: job.id, status: 'completed' })
            } catch (err) {
              // Only the message is kept with the job: no stack, nothing the error object may carry.
              const output = { message: err instanceof Error ? err.message : String(err) }
              results.push({ id: job.id, status: err instanceof PermanentJobError ? 'deadletter' : 'failed', output })
              // pg-boss traces each attempt itself (its `process <queue>` span is the active one here)
              // but ends it OK when the failure is reported per job: mark it failed. The error's name
              // only, never its message (an SMTP refusal may quote the recipient). No-op without tracing.
              const span = trace.getActiveSpan()
              span?.setAttribute('error.type', err instanceof Error ? err.name : 'unknown')
              span?.setStatus({ code: SpanStatusCode.ERROR })
            }
          }
          if (jobs.length > 0 && slot.workerId !== undefined) b.notifyWorker(slot.workerId)
          return results
        })
      }
    },

    /** Dead-lettered jobs of a queue, oldest first. */
    async listDead<T>(queue: QueueName, limit = 100): Promise<DeadJob<T>[]> {
      const dead = queue === QUEUES.email ? QUEUES.emailDead : queue
      const jobs = await started().findJobs<T>(dead, { limit })
      return jobs.map((j) => {
        const out = (j as { sourceOutput?: { message?: unknown } | null }).sourceOutput
        return { id: j.id, data: j.data, failedAt: j.createdOn, error: typeof out?.message === 'string' ? out.message : null }
      })
    },

    /** Moves dead-lettered jobs back to their queue for a new series of attempts; returns how many moved. */
    async retryDead(queue: QueueName, ids: string[]): Promise<number> {
      const dead = queue === QUEUES.email ? QUEUES.emailDead : queue
      return started().redrive(dead, { ids })
    },

    /**
     * Stops taking jobs; with `graceful`, waits (up to `timeoutMs`) for the attempts in progress,
     * like the HTTP server drains its requests. An attempt cut short is retried by another worker.
     */
    async stop(stopOptions: { graceful: boolean; timeoutMs: number }): Promise<void> {
      if (boss === undefined) return
      const b = boss
      boss = undefined
      await b.stop({ graceful: stopOptions.graceful && working, timeout: stopOptions.timeoutMs, close: false })
    },
  }
}

export type JobQueue = ReturnType<typeof createJobQueue>
