/**
 * Summarises a V8 .cpuprofile (as written by `BENCH_PROFILE=1 npm run bench`): self time by function
 * and by package/file, so that "where does a request's CPU go" has a quick answer.
 *
 * Usage: node bench/profile-summary.ts <file.cpuprofile> [top=25]
 */
import { readFile } from 'node:fs/promises'

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  hitCount?: number
}

interface Profile {
  nodes: ProfileNode[]
  samples: number[]
  timeDeltas: number[]
}

const file = process.argv[2]
if (file === undefined) {
  console.error('usage: node bench/profile-summary.ts <file.cpuprofile> [top]')
  process.exit(64)
}
const top = Number(process.argv[3] ?? '25')
const profile = JSON.parse(await readFile(file, 'utf8')) as Profile

const byId = new Map(profile.nodes.map((n) => [n.id, n]))
const selfUs = new Map<number, number>()
profile.samples.forEach((id, i) => { selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)) })
const total = [...selfUs.values()].reduce((a, b) => a + b, 0)

function where(url: string): string {
  if (url === '') return '(native/V8)'
  const nm = url.lastIndexOf('node_modules/')
  if (nm !== -1) {
    const rest = url.slice(nm + 'node_modules/'.length).split('/')
    return rest[0]?.startsWith('@') === true ? `${rest[0]}/${rest[1]}` : (rest[0] ?? url)
  }
  if (url.startsWith('node:')) return url
  const src = url.indexOf('/src/')
  return src !== -1 ? url.slice(src + 1) : url
}

const byFunction = new Map<string, number>()
const byPlace = new Map<string, number>()
for (const [id, us] of selfUs) {
  const node = byId.get(id)
  if (node === undefined) continue
  const { functionName, url, lineNumber } = node.callFrame
  const place = where(url)
  const key = `${functionName || '(anonymous)'}  ${place}${url === '' ? '' : `:${lineNumber + 1}`}`
  byFunction.set(key, (byFunction.get(key) ?? 0) + us)
  byPlace.set(place, (byPlace.get(place) ?? 0) + us)
}

function print(title: string, map: Map<string, number>): void {
  console.log(`\n${title}`)
  for (const [key, us] of [...map].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`${((us / total) * 100).toFixed(1).padStart(5)} %  ${(us / 1000).toFixed(0).padStart(7)} ms  ${key}`)
  }
}

console.log(`${file}: ${(total / 1e6).toFixed(1)} s of samples`)
print('Self time by package / file', byPlace)
print('Self time by function', byFunction)
