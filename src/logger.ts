import { context, isSpanContextValid, trace } from '@opentelemetry/api'
import { pino, type Logger } from 'pino'

/**
 * Paths that must never reach a log line. Request bodies are never logged, so these guard what a
 * careless `log.info({ ... })` might pass: credentials, tokens and the Authorization header.
 */
export const redactPaths = [
  'req.headers.authorization', 'req.headers.cookie', 'headers.authorization', 'headers.cookie',
  '*.password', '*.current_password', '*.new_password', '*.refresh_token', '*.access_token', '*.token',
  'password', 'refresh_token', 'access_token', 'token', 'err.config', 'keyEncryptionKey',
]

/**
 * `trace_id` and `span_id` of the span active when the line is written, so that every line of a request
 * (the request line included) leads to its trace. With tracing off there is never an active span (the
 * API's no-op context manager): one lookup, an empty object.
 */
export function traceFields(): { trace_id?: string; span_id?: string } {
  const span = trace.getSpan(context.active())
  if (span === undefined) return {}
  const spanContext = span.spanContext()
  if (!isSpanContextValid(spanContext)) return {}
  return { trace_id: spanContext.traceId, span_id: spanContext.spanId }
}

export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino({
    level,
    base: { service: 'tessera' },
    redact: { paths: redactPaths, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    mixin: traceFields,
  }, destination as pino.DestinationStream | undefined)
}

export type { Logger }
