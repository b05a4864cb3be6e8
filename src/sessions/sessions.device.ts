import Bowser from 'bowser'

/** "Firefox 128 on macOS 14" — a readable summary of a user agent, for session lists. */
export function deviceSummary(userAgent: string | null): string {
  if (userAgent === null || userAgent.trim() === '') return 'Unknown device'
  try {
    const parsed = Bowser.parse(userAgent)
    const browser = [parsed.browser.name, parsed.browser.version?.split('.')[0]].filter(Boolean).join(' ')
    const os = [parsed.os.name, parsed.os.versionName ?? parsed.os.version?.split('.')[0]].filter(Boolean).join(' ')
    const summary = [browser, os].filter((s) => s.length > 0).join(' on ')
    return summary.length > 0 ? summary.slice(0, 120) : 'Unknown device'
  } catch {
    return 'Unknown device'
  }
}
