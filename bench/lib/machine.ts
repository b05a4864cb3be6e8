/**
 * CPU accounting from /proc (Linux), to make a shared machine visible in the results:
 *
 * - CPU time per request of the server under test (a figure much less sensitive to contention than
 *   throughput), and of PostgreSQL;
 * - CPU time used meanwhile by processes that are not part of the bench (other users of the machine),
 *   so that a round disturbed by a neighbour can be recognised.
 *
 * Where /proc is not readable, every figure is undefined and the bench runs without them.
 */
import { createHash } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'

/** USER_HZ: the unit of utime/stime in /proc/<pid>/stat (100 on every mainstream Linux build). */
const TICKS_PER_SECOND = 100

interface ProcEntry {
  readonly ppid: number
  readonly comm: string
  readonly ticks: number
}

export interface CpuSnapshot {
  readonly at: number
  readonly procs: ReadonlyMap<number, ProcEntry>
}

export async function snapshot(): Promise<CpuSnapshot | undefined> {
  let names: string[]
  try {
    names = await readdir('/proc')
  } catch {
    return undefined
  }
  const procs = new Map<number, ProcEntry>()
  await Promise.all(names.filter((n) => /^\d+$/.test(n)).map(async (n) => {
    try {
      const text = await readFile(`/proc/${n}/stat`, 'latin1')
      const close = text.lastIndexOf(')')
      const comm = text.slice(text.indexOf('(') + 1, close)
      const fields = text.slice(close + 2).split(' ')
      // After "pid (comm) ": state(0) ppid(1) … utime(11) stime(12)
      procs.set(Number(n), { ppid: Number(fields[1]), comm, ticks: Number(fields[11]) + Number(fields[12]) })
    } catch {
      // the process ended meanwhile
    }
  }))
  return { at: performance.now(), procs }
}

function descendants(procs: ReadonlyMap<number, ProcEntry>, roots: readonly number[]): Set<number> {
  const children = new Map<number, number[]>()
  for (const [pid, p] of procs) {
    const list = children.get(p.ppid)
    if (list === undefined) children.set(p.ppid, [pid])
    else list.push(pid)
  }
  const out = new Set<number>()
  const stack = roots.filter((r) => procs.has(r))
  while (stack.length > 0) {
    const pid = stack.pop() as number
    if (out.has(pid)) continue
    out.add(pid)
    stack.push(...(children.get(pid) ?? []))
  }
  return out
}

export interface CpuGroups {
  /** The server under test in this segment (its CPU is reported per request), if any. */
  readonly server?: number | undefined
  /** The PostgreSQL postmaster the bench uses (its whole process tree counts as PostgreSQL). */
  readonly postmaster?: number | undefined
}

export interface CpuUse {
  readonly wallS: number
  /** CPU seconds of the server process under test. */
  readonly serverS: number | undefined
  /** CPU seconds of the bench process itself (load generator, in-process baselines). */
  readonly benchS: number
  readonly postgresS: number | undefined
  /** CPU seconds of processes outside the bench (other users of the machine), kernel threads excluded. */
  readonly othersS: number
  /** The busiest of those, for the log. */
  readonly topOthers: ReadonlyArray<{ readonly pid: number; readonly comm: string; readonly cpuS: number }>
}

export function cpuBetween(a: CpuSnapshot, b: CpuSnapshot, groups: CpuGroups): CpuUse {
  const delta = (pid: number) => {
    const after = b.procs.get(pid)
    if (after === undefined) return 0
    return (after.ticks - (a.procs.get(pid)?.ticks ?? 0)) / TICKS_PER_SECOND
  }
  const ours = descendants(b.procs, [process.pid])
  const postgres = groups.postmaster === undefined ? new Set<number>() : descendants(b.procs, [groups.postmaster])
  const kernel = descendants(b.procs, [2])
  let benchS = 0
  let postgresS = 0
  let othersS = 0
  const others: Array<{ pid: number; comm: string; cpuS: number }> = []
  for (const [pid, p] of b.procs) {
    const d = delta(pid)
    if (d <= 0) continue
    if (pid === process.pid) benchS += d
    else if (postgres.has(pid)) postgresS += d
    else if (!ours.has(pid) && !kernel.has(pid)) {
      othersS += d
      others.push({ pid, comm: p.comm, cpuS: d })
    }
  }
  return {
    wallS: (b.at - a.at) / 1000,
    serverS: groups.server === undefined ? undefined : delta(groups.server),
    benchS,
    postgresS: groups.postmaster === undefined ? undefined : postgresS,
    othersS,
    topOthers: others.sort((x, y) => y.cpuS - x.cpuS).slice(0, 3),
  }
}

/** The parent of a PostgreSQL backend process, i.e. the postmaster, when the server runs on this machine. */
export async function postmasterOf(backendPid: number): Promise<number | undefined> {
  try {
    const text = await readFile(`/proc/${backendPid}/stat`, 'latin1')
    // Same pid on this machine, and a PostgreSQL process (not a pid of a server elsewhere).
    if (!text.includes('(postgres)')) return undefined
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
    const ppid = Number(fields[1])
    return Number.isInteger(ppid) && ppid > 1 ? ppid : undefined
  } catch {
    return undefined
  }
}

/**
 * A fixed CPU-bound task on the bench's main thread (SHA-256 of 1 KiB, repeatedly, for `ms`): work units
 * per millisecond. Taken between segments, it shows how much the machine's own speed moves during the
 * run (on a shared virtual machine it can move by 2× within a minute, invisibly to /proc).
 */
export function speedProbe(ms = 50): number {
  const data = Buffer.alloc(1024, 7)
  const start = performance.now()
  let n = 0
  while (performance.now() - start < ms) {
    for (let i = 0; i < 20; i++) createHash('sha256').update(data).digest()
    n += 20
  }
  return n / (performance.now() - start)
}
