import type { FastifyPluginAsync } from 'fastify'
import type { Logger } from '../logger.ts'
import type { RevocationList } from '../sessions/revocation.ts'
import type { AccessTokens } from '../tokens/access-tokens.ts'

export interface ProfilingOptions {
  /** TESSERA_PROFILING. */
  enabled: boolean
  accessTokens: AccessTokens
  revocations: RevocationList
  logger: Logger
}

/** Profiling endpoints (stub: implemented with the observability work). */
export const profilingRoutes: FastifyPluginAsync<ProfilingOptions> = async (app, options) => {
  void app
  void options
}
