/**
 * Runs the real `tessera` command (`node src/cli.ts …`) as a child process, for end-to-end tests that
 * talk to it over a socket. The child gets only the environment a test gives it (plus PATH/HOME), so
 * nothing from the runner (DATABASE_URL, NODE_TEST_CONTEXT) leaks in.
 */
import { randomBytes } from 'node:crypto'
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { CHEAP_HASHING, RELAXED_LIMITS } from './app.ts'
import { testPool } from './db.ts'
import { freePort } from '../../scripts/lib/free-port.ts'

export { freePort }

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url))

export interface Exit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

export interface LogLine {
  readonly level?: string
  readonly msg?: string
  readonly [key: string]: unknown
}

export interface CliProcess {
  readonly child: ChildProcess
  readonly stdout: () => string
  readonly stderr: () => string
  /** stdout and stderr together: what an operator's log collector would see. */
  readonly output: () => string
  /** stdout lines that parse as JSON objects (pino's lines). */
  readonly logLines: () => LogLine[]
  /** Resolves once the process has exited and its output is fully read. */
  readonly exited: Promise<Exit>
  readonly running: () => boolean
}

export interface ServerProcess extends CliProcess {
  /** `http://127.0.0.1:<port>`, from the "Server listening at" log line. */
  readonly baseUrl: string
  /** Sends `signal` (SIGTERM by default) and waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<Exit>
  /** For after() hooks: SIGTERM, then SIGKILL if the process is still there after `graceMs`. Never throws. */
  kill(graceMs?: number): Promise<void>
}

function childEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const base: NodeJS.ProcessEnv = {}
  for (const key of ['PATH', 'HOME', 'TMPDIR', 'LANG', 'LC_ALL']) {
    const value = process.env[key]
    if (value !== undefined) base[key] = value
  }
  return { ...base, ...env }
}

/** Spawns `node src/cli.ts <args>` in the repository root with exactly `env` (plus PATH/HOME). */
export function spawnCli(args: readonly string[], env: Record<string, string>): CliProcess {
  const child = spawn(process.execPath, ['src/cli.ts', ...args], {
    cwd: repoRoot,
    env: childEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  const exited = new Promise<Exit>((resolve, reject) => {
    child.once('error', reject)
    child.once('close', (code, signal) => resolve({ code, signal }))
  })
  // Keep an unexpected spawn error from becoming an unhandled rejection; callers await `exited`.
  exited.catch(() => undefined)
  return {
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    output: () => `${stdout}\n${stderr}`,
    logLines: () => parseLogLines(stdout),
    exited,
    running: () => child.exitCode === null && child.signalCode === null,
  }
}

export function parseLogLines(text: string): LogLine[] {
  const lines: LogLine[] = []
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue
    try {
      const parsed: unknown = JSON.parse(line)
      if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) lines.push(parsed as LogLine)
    } catch {
      // A partial line (the rest is still in the pipe): not a log line yet.
    }
  }
  return lines
}

/** Runs a CLI command to completion; rejects (after killing it) if it takes longer than `timeoutMs`. */
export async function runCli(args: readonly string[], env: Record<string, string>, timeoutMs = 60_000): Promise<Exit & { stdout: string; stderr: string; logLines: LogLine[] }> {
  const proc = spawnCli(args, env)
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      proc.child.kill('SIGKILL')
      reject(new Error(`tessera ${args.join(' ')} did not exit within ${timeoutMs} ms\n${proc.output()}`))
    }, timeoutMs)
  })
  try {
    const exit = await Promise.race([proc.exited, timeout])
    return { ...exit, stdout: proc.stdout(), stderr: proc.stderr(), logLines: proc.logLines() }
  } finally {
    clearTimeout(timer)
  }
}

const LISTENING = /^Server listening at (http:\/\/\S+)$/

/**
 * Starts `tessera serve` and resolves once it logs "Server listening at …" (use PORT=0: the line tells
 * the port). Rejects with the process output if it exits or takes longer than `timeoutMs` first.
 */
export async function startServer(env: Record<string, string>, options: { timeoutMs?: number } = {}): Promise<ServerProcess> {
  const timeoutMs = options.timeoutMs ?? 30_000
  const proc = spawnCli(['serve'], env)

  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<Exit> => {
    if (proc.running()) proc.child.kill(signal)
    return proc.exited
  }
  const kill = async (graceMs = 15_000): Promise<void> => {
    if (!proc.running()) {
      await proc.exited.catch(() => undefined)
      return
    }
    proc.child.kill('SIGTERM')
    let timer: NodeJS.Timeout | undefined
    const gone = await Promise.race([
      proc.exited.then(() => true, () => true),
      new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), graceMs) }),
    ])
    clearTimeout(timer)
    if (!gone) {
      proc.child.kill('SIGKILL')
      await proc.exited.catch(() => undefined)
    }
  }

  const baseUrl = await new Promise<string>((resolve, reject) => {
    let done = false
    const finish = (error: Error | undefined, url?: string) => {
      if (done) return
      done = true
      clearTimeout(timer)
      proc.child.stdout?.off('data', onData)
      if (error) reject(error)
      else resolve(url ?? '')
    }
    const onData = () => {
      for (const line of proc.logLines()) {
        const match = typeof line.msg === 'string' ? LISTENING.exec(line.msg) : null
        if (match?.[1] !== undefined) return finish(undefined, match[1])
      }
    }
    const timer = setTimeout(() => {
      finish(new Error(`tessera serve did not start listening within ${timeoutMs} ms\n${proc.output()}`))
    }, timeoutMs)
    proc.child.stdout?.on('data', onData)
    proc.exited.then(
      (exit) => finish(new Error(`tessera serve exited before listening (code ${exit.code}, signal ${exit.signal})\n${proc.output()}`)),
      (err: unknown) => finish(err instanceof Error ? err : new Error(String(err))),
    )
  }).catch(async (err: unknown) => {
    await kill(5_000)
    throw err
  })

  return { ...proc, baseUrl, stop, kill }
}


/** Polls `check` until it returns true; rejects with `what` after `timeoutMs`. */
export async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await check()) return
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

/**
 * The environment of a real Tessera process in a test: its database, a fresh key-encryption key (pass
 * the same `TESSERA_KEY_ENCRYPTION_KEY` in `extra` to processes that share a database), the development
 * outbox, free ports for both listeners, cheap hashing and relaxed limits. `extra` overrides any of it.
 * (This pulls in helpers/app.ts, hence src/: a test that must load src/ only after starting tracing
 * imports this module dynamically.)
 */
export function processEnv(databaseUrl: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    DATABASE_URL: databaseUrl,
    TESSERA_KEY_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    TESSERA_EMAIL_OUTBOX: 'true',
    TESSERA_PUBLIC_URL: 'http://tessera.e2e',
    PORT: '0',
    METRICS_PORT: '0',
    LOG_LEVEL: 'info',
    ...CHEAP_HASHING,
    ...RELAXED_LIMITS,
    ...extra,
  }
}

/**
 * Follows the verification link of `email` against a real process: waits for its in-process worker to
 * put the message in the development outbox, then uses the token through the API. (The development
 * outbox logs link tokens by design: never add them to a test's "never logged" secrets.)
 */
export async function verifyByEmail(databaseUrl: string, baseUrl: string, email: string): Promise<void> {
  const sql = testPool(databaseUrl, 1)
  try {
    let token: string | null = null
    await waitFor(`the verification message to ${email}`, async () => {
      const { rows } = await sql.query<{ text_body: string }>("SELECT text_body FROM mail_outbox WHERE recipient = $1 AND subject LIKE 'Confirm%'", [email])
      const link = /https?:\/\/\S+/.exec(rows[0]?.text_body ?? '')?.[0]
      token = link === undefined ? null : new URL(link).searchParams.get('token')
      return token !== null
    }, 20_000)
    const res = await fetch(new URL('/v1/email-verification/confirm', baseUrl), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token }) })
    if (res.status !== 204) throw new Error(`verification failed: ${res.status} ${await res.text()}`)
  } finally {
    await sql.end()
  }
}
