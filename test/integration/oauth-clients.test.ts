/**
 * Service clients and the OAuth endpoints, driven over real HTTP by a real OAuth client library
 * (openid-client): discovery from RFC 8414 metadata, client_credentials, refresh, RFC 7009 revocation
 * and RFC 7662 introspection.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import * as oidc from 'openid-client'
import { createTestApp, signUp, type TestApp } from '../helpers/app.ts'
import { freePort } from '../helpers/process.ts'

describe('OAuth endpoints with service clients (openid-client over HTTP)', () => {
  let t: TestApp
  let base: string
  let billing: { id: string; secret: string }
  let gateway: { id: string; secret: string }

  before(async () => {
    const port = await freePort()
    base = `http://127.0.0.1:${port}`
    t = await createTestApp({ env: { TESSERA_PUBLIC_URL: base } })
    await t.app.listen({ host: '127.0.0.1', port })
    const b = await t.deps.clients.createClient({ clientId: 'billing', name: 'Billing', scopes: ['invoices:read', 'invoices:write'], audiences: ['https://billing.internal'] }, 'test')
    billing = { id: b.client.clientId, secret: b.clientSecret }
    // The gateway verifies user tokens: its audience is Tessera's own.
    const g = await t.deps.clients.createClient({ clientId: 'gateway', name: 'Gateway', scopes: [], audiences: [t.config.jwt.audience] }, 'test')
    gateway = { id: g.client.clientId, secret: g.clientSecret }
  })
  after(async () => { await t.close() })

  const discover = (clientId: string, auth: oidc.ClientAuth) =>
    oidc.discovery(new URL(base), clientId, undefined, auth, { algorithm: 'oauth2', execute: [oidc.allowInsecureRequests] })

  const post = (path: string, form: Record<string, string>, headers: Record<string, string> = {}) =>
    fetch(base + path, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: new URLSearchParams(form) })

  const basic = (id: string, secret: string) => ({ authorization: `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}` })

  it('publishes metadata a standard client can discover', async () => {
    const config = await discover(billing.id, oidc.ClientSecretBasic(billing.secret))
    const meta = config.serverMetadata()
    assert.equal(meta.issuer, base)
    assert.equal(meta.introspection_endpoint, `${base}/oauth/introspect`)
    assert.deepEqual(meta.grant_types_supported, ['refresh_token', 'client_credentials'])
    assert.ok(meta.token_endpoint_auth_methods_supported?.includes('client_secret_basic'))
    assert.ok(meta.token_endpoint_auth_methods_supported?.includes('client_secret_post'))
  })

  it('issues a service token with client_credentials, and introspects it for its client', async () => {
    const config = await discover(billing.id, oidc.ClientSecretBasic(billing.secret))
    const tokens = await oidc.clientCredentialsGrant(config, { scope: 'invoices:read' })
    assert.equal(tokens.token_type.toLowerCase(), 'bearer')
    assert.equal(tokens.scope, 'invoices:read')
    assert.equal(tokens.refresh_token, undefined)
    const payload = JSON.parse(Buffer.from(tokens.access_token.split('.')[1] ?? '', 'base64url').toString()) as Record<string, unknown>
    assert.equal(payload.sub, 'billing')
    assert.equal(payload.client_id, 'billing')
    assert.equal(payload.aud, 'https://billing.internal')
    assert.equal(payload.sid, undefined)
    const info = await oidc.tokenIntrospection(config, tokens.access_token)
    assert.equal(info.active, true)
    assert.equal(info.client_id, 'billing')
    assert.equal(info.scope, 'invoices:read')
    // A service token is no user token.
    const me = await fetch(`${base}/v1/me`, { headers: { authorization: `Bearer ${tokens.access_token}` } })
    assert.equal(me.status, 401)
  })

  it('accepts client_secret_post, and refuses two authentication methods at once', async () => {
    const config = await discover(billing.id, oidc.ClientSecretPost(billing.secret))
    assert.ok((await oidc.clientCredentialsGrant(config)).access_token)
    const both = await post('/oauth/token', { grant_type: 'client_credentials', client_id: billing.id, client_secret: billing.secret }, basic(billing.id, billing.secret))
    assert.equal(both.status, 400)
    assert.equal(((await both.json()) as { error: string }).error, 'invalid_request')
  })

  it('refuses a wrong secret, an unknown client and a disabled client alike with invalid_client', async () => {
    const answers = []
    for (const [id, secret] of [[billing.id, 'tcs_wrong'], ['nobody', 'tcs_wrong']] as const) {
      const res = await post('/oauth/token', { grant_type: 'client_credentials' }, basic(id, secret))
      assert.equal(res.status, 401)
      assert.match(res.headers.get('www-authenticate') ?? '', /^Basic/)
      answers.push(await res.json())
    }
    assert.deepEqual(answers[0], answers[1])
    assert.deepEqual(answers[0], { error: 'invalid_client', error_description: 'Client authentication failed.' })
    const temp = await t.deps.clients.createClient({ clientId: 'temp-client', name: 'Temp', scopes: [], audiences: [] }, 'test')
    assert.equal((await post('/oauth/token', { grant_type: 'client_credentials' }, basic('temp-client', temp.clientSecret))).status, 200)
    await t.deps.clients.disableClient('temp-client', 'test')
    assert.equal((await post('/oauth/token', { grant_type: 'client_credentials' }, basic('temp-client', temp.clientSecret))).status, 401)
  })

  it('refuses scopes and resources the client was not given', async () => {
    const scope = await post('/oauth/token', { grant_type: 'client_credentials', scope: 'invoices:read admin' }, basic(billing.id, billing.secret))
    assert.equal(((await scope.json()) as { error: string }).error, 'invalid_scope')
    const target = await post('/oauth/token', { grant_type: 'client_credentials', resource: 'https://elsewhere' }, basic(billing.id, billing.secret))
    assert.equal(((await target.json()) as { error: string }).error, 'invalid_target')
  })

  it('lets a client revoke its own access token, and no one else\'s', async () => {
    const billingConfig = await discover(billing.id, oidc.ClientSecretBasic(billing.secret))
    const gatewayConfig = await discover(gateway.id, oidc.ClientSecretBasic(gateway.secret))
    const { access_token } = await oidc.clientCredentialsGrant(billingConfig)
    await oidc.tokenRevocation(gatewayConfig, access_token) // not the gateway's: ignored
    assert.equal((await oidc.tokenIntrospection(billingConfig, access_token)).active, true)
    await oidc.tokenRevocation(billingConfig, access_token)
    assert.equal((await oidc.tokenIntrospection(billingConfig, access_token)).active, false)
  })

  it('introspects user tokens for a client of their audience: active until logout, never for others', async () => {
    const user = await signUp(t.app)
    const gatewayConfig = await discover(gateway.id, oidc.ClientSecretBasic(gateway.secret))
    const billingConfig = await discover(billing.id, oidc.ClientSecretBasic(billing.secret))
    const info = await oidc.tokenIntrospection(gatewayConfig, user.access_token)
    assert.equal(info.active, true)
    assert.equal(info.client_id, 'tessera')
    assert.equal(typeof info.sub, 'string')
    assert.deepEqual(await oidc.tokenIntrospection(billingConfig, user.access_token), { active: false }, 'not its audience')
    await fetch(`${base}/v1/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${user.access_token}` } })
    assert.deepEqual(await oidc.tokenIntrospection(gatewayConfig, user.access_token), { active: false })
    for (const junk of ['not-a-token', user.refresh_token, `${user.access_token.slice(0, -2)}xx`]) {
      assert.deepEqual(await oidc.tokenIntrospection(gatewayConfig, junk), { active: false })
    }
    const anonymous = await post('/oauth/introspect', { token: user.access_token })
    assert.equal(anonymous.status, 401)
  })

  it('refreshes and revokes a user\'s refresh token as the public first-party client', async () => {
    const user = await signUp(t.app)
    const config = await discover('tessera', oidc.None())
    const next = await oidc.refreshTokenGrant(config, user.refresh_token)
    assert.ok(next.refresh_token)
    assert.notEqual(next.refresh_token, user.refresh_token)
    await oidc.tokenRevocation(config, next.refresh_token ?? '')
    await assert.rejects(oidc.refreshTokenGrant(config, next.refresh_token ?? ''), (err: unknown) => (err as { error?: string }).error === 'invalid_grant')
    // A service client cannot use a user's refresh token.
    const stolen = await post('/oauth/token', { grant_type: 'refresh_token', refresh_token: user.refresh_token }, basic(billing.id, billing.secret))
    assert.equal(((await stolen.json()) as { error: string }).error, 'invalid_grant')
  })
})
