/**
 * The error model: every failure a client can cause is an {@link AppError} with a stable `code`.
 * The code list is the status table, so no code can lack a status. Codes are never renamed once shipped.
 */
export const statusByCode = {
  validation_failed: 400,
  malformed_request: 400,
  password_policy: 400,
  confirmation_invalid: 400,
  invalid_credentials: 401,
  invalid_token: 401,
  current_password_invalid: 403,
  email_not_verified: 403,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  email_taken: 409,
  payload_too_large: 413,
  unsupported_media_type: 415,
  rate_limited: 429,
  internal_error: 500,
  service_unavailable: 503,
  overloaded: 503,
} as const satisfies Record<string, number>

export type ErrorCode = keyof typeof statusByCode

/** Human titles, one per code, used as the RFC 9457 `title`. */
export const titleByCode: Record<ErrorCode, string> = {
  validation_failed: 'The request is not valid',
  malformed_request: 'The request body could not be parsed',
  password_policy: 'The password does not meet the policy',
  confirmation_invalid: 'The link is invalid, expired or already used',
  invalid_credentials: 'Invalid credentials',
  invalid_token: 'Missing, invalid or expired access token',
  current_password_invalid: 'The current password is not correct',
  email_not_verified: 'The email address is not verified',
  forbidden: 'Not allowed',
  not_found: 'Not found',
  conflict: 'Conflict',
  email_taken: 'The email address is already used by another account',
  payload_too_large: 'The request body is too large',
  unsupported_media_type: 'Unsupported content type',
  rate_limited: 'Too many requests',
  internal_error: 'Internal error',
  service_unavailable: 'Service temporarily unavailable',
  overloaded: 'Service overloaded, retry later',
}

export class AppError extends Error {
  readonly code: ErrorCode
  readonly extensions: Readonly<Record<string, unknown>>
  /** Sent as `Retry-After` (seconds) when set. */
  readonly retryAfterSeconds: number | undefined
  /** Extra response headers (e.g. the RateLimit headers of a 429). */
  readonly headers: Readonly<Record<string, string>>
  constructor(code: ErrorCode, message: string, extensions: Record<string, unknown> = {}, options?: ErrorOptions & { retryAfterSeconds?: number; headers?: Record<string, string> }) {
    super(message, options)
    this.name = 'AppError'
    this.code = code
    this.extensions = extensions
    this.retryAfterSeconds = options?.retryAfterSeconds
    this.headers = options?.headers ?? {}
  }
  get status(): number {
    return statusByCode[this.code]
  }
}

/** RFC 6749 §5.2 error codes (plus RFC 7009's `unsupported_token_type`), used by the OAuth endpoints only. */
export const oauthStatusByError = {
  invalid_request: 400,
  invalid_client: 401,
  invalid_grant: 400,
  unauthorized_client: 400,
  unsupported_grant_type: 400,
  invalid_scope: 400,
  unsupported_token_type: 400,
  invalid_target: 400, // RFC 8707
  temporarily_unavailable: 503,
  server_error: 500,
} as const satisfies Record<string, number>

export type OAuthErrorCode = keyof typeof oauthStatusByError

export class OAuthError extends Error {
  readonly error: OAuthErrorCode
  constructor(error: OAuthErrorCode, description: string, options?: ErrorOptions) {
    super(description, options)
    this.name = 'OAuthError'
    this.error = error
  }
  get status(): number {
    return oauthStatusByError[this.error]
  }
}
