import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { Config } from '../config.ts'
import type { KeyStore } from './keys.service.ts'

const Jwk = Type.Object({
  kty: Type.String(), kid: Type.String(), alg: Type.String(), use: Type.String(),
  crv: Type.Optional(Type.String()), x: Type.Optional(Type.String()), y: Type.Optional(Type.String()),
}, { additionalProperties: false })

export const keysRoutes: FastifyPluginAsyncTypebox<{ keys: KeyStore; config: Config }> = async (app, { keys, config }) => {
  app.get('/.well-known/jwks.json', {
    schema: {
      operationId: 'getJwks', tags: ['discovery'], summary: 'Public signing keys (RFC 7517)',
      description: 'Public members only. Resource servers verify access tokens offline with these keys.',
      response: { 200: Type.Object({ keys: Type.Array(Jwk) }) },
    },
  }, async (_request, reply) => {
    // Matches the rotation schedule: a new key is published this long (+ margin) before it signs.
    void reply.header('cache-control', `public, max-age=${config.keys.jwksMaxAgeSeconds}`).type('application/jwk-set+json; charset=utf-8')
    return keys.jwks()
  })

  const metadata = {
    issuer: config.jwt.issuer,
    token_endpoint: `${config.publicUrl}/oauth/token`,
    revocation_endpoint: `${config.publicUrl}/oauth/revoke`,
    introspection_endpoint: `${config.publicUrl}/oauth/introspect`,
    jwks_uri: `${config.publicUrl}/.well-known/jwks.json`,
    grant_types_supported: ['refresh_token', 'client_credentials'],
    response_types_supported: [] as string[],
    token_endpoint_auth_methods_supported: ['none', 'client_secret_basic', 'client_secret_post'],
    revocation_endpoint_auth_methods_supported: ['none', 'client_secret_basic', 'client_secret_post'],
    introspection_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
    scopes_supported: [] as string[],
    service_documentation: `${config.publicUrl}/docs`,
  }
  app.get('/.well-known/oauth-authorization-server', {
    schema: {
      operationId: 'getServerMetadata', tags: ['discovery'], summary: 'Authorization server metadata (RFC 8414)',
      response: { 200: Type.Object({
        issuer: Type.String(), token_endpoint: Type.String(), revocation_endpoint: Type.String(), introspection_endpoint: Type.String(), jwks_uri: Type.String(),
        grant_types_supported: Type.Array(Type.String()), response_types_supported: Type.Array(Type.String()),
        token_endpoint_auth_methods_supported: Type.Array(Type.String()), revocation_endpoint_auth_methods_supported: Type.Array(Type.String()),
        introspection_endpoint_auth_methods_supported: Type.Array(Type.String()), scopes_supported: Type.Array(Type.String()),
        service_documentation: Type.String(),
      }) },
    },
  }, async (_request, reply) => {
    void reply.header('cache-control', 'public, max-age=3600')
    return metadata
  })
}
