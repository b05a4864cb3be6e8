/**
 * The results: the checks against the targets, the printed tables and bench/results/latest.json.
 * A figure is never rounded across its threshold: it is printed with as many decimals as it takes to
 * stay on the same side as the exact value.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import type { OpenLoopResult } from './open-loop.ts'
import type { Aggregate } from './stats.ts'

export interface Check {
  readonly description: string
  readonly measured: number
  readonly comparison: '>=' | '<'
  readonly threshold: number
  readonly unit: '%' | 'ms'
  readonly pass: boolean
  /** Why a check failed besides the figure (errors, unfinished requests), if so. */
  readonly note: string | undefined
}

/** CPU time per operation over one side's rounds (from /proc; undefined where not measurable). */
export interface CpuSummary {
  /** The server process under test (Tessera or the bare baseline server); undefined for in-process baselines. */
  readonly serverUsPerOp: number | undefined
  readonly postgresUsPerOp: number | undefined
  /** The bench process: the load generator, or the work itself for in-process baselines. */
  readonly benchUsPerOp: number | undefined
  /** Average number of cores used by processes outside the bench meanwhile, per round. */
  readonly othersCoresPerRound: ReadonlyArray<number | undefined>
}

/** A saturation comparison: rounds alternating baseline and Tessera segments (B T, T B, B T, …). */
export interface SaturationPair {
  readonly rounds: number
  readonly segmentS: number
  readonly tessera: Aggregate & { readonly method: string; readonly connections: number }
  readonly baseline: Aggregate & { readonly description: string }
  /** Tessera rate / baseline rate of each round. */
  readonly ratios: readonly number[]
  /** The figure checked against the target: robust to a burst of machine noise in one round. */
  readonly medianRatio: number
  /** Sum over all rounds; reported next to the median. */
  readonly aggregateRatio: number
  readonly cpu: { readonly tessera: CpuSummary; readonly baseline: CpuSummary }
  /**
   * Baseline CPU per op / Tessera CPU per request, each the sum of server, PostgreSQL and bench process
   * (the load generator shares the cores, so it counts). Much less sensitive to a noisy machine than
   * throughput; informational, the checked figure is `medianRatio`.
   */
  readonly cpuCostRatio: number | undefined
  /** The machine speed probe taken before each segment, in order (see machine.ts). */
  readonly speedProbes: readonly number[]
}

export interface OperationResult {
  readonly name: string
  readonly request: string
  readonly saturation: SaturationPair
  readonly ratioCheck: Check
  readonly fixedRate: OpenLoopResult & { readonly othersCores: number | undefined }
  readonly p95Check: Check
}

function sideOk(value: number, comparison: Check['comparison'], threshold: number): boolean {
  return comparison === '>=' ? value >= threshold : value < threshold
}

/** Formats `value` with the fewest decimals (1 to 6) that keep it on the same side of the threshold. */
export function formatAgainst(value: number, comparison: Check['comparison'], threshold: number): string {
  if (!Number.isFinite(value)) return String(value)
  const truth = sideOk(value, comparison, threshold)
  for (let digits = 1; digits <= 6; digits++) {
    const shown = value.toFixed(digits)
    if (sideOk(Number(shown), comparison, threshold) === truth) return shown
  }
  return value.toString()
}

export function ratioCheck(description: string, pair: SaturationPair, target: number): Check {
  const measured = pair.medianRatio * 100
  const threshold = target * 100
  const notes: string[] = []
  if (pair.tessera.errors > 0) notes.push(`${pair.tessera.errors} non-2xx/transport errors in the Tessera runs`)
  if ((pair.aggregateRatio >= target) !== (pair.medianRatio >= target)) {
    notes.push(`the aggregate ratio, ${formatAgainst(pair.aggregateRatio * 100, '>=', threshold)} %, is on the other side`)
  }
  return {
    description, measured, comparison: '>=', threshold, unit: '%',
    pass: measured >= threshold,
    note: notes.length > 0 ? notes.join('; ') : undefined,
  }
}

export function p95Check(description: string, run: OpenLoopResult, targetMs: number): Check {
  const problems: string[] = []
  if (run.errors > 0) problems.push(`${run.errors} non-2xx/transport errors`)
  if (run.unfinished > 0) problems.push(`${run.unfinished} requests unanswered at the end`)
  return {
    description, measured: run.latencyMs.p95, comparison: '<', threshold: targetMs, unit: 'ms',
    // Errors fail the check: shed or failed requests are not in the latencies, so a p95 alone would flatter.
    pass: run.latencyMs.p95 < targetMs && problems.length === 0,
    note: problems.length > 0 ? problems.join('; ') : undefined,
  }
}

function ms(v: number): string {
  if (!Number.isFinite(v)) return '–'
  return v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)
}

function rate(v: number): string {
  return v >= 100 ? Math.round(v).toLocaleString('en-US') : v.toFixed(1)
}

function verdict(check: Check): string {
  return `${check.pass ? 'PASS' : 'MISS'}${check.note !== undefined ? ` (${check.note})` : ''}`
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join(' | ')} |`
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n')
}

function pct(v: number): string {
  return `${Math.floor(v * 1000) / 10}`
}

export function saturationTable(ops: readonly OperationResult[]): string {
  return table(
    ['Operation', 'Tessera req/s', 'p50 ms', 'p95 ms', 'p99 ms', 'Baseline ops/s', 'Ratio (median)', 'Rounds min–max', 'Aggregate', 'Target', 'Result'],
    ops.map((o) => {
      const s = o.saturation
      return [
        o.name,
        rate(s.tessera.rps),
        ms(s.tessera.latencyMs.p50),
        ms(s.tessera.latencyMs.p95),
        ms(s.tessera.latencyMs.p99),
        rate(s.baseline.rps),
        `${formatAgainst(o.ratioCheck.measured, '>=', o.ratioCheck.threshold)} %`,
        `${pct(Math.min(...s.ratios))}–${pct(Math.max(...s.ratios))} %`,
        `${formatAgainst(s.aggregateRatio * 100, '>=', o.ratioCheck.threshold)} %`,
        `>= ${o.ratioCheck.threshold} %`,
        verdict(o.ratioCheck),
      ]
    }),
  )
}

function us(v: number | undefined): string {
  return v === undefined || !Number.isFinite(v) ? '–' : Math.round(v).toLocaleString('en-US')
}

function cores(values: ReadonlyArray<number | undefined>): string {
  const known = values.filter((v): v is number => v !== undefined)
  if (known.length === 0) return '–'
  return `${Math.max(...known).toFixed(2)}`
}

/** Server + PostgreSQL + bench process CPU per operation, when all three parts that apply are known. */
export function totalCpuUs(c: CpuSummary): number | undefined {
  if (c.benchUsPerOp === undefined) return undefined
  return c.benchUsPerOp + (c.serverUsPerOp ?? 0) + (c.postgresUsPerOp ?? 0)
}

export function cpuTable(ops: readonly OperationResult[]): string {
  return table(
    ['Operation', 'Tessera µs/req', 'PostgreSQL µs/req', 'generator µs/req', 'Baseline: server µs/op', 'PostgreSQL µs/op', 'bench process µs/op', 'CPU-cost ratio', 'Others (max cores in a round)'],
    ops.map((o) => {
      const t = o.saturation.cpu.tessera
      const b = o.saturation.cpu.baseline
      const r = o.saturation.cpuCostRatio
      return [o.name, us(t.serverUsPerOp), us(t.postgresUsPerOp), us(t.benchUsPerOp), us(b.serverUsPerOp), us(b.postgresUsPerOp), us(b.benchUsPerOp),
        r === undefined ? '–' : `${(r * 100).toFixed(1)} %`,
        cores([...t.othersCoresPerRound, ...b.othersCoresPerRound])]
    }),
  )
}

export function baselineTable(ops: readonly OperationResult[]): string {
  return table(
    ['Operation', 'Tessera: closed loop', 'Baseline', 'Baseline p50 ms', 'Baseline p95 ms'],
    ops.map((o) => [o.name, o.saturation.tessera.method, o.saturation.baseline.description, ms(o.saturation.baseline.latencyMs.p50), ms(o.saturation.baseline.latencyMs.p95)]),
  )
}

export function fixedRateTable(ops: readonly OperationResult[]): string {
  return table(
    ['Operation', 'Offered req/s', 'Achieved req/s', 'p50 ms', 'p95 ms', 'p99 ms', 'max ms', 'Errors', 'Others (cores)', 'Target', 'Result'],
    ops.map((o) => {
      const f = o.fixedRate
      const c = o.p95Check
      return [
        o.name,
        rate(f.targetRate),
        rate(f.achievedRate),
        ms(f.latencyMs.p50),
        `${formatAgainst(f.latencyMs.p95, '<', c.threshold)}`,
        ms(f.latencyMs.p99),
        ms(f.latencyMs.max),
        String(f.errors + f.unfinished),
        f.othersCores === undefined ? '–' : f.othersCores.toFixed(2),
        `p95 < ${c.threshold} ms`,
        verdict(c),
      ]
    }),
  )
}

export async function writeJson(file: string, data: unknown): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true })
  await writeFile(file, JSON.stringify(data, null, 2) + '\n')
}
