/**
 * The part of autocannon 9's programmatic API the bench uses (the package ships no types and there is
 * no @types/autocannon devDependency).
 */
declare module 'autocannon' {
  import type { EventEmitter } from 'node:events'

  export interface AutocannonRequest {
    method?: string
    path?: string
    headers?: Record<string, string>
    body?: string | Buffer
    /** Returns the request to send (or a falsy value to restart the sequence). */
    setupRequest?: (request: AutocannonRequest, context: Record<string, unknown>) => AutocannonRequest | undefined
    onResponse?: (status: number, body: string, context: Record<string, unknown>, headers: Record<string, string | string[]>) => void
  }

  export interface AutocannonClient extends EventEmitter {
    setHeaders(headers: Record<string, string>): void
    setBody(body: string | Buffer): void
    setRequests(requests: AutocannonRequest[]): void
  }

  export interface AutocannonOptions {
    url: string
    connections?: number
    duration?: number
    pipelining?: number
    timeout?: number
    method?: string
    headers?: Record<string, string>
    body?: string | Buffer
    requests?: AutocannonRequest[]
    setupClient?: (client: AutocannonClient) => void
    excludeErrorStats?: boolean
  }

  export interface AutocannonResult {
    duration: number
    errors: number
    timeouts: number
    non2xx: number
    resets: number
    statusCodeStats: Record<string, { count: number }>
    '2xx': number
  }

  export interface AutocannonInstance extends EventEmitter, PromiseLike<AutocannonResult> {
    stop(): void
    on(event: 'response', listener: (client: AutocannonClient, statusCode: number, resBytes: number, responseTime: number) => void): this
    on(event: string, listener: (...args: unknown[]) => void): this
  }

  function autocannon(options: AutocannonOptions): AutocannonInstance
  export default autocannon
}
