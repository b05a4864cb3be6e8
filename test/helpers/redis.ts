/**
 * A private Redis server for a test file (the machine's `redis-server` binary, on a free port), so a
 * test can kill and restart it without disturbing anything else.
 *
 * Where no redis-server is installed (a fresh laptop), Redis tests are skipped with a visible notice;
 * in CI (CI=true) a missing Redis is an error, never a skip.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { Socket } from 'node:net'
import { freePort } from '../../scripts/lib/free-port.ts'

export function redisAvailable(): { ok: true } | { ok: false; reason: string } {
  const probe = spawnSync('redis-server', ['--version'], { encoding: 'utf8' })
  if (probe.status === 0) return { ok: true }
  const reason = 'redis-server is not installed: Redis tests skipped (install Debian package redis-server to run them)'
  if (process.env.CI === 'true') throw new Error(`${reason} — refusing to skip in CI`)
  return { ok: false, reason }
}

export interface TestRedis {
  readonly url: string
  stop(): Promise<void>
  start(): Promise<void>
}

async function waitForPort(port: number, up: boolean): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const open = await new Promise<boolean>((resolve) => {
      const s = new Socket()
      s.once('connect', () => { s.destroy(); resolve(true) })
      s.once('error', () => resolve(false))
      s.connect(port, '127.0.0.1')
    })
    if (open === up) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`redis on ${port} did not become ${up ? 'reachable' : 'unreachable'}`)
}

export async function startTestRedis(): Promise<TestRedis> {
  const port = await freePort()
  let child: ChildProcess | undefined
  const start = async () => {
    child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
    await waitForPort(port, true)
  }
  const stop = async () => {
    const c = child
    child = undefined
    if (c === undefined || c.exitCode !== null) return
    const exited = new Promise((r) => c.once('exit', r))
    c.kill('SIGKILL')
    await exited
    await waitForPort(port, false)
  }
  await start()
  return { url: `redis://127.0.0.1:${port}`, start, stop }
}
