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

export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino({
    level,
    base: { service: 'tessera' },
    redact: { paths: redactPaths, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  }, destination as pino.DestinationStream | undefined)
}

export type { Logger }
