/**
 * OpenTelemetry tracing: off unless the standard OTEL_* variables ask for it (see
 * {@link tracingRequested} and docs/tracing.md). When off, nothing of the SDK is even imported: this
 * file has no static import of it, and the `@opentelemetry/api` calls elsewhere (the logger's
 * trace_id, the password spans, pg-boss's own job spans) are no-ops on the API's built-in no-ops.
 *
 * When on, the process entry (src/cli.ts) awaits {@link startTracingIfConfigured} before importing
 * anything else: the instrumentations patch `pg`, `ioredis` and `node:http` as they load, so the SDK
 * must be running first. Tessera is ESM and imports those CommonJS packages with `import`, which
 * `require` hooks do not see (without the loader below there is no Redis span at all; the test checks
 * it): an in-thread import-in-the-middle loader (module.registerHooks) is installed for exactly those
 * packages, nothing else (our .ts files are never intercepted).
 *
 * The OTEL_* variables are read by the SDK itself (exporter, endpoint, protocol, headers, sampler,
 * resource, propagators); src/config.ts does not validate them.
 */
import type { NodeSDK, NodeSDKConfiguration } from '@opentelemetry/sdk-node'

const DEFAULT_SERVICE_NAME = 'tessera'

/** Requests that would fill the trace store with nothing to learn: probes and scrapes. */
const UNTRACED_PATHS = new Set(['/livez', '/readyz', '/metrics'])

/** The CommonJS packages Tessera imports from ESM and whose instrumentation must see that import. */
const ESM_HOOKED_PACKAGES = ['pg', 'ioredis']

let sdk: NodeSDK | undefined

function isTrue(value: string | undefined): boolean {
  return value?.trim().toLowerCase() === 'true'
}

function isSet(value: string | undefined): boolean {
  return value !== undefined && value.trim() !== ''
}

/**
 * Whether the environment asks for tracing. `OTEL_SDK_DISABLED=true` wins over everything. Otherwise
 * `OTEL_TRACES_EXPORTER`, when set, decides: on unless it is `none` (as in the SDK, a list whose first
 * entry is `none`); when it is not set, tracing is on when an OTLP endpoint is given
 * (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`). The SDK's own default
 * (export to localhost:4318 whenever it is started) is deliberately not ours: no endpoint, no tracing.
 */
export function tracingRequested(env: NodeJS.ProcessEnv): boolean {
  if (isTrue(env.OTEL_SDK_DISABLED)) return false
  const exporters = (env.OTEL_TRACES_EXPORTER ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '')
  if (exporters.length > 0) return exporters[0] !== 'none'
  return isSet(env.OTEL_EXPORTER_OTLP_ENDPOINT) || isSet(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
}

/**
 * Starts tracing when {@link tracingRequested} says so; returns whether it did. Called once, first
 * thing, by the process entry (with `process.env`), before the modules to instrument are imported.
 */
export async function startTracingIfConfigured(env: NodeJS.ProcessEnv): Promise<boolean> {
  if (!tracingRequested(env)) return false
  await startTracing()
  return true
}

/**
 * The query string with every value replaced: link pages carry one-time tokens in `?token=`, and no
 * value of a query string belongs in a trace. The names stay, for debugging.
 */
function redactQuery(url: string | undefined): string | undefined {
  const q = url?.indexOf('?') ?? -1
  if (url === undefined || q < 0) return undefined
  const names = new URLSearchParams(url.slice(q + 1)).keys()
  return Array.from(names, (name) => `${encodeURIComponent(name)}=REDACTED`).join('&')
}

function pathOf(url: string | undefined): string {
  if (url === undefined) return '/'
  const q = url.indexOf('?')
  return q < 0 ? url : url.slice(0, q)
}

export interface StartTracingOptions {
  /** Replaces the exporters configured by OTEL_TRACES_EXPORTER (tests: an in-memory exporter). */
  spanProcessors?: NodeSDKConfiguration['spanProcessors']
}

/**
 * Starts the OpenTelemetry SDK with Tessera's instrumentations: HTTP server and client, PostgreSQL,
 * Redis and Fastify (which names the server span after the route template). Exporter, sampler,
 * resource and propagators come from the OTEL_* variables; the propagator defaults to W3C trace
 * context + baggage, the service name to `tessera`. Only traces: metrics stay with Prometheus
 * (/metrics) and logs with pino on stdout.
 */
export async function startTracing(options: StartTracingOptions = {}): Promise<void> {
  if (sdk !== undefined) return
  const { supportsSyncHooks, register } = await import('import-in-the-middle/register-hooks.mjs')
  if (supportsSyncHooks()) {
    register({ include: ESM_HOOKED_PACKAGES })
  } else {
    // Node.js before 24.11.1: the off-thread loader, told which packages to intercept.
    const { register: registerLoader } = await import('node:module')
    registerLoader('import-in-the-middle/hook.mjs', import.meta.url, { data: { include: ESM_HOOKED_PACKAGES } })
  }

  const [{ NodeSDK }, { defaultResource, resourceFromAttributes }, { HttpInstrumentation }, { PgInstrumentation }, { IORedisInstrumentation }, { FastifyOtelInstrumentation }] = await Promise.all([
    import('@opentelemetry/sdk-node'),
    import('@opentelemetry/resources'),
    import('@opentelemetry/instrumentation-http'),
    import('@opentelemetry/instrumentation-pg'),
    import('@opentelemetry/instrumentation-ioredis'),
    import('@fastify/otel'),
  ])

  const started = new NodeSDK({
    // The default name, under what OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES say (detected later, wins).
    resource: defaultResource().merge(resourceFromAttributes({ 'service.name': DEFAULT_SERVICE_NAME })),
    ...(options.spanProcessors === undefined ? {} : { spanProcessors: options.spanProcessors }),
    // Traces only: an empty list keeps the SDK from starting OTLP metric and log exporters of its own.
    metricReaders: [],
    logRecordProcessors: [],
    instrumentations: [
      new HttpInstrumentation({
        ignoreIncomingRequestHook: (request) => UNTRACED_PATHS.has(pathOf(request.url)),
        // No header is ever recorded (none is configured for capture); query values never are either.
        startIncomingSpanHook: (request) => {
          const query = redactQuery(request.url)
          return query === undefined ? {} : { 'url.query': query }
        },
      }),
      // SQL text only (every statement is parameterised), never the parameters: enhancedDatabaseReporting
      // stays off. Without a parent (pg-boss polling, the revocation poll) no span is made.
      new PgInstrumentation({ requireParentSpan: true, enhancedDatabaseReporting: false }),
      // The command name only: rate-limit keys carry addresses and account ids.
      new IORedisInstrumentation({ requireParentSpan: true, dbStatementSerializer: (command) => command }),
      // The route template for the server span (`POST /v1/auth/login`), and one `request` span; no span
      // per hook or handler (a dozen spans per request for little), no exception events (a 4xx is not one).
      new FastifyOtelInstrumentation({
        registerOnInitialization: true,
        instrumentHooks: false,
        instrumentHandler: false,
        recordExceptions: false,
        ignorePaths: (route) => UNTRACED_PATHS.has(pathOf(route.url)),
        requestHook: (span, request) => {
          // @fastify/otel records request.url, query string included.
          span.setAttribute('url.path', pathOf(request.url))
        },
      }),
    ],
  })
  started.start()
  sdk = started
}

/**
 * Flushes the spans still buffered and stops the SDK (a no-op when tracing is off). Bounded: an
 * unreachable collector must not hold the shutdown. Call it after the server and the workers closed.
 */
export async function shutdownTracing(timeoutMs = 5000): Promise<void> {
  const current = sdk
  if (current === undefined) return
  sdk = undefined
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<void>((resolve) => { timer = setTimeout(resolve, timeoutMs) })
  await Promise.race([current.shutdown().catch(() => undefined), timeout])
  clearTimeout(timer)
}
