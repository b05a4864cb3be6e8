/** Who asked, from where: passed from a handler to a service for audit events and session records. */
export interface RequestContext {
  readonly ip: string | null
  readonly userAgent: string | null
  readonly requestId: string | null
}

export const MAX_USER_AGENT_LENGTH = 512

export function requestContext(request: { ip: string; id: string; headers: Record<string, unknown> }): RequestContext {
  const ua = request.headers['user-agent']
  return {
    ip: request.ip || null,
    userAgent: typeof ua === 'string' ? ua.slice(0, MAX_USER_AGENT_LENGTH) : null,
    requestId: request.id,
  }
}
