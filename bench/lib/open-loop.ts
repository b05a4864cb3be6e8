/**
 * Fixed-rate runs: an open-loop generator (in the manner of wrk2). Request i is *scheduled* at
 * start + i / rate whatever happened to the earlier ones, and its latency is measured from that
 * scheduled time, not from when it could actually be written. A slow server therefore shows up as
 * queueing in the latencies instead of silently lowering the offered rate (coordinated omission).
 *
 * The HTTP/1.1 client is a minimal one on raw sockets (keep-alive, one request in flight per
 * connection, Content-Length or chunked bodies), so that the generator stays cheap on a 2-core machine.
 * A request waits for an idle connection (a new one is opened up to `maxConnections`) and, for
 * workloads that hold per-client state such as a refresh token, for a free client; both waits count
 * in its latency.
 */
import { connect, type Socket } from 'node:net'
import { createSamples, type Percentiles } from './stats.ts'

export interface OpenLoopRequest {
  readonly bytes: Buffer
  /** Called with the HTTP status and body, or with status 0 when the connection failed. */
  readonly done?: (status: number, body: Buffer) => void
}

export interface OpenLoopWorkload {
  /** The next request, or undefined when none can be sent right now (every client is busy). */
  next(): OpenLoopRequest | undefined
}

export interface OpenLoopSpec {
  readonly host: string
  readonly port: number
  readonly rate: number
  readonly durationS: number
  readonly workload: OpenLoopWorkload
  readonly maxConnections?: number
  readonly preconnect?: number
  /** After the last scheduled send, how long outstanding requests get before counting as timed out. */
  readonly drainTimeoutMs?: number
}

export interface OpenLoopResult {
  readonly method: 'open-loop (fixed arrival rate, latency from scheduled send time)'
  readonly targetRate: number
  readonly durationS: number
  readonly scheduled: number
  readonly ok: number
  readonly achievedRate: number
  /** From the scheduled send time: what a client arriving at that moment would see. */
  readonly latencyMs: Percentiles
  /** From the moment the request was written (closed-loop view, for comparison). */
  readonly serviceLatencyMs: Percentiles
  readonly errors: number
  /** Requests still unanswered after the drain timeout (counted in latencyMs at the drain deadline). */
  readonly unfinished: number
  readonly statusCounts: Record<string, number>
  readonly maxConnectionsUsed: number
}

interface Pending {
  readonly scheduledAt: number
}

interface Conn {
  readonly socket: Socket
  busy: boolean
  sentAt: number
  scheduledAt: number
  request: OpenLoopRequest | undefined
  buffer: Buffer
  alive: boolean
}

const HEADER_END = Buffer.from('\r\n\r\n')
const CRLF = Buffer.from('\r\n')

/**
 * Parses one complete HTTP/1.1 response at the start of `buf`.
 * @returns status, body and the number of bytes consumed, or undefined when more bytes are needed.
 */
export function parseResponse(buf: Buffer): { status: number; body: Buffer; consumed: number } | undefined {
  const headerEnd = buf.indexOf(HEADER_END)
  if (headerEnd === -1) return undefined
  const head = buf.toString('latin1', 0, headerEnd)
  const status = Number.parseInt(head.slice(9, 12), 10)
  const bodyStart = headerEnd + 4
  const length = /\r\ncontent-length:[ \t]*(\d+)/i.exec(head)
  if (length?.[1] !== undefined) {
    const end = bodyStart + Number.parseInt(length[1], 10)
    if (buf.length < end) return undefined
    return { status, body: buf.subarray(bodyStart, end), consumed: end }
  }
  if (/\r\ntransfer-encoding:[ \t]*chunked/i.test(head)) {
    const parts: Buffer[] = []
    let at = bodyStart
    for (;;) {
      const lineEnd = buf.indexOf(CRLF, at)
      if (lineEnd === -1) return undefined
      const size = Number.parseInt(buf.toString('latin1', at, lineEnd), 16)
      if (size === 0) {
        const trailerEnd = buf.indexOf(CRLF, lineEnd + 2)
        if (trailerEnd === -1) return undefined
        return { status, body: Buffer.concat(parts), consumed: trailerEnd + 2 }
      }
      const chunkEnd = lineEnd + 2 + size
      if (buf.length < chunkEnd + 2) return undefined
      parts.push(buf.subarray(lineEnd + 2, chunkEnd))
      at = chunkEnd + 2
    }
  }
  // 204/304 or a response without a body.
  return { status, body: Buffer.alloc(0), consumed: bodyStart }
}

let stopRequested = false
/** Stops the run in progress (Ctrl-C): no further sends, the drain ends at once. */
export function stopOpenLoop(): void {
  stopRequested = true
}

export async function runOpenLoop(spec: OpenLoopSpec): Promise<OpenLoopResult> {
  stopRequested = false
  const maxConnections = spec.maxConnections ?? 512
  const drainTimeoutMs = spec.drainTimeoutMs ?? 5000
  const total = Math.max(1, Math.round(spec.rate * spec.durationS))
  const intervalMs = 1000 / spec.rate
  const latency = createSamples()
  const service = createSamples()
  const statusCounts: Record<string, number> = {}
  let ok = 0
  let errors = 0
  let completed = 0
  let lastCompletion = 0

  const conns = new Set<Conn>()
  const idle: Conn[] = []
  const queue: Pending[] = []
  let queueHead = 0
  let maxConnectionsUsed = 0
  let onAllDone: (() => void) | undefined

  function finish(conn: Conn, status: number, body: Buffer): void {
    const now = performance.now()
    const request = conn.request
    const scheduledAt = conn.scheduledAt
    const sentAt = conn.sentAt
    conn.busy = false
    conn.request = undefined
    completed++
    lastCompletion = now
    statusCounts[status] = (statusCounts[status] ?? 0) + 1
    if (status >= 200 && status < 300) {
      ok++
      latency.add(now - scheduledAt)
      service.add(now - sentAt)
    } else {
      errors++
    }
    request?.done?.(status, body)
    if (conn.alive) idle.push(conn)
    pump()
    if (completed === total) onAllDone?.()
  }

  function openConnection(): Conn {
    const socket = connect({ host: spec.host, port: spec.port, noDelay: true })
    const conn: Conn = { socket, busy: false, sentAt: 0, scheduledAt: 0, request: undefined, buffer: Buffer.alloc(0), alive: true }
    socket.on('data', (chunk: Buffer) => {
      conn.buffer = conn.buffer.length === 0 ? chunk : Buffer.concat([conn.buffer, chunk])
      const parsed = parseResponse(conn.buffer)
      if (parsed === undefined) return
      conn.buffer = conn.buffer.subarray(parsed.consumed)
      if (conn.busy) finish(conn, parsed.status, parsed.body)
    })
    const drop = () => {
      if (!conn.alive) return
      conn.alive = false
      conns.delete(conn)
      const i = idle.indexOf(conn)
      if (i !== -1) idle.splice(i, 1)
      if (conn.busy) finish(conn, 0, Buffer.alloc(0))
      else pump()
    }
    socket.on('error', drop)
    socket.on('close', drop)
    conns.add(conn)
    maxConnectionsUsed = Math.max(maxConnectionsUsed, conns.size)
    return conn
  }

  function pump(): void {
    while (queueHead < queue.length) {
      let conn = idle.pop()
      if (conn === undefined) {
        if (conns.size >= maxConnections) return
        conn = openConnection()
      }
      const request = spec.workload.next()
      if (request === undefined) {
        idle.push(conn)
        return
      }
      const pending = queue[queueHead++]
      if (pending === undefined) return
      conn.busy = true
      conn.request = request
      conn.scheduledAt = pending.scheduledAt
      conn.sentAt = performance.now()
      conn.socket.write(request.bytes)
    }
    if (queueHead > 4096 && queueHead === queue.length) {
      queue.length = 0
      queueHead = 0
    }
  }

  // Open some connections before the clock starts: connection set-up is not what is being measured.
  const preconnect = Math.min(spec.preconnect ?? 16, maxConnections)
  await Promise.all(Array.from({ length: preconnect }, () => new Promise<void>((resolve) => {
    const conn = openConnection()
    conn.socket.once('connect', () => {
      idle.push(conn)
      resolve()
    })
    conn.socket.once('error', () => { resolve() })
  })))

  const start = performance.now() + 5
  let nextIndex = 0
  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now()
      while (nextIndex < total && start + nextIndex * intervalMs <= now && !stopRequested) {
        queue.push({ scheduledAt: start + nextIndex * intervalMs })
        nextIndex++
      }
      pump()
      if (nextIndex >= total || stopRequested) {
        resolve()
        return
      }
      const wait = Math.max(0, start + nextIndex * intervalMs - performance.now())
      setTimeout(tick, Math.min(wait, 1))
    }
    setTimeout(tick, 5)
  })

  // Drain: wait for the outstanding requests, up to the drain timeout.
  const scheduled = nextIndex
  if (completed < scheduled && !stopRequested) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, drainTimeoutMs)
      onAllDone = () => {
        clearTimeout(timer)
        resolve()
      }
      if (completed >= scheduled) onAllDone()
    })
  }
  const drainEnd = performance.now()
  // Requests never answered count at the drain deadline (never dropped from the percentiles).
  let unfinished = 0
  for (const conn of conns) {
    if (conn.busy) {
      unfinished++
      latency.add(drainEnd - conn.scheduledAt)
    }
  }
  for (let i = queueHead; i < queue.length; i++) {
    const pending = queue[i]
    if (pending === undefined) continue
    unfinished++
    latency.add(drainEnd - pending.scheduledAt)
  }
  for (const conn of conns) {
    conn.alive = false
    conn.socket.destroy()
  }
  const durationS = Math.max(lastCompletion, start + scheduled * intervalMs) / 1000 - start / 1000
  return {
    method: 'open-loop (fixed arrival rate, latency from scheduled send time)',
    targetRate: spec.rate,
    durationS,
    scheduled,
    ok,
    achievedRate: durationS > 0 ? ok / durationS : 0,
    latencyMs: latency.percentiles(),
    serviceLatencyMs: service.percentiles(),
    errors,
    unfinished,
    statusCounts,
    maxConnectionsUsed,
  }
}
