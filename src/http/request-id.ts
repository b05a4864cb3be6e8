import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'

const VALID_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

/** Keeps a well-formed incoming `X-Request-Id` (so a trace spans proxies), otherwise makes one. */
export function requestIdFor(req: IncomingMessage): string {
  const incoming = req.headers['x-request-id']
  return typeof incoming === 'string' && VALID_REQUEST_ID.test(incoming) ? incoming : randomUUID()
}
