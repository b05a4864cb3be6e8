/**
 * The Redis side of revocation: a pub/sub channel that carries each revocation to every instance in
 * milliseconds, and keys (`tessera:revoked:<kind>:<id>`, TTL = the longest remaining token life) that
 * record it for any other consumer. Redis is an accelerator, never the source of truth: while it is
 * away, publishing fails fast and PostgreSQL polling carries revocations; when it comes back, every
 * instance rebuilds its list from PostgreSQL (`onReconnect`).
 */
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import type { Logger } from '../logger.ts'
import type { Metrics } from '../observability/metrics.ts'
import type { RevocationBus, RevocationEvent } from './revocation.ts'

export const REVOCATION_CHANNEL = 'tessera:revocations'
export const KEYS_CHANNEL = 'tessera:keys'

interface Envelope {
  origin: string
  events: RevocationEvent[]
}

export interface RedisBus extends RevocationBus {
  /** Tells every instance to re-read the signing keys. */
  publishKeysChanged(): void
  onKeysChanged(listener: () => void): void
  onReconnect(listener: () => Promise<void> | void): void
  readonly connected: () => boolean
  close(): Promise<void>
}

export function createRedisBus(deps: { url: string; logger: Logger; metrics: Metrics; ttlSeconds: number }): RedisBus {
  const { logger, metrics } = deps
  const origin = randomUUID()
  const options = {
    // Fail fast while Redis is away: PostgreSQL polling is the fallback, not a queue in memory.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    retryStrategy: (times: number) => Math.min(100 * 2 ** times, 2000),
    lazyConnect: false,
  }
  const publisher = new Redis(deps.url, options)
  const subscriber = new Redis(deps.url, { ...options, enableOfflineQueue: true })
  const revocationListeners: Array<(events: readonly RevocationEvent[]) => void> = []
  const keyListeners: Array<() => void> = []
  const reconnectListeners: Array<() => Promise<void> | void> = []
  let wasReady = false
  let up = false

  metrics.redisUp.set(0)
  for (const client of [publisher, subscriber]) {
    client.on('error', (err: Error) => logger.debug({ err: { message: err.message } }, 'redis error'))
  }
  // "Connected" means propagation works again: subscribed, and (after an outage) the list rebuilt from
  // PostgreSQL, so nothing revoked while Redis was away is missing.
  subscriber.on('ready', () => {
    subscriber.subscribe(REVOCATION_CHANNEL, KEYS_CHANNEL)
      .then(async () => {
        if (wasReady) {
          logger.info('redis is back: rebuilding revocations from PostgreSQL')
          await Promise.allSettled(reconnectListeners.map(async (listener) => { await listener() }))
        }
        wasReady = true
        up = true
        metrics.redisUp.set(1)
      })
      .catch((err: unknown) => logger.warn({ err }, 'redis subscribe failed'))
  })
  subscriber.on('close', () => {
    if (up) logger.warn('redis connection lost: revocations now reach other instances through PostgreSQL polling only')
    up = false
    metrics.redisUp.set(0)
  })
  subscriber.on('message', (channel: string, message: string) => {
    if (channel === KEYS_CHANNEL) {
      for (const listener of keyListeners) listener()
      return
    }
    let envelope: Envelope
    try {
      envelope = JSON.parse(message) as Envelope
    } catch {
      return
    }
    if (envelope.origin === origin || !Array.isArray(envelope.events)) return
    const events = envelope.events.filter((e) => (e.kind === 'session' || e.kind === 'token') && typeof e.id === 'string' && typeof e.at === 'number')
    for (const listener of revocationListeners) listener(events)
  })

  return {
    publish(events) {
      const envelope: Envelope = { origin, events: [...events] }
      const pipeline = publisher.multi()
      for (const e of events) pipeline.set(`tessera:revoked:${e.kind}:${e.id}`, String(e.at), 'EX', deps.ttlSeconds)
      pipeline.publish(REVOCATION_CHANNEL, JSON.stringify(envelope))
      pipeline.exec().then(
        () => metrics.revocationsPublished.inc({ result: 'ok' }),
        (err: unknown) => {
          metrics.revocationsPublished.inc({ result: 'failed' })
          logger.warn({ err: { message: (err as Error).message } }, 'revocation not published on redis; other instances will read it from PostgreSQL')
        },
      )
    },
    subscribe(onEvents) { revocationListeners.push(onEvents) },
    publishKeysChanged() {
      publisher.publish(KEYS_CHANNEL, origin).catch(() => undefined)
    },
    onKeysChanged(listener) { keyListeners.push(listener) },
    onReconnect(listener) { reconnectListeners.push(listener) },
    connected: () => up,
    async close() {
      publisher.disconnect()
      subscriber.disconnect()
    },
  }
}
