import { Type } from 'typebox'

/** RFC 9457 problem details, as every non-OAuth error is rendered. */
export const Problem = Type.Object({
  type: Type.String({ description: 'URI of the problem type: `urn:tessera:problem:<code>`.' }),
  title: Type.String(),
  status: Type.Integer(),
  detail: Type.Optional(Type.String()),
  code: Type.String({ description: 'Stable machine-readable error code (never renamed).' }),
  request_id: Type.Optional(Type.String()),
  errors: Type.Optional(Type.Array(Type.Object({ pointer: Type.String(), detail: Type.String() }))),
  violations: Type.Optional(Type.Array(Type.String())),
}, { $id: 'Problem', additionalProperties: true })

/** RFC 6749 §5.2 error response, used by the OAuth endpoints. */
export const OAuthErrorBody = Type.Object({
  error: Type.String(),
  error_description: Type.Optional(Type.String()),
}, { $id: 'OAuthError' })

/** RFC 6749 §5.1 successful token response. */
export const TokenResponse = Type.Object({
  access_token: Type.String(),
  token_type: Type.Literal('Bearer'),
  expires_in: Type.Integer(),
  refresh_token: Type.Optional(Type.String({ description: 'Absent for client_credentials.' })),
  scope: Type.Optional(Type.String()),
}, { $id: 'TokenResponse' })

export const problemRef = Type.Unsafe<never>({ $ref: 'Problem#' })
export const oauthErrorRef = Type.Unsafe<never>({ $ref: 'OAuthError#' })
export const tokenResponseRef = Type.Unsafe<{ access_token: string; token_type: 'Bearer'; expires_in: number; refresh_token?: string; scope?: string }>({ $ref: 'TokenResponse#' })

const problemDescriptions: Record<number, string> = {
  400: 'Invalid request (validation_failed, malformed_request, password_policy)',
  401: 'Not authenticated (invalid_credentials, invalid_token)',
  403: 'Not allowed (current_password_invalid, forbidden)',
  404: 'Not found (not_found)',
  413: 'Body too large (payload_too_large)',
  415: 'Not JSON (unsupported_media_type)',
  429: 'Rate limited (rate_limited)',
  503: 'Temporarily unavailable (service_unavailable, overloaded); see Retry-After',
}

/** The RFC 9457 error responses an endpoint may return, documented as application/problem+json. */
export function problemResponses(...statuses: number[]): Record<number, { description: string; content: Record<string, { schema: typeof problemRef }> }> {
  return Object.fromEntries(statuses.map((s) => [s, {
    description: problemDescriptions[s] ?? 'Error',
    content: { 'application/problem+json': { schema: problemRef } },
  }]))
}

/** A UUID as PostgreSQL accepts it. A pattern, not `format: 'uuid'`, which also accepts `urn:uuid:…` (a 500 from the database). */
export const Uuid = Type.String({ pattern: '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$', maxLength: 36 })

export const Password = Type.String({ minLength: 1, maxLength: 4096, description: 'Checked in code points after NFKC; never trimmed or truncated.' })
export const Email = Type.String({ minLength: 3, maxLength: 512, description: 'Canonicalised: trimmed, NFKC, lower-cased (see docs/api.md for the grammar).' })

/** The answer of requests whose outcome must not be revealed (registration, reset, resend). */
export const Accepted = Type.Object({
  status: Type.Literal('accepted'),
  message: Type.String(),
})

/** A one-time token from an email link; its shape is checked by the service (a bad one is `confirmation_invalid`). */
export const EmailToken = Type.String({ minLength: 1, maxLength: 256, description: 'The `token` parameter of the link in the message.' })
