/**
 * Child processes of the bench (the Tessera server, the bare baseline server): started with a known
 * loopback port, waited on until ready, and always stopped (SIGTERM, then SIGKILL) by the cleanup.
 */
import { spawn, type ChildProcess } from 'node:child_process'

export interface Child {
  readonly name: string
  readonly pid: number
  readonly port: number
  readonly url: string
  /** The last lines the child wrote (stdout and stderr), for diagnostics. */
  readonly output: () => string
  /** How many lines the child wrote in all. */
  readonly lineCount: () => number
  readonly exited: () => boolean
  stop(): Promise<void>
}

const running = new Set<Child>()

export { freePort } from '../../scripts/lib/free-port.ts'

function waitForExit(proc: ChildProcess, ms: number): Promise<boolean> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve(true)
  return new Promise((resolve) => {
    const timer = setTimeout(() => { resolve(false) }, ms)
    proc.once('exit', () => {
      clearTimeout(timer)
      resolve(true)
    })
  })
}

export interface StartOptions {
  readonly name: string
  readonly args: readonly string[]
  readonly env: NodeJS.ProcessEnv
  readonly port: number
  /** Path polled until it answers 200. */
  readonly readyPath: string
  readonly readyTimeoutMs?: number
  readonly cwd?: string
}

/** Starts `node <args>` and resolves once `readyPath` answers 200 on the given port. */
export async function startChild(options: StartOptions): Promise<Child> {
  const proc = spawn(process.execPath, [...options.args], {
    cwd: options.cwd ?? process.cwd(),
    env: options.env,
    // stdin is a pipe so that a child written for it can notice that the bench has gone away.
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  const lines: string[] = []
  let lineCount = 0
  const keep = (chunk: Buffer) => {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (line.trim() === '') continue
      lineCount++
      lines.push(line)
      if (lines.length > 50) lines.shift()
    }
  }
  proc.stdout?.on('data', keep)
  proc.stderr?.on('data', keep)
  let exited = false
  proc.once('exit', () => { exited = true })

  const url = `http://127.0.0.1:${options.port}`
  const child: Child = {
    name: options.name,
    pid: proc.pid ?? -1,
    port: options.port,
    url,
    output: () => lines.join('\n'),
    lineCount: () => lineCount,
    exited: () => exited,
    async stop() {
      running.delete(child)
      if (exited) return
      proc.kill('SIGTERM')
      if (await waitForExit(proc, 5000)) return
      proc.kill('SIGKILL')
      await waitForExit(proc, 2000)
    },
  }
  running.add(child)

  const deadline = Date.now() + (options.readyTimeoutMs ?? 60_000)
  for (;;) {
    if (exited) throw new Error(`${options.name} exited during start-up:\n${child.output()}`)
    try {
      const res = await fetch(url + options.readyPath, { signal: AbortSignal.timeout(1000) })
      await res.arrayBuffer()
      if (res.status === 200) return child
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await child.stop()
      throw new Error(`${options.name} was not ready within ${options.readyTimeoutMs ?? 60_000} ms:\n${child.output()}`)
    }
    await new Promise((r) => setTimeout(r, 100))
  }
}

/** Stops every child still running (cleanup path). */
export async function stopAllChildren(): Promise<void> {
  await Promise.all([...running].map((c) => c.stop()))
}
