import { AppError } from '../errors.ts'

const connectionErrorCodes = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', '57P01', '57P02', '57P03', '53300', '08000', '08003', '08006', '08001', '08004'])

/** True for errors that mean "the database is unreachable or refusing work", not "the query is wrong". */
export function isDatabaseUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false
  const code = (err as { code?: unknown }).code
  if (typeof code === 'string' && connectionErrorCodes.has(code)) return true
  // statement_timeout (57014) and pg's own connection timeout both mean "not now".
  if (code === '57014') return true
  return /timeout exceeded when trying to connect|Connection terminated|connection timeout|Query read timeout|Client has encountered a connection error/i.test(err.message)
}

/** Translates a database failure into the error a client should see; anything unknown stays a 500. */
export function translateDatabaseError(err: unknown): unknown {
  if (isDatabaseUnavailable(err)) {
    return new AppError('service_unavailable', 'The database is unavailable; retry shortly.', {}, { cause: err, retryAfterSeconds: 1 })
  }
  return err
}

export function isUniqueViolation(err: unknown, constraint?: string): boolean {
  const e = err as { code?: unknown; constraint?: unknown }
  return e.code === '23505' && (constraint === undefined || e.constraint === constraint)
}
