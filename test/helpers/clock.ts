import type { Clock } from '../../src/clock.ts'

/** A clock that moves only when told to. */
export class FakeClock implements Clock {
  #now: number
  constructor(start = new Date('2026-01-01T00:00:00Z')) {
    this.#now = start.getTime()
  }
  now(): Date {
    return new Date(this.#now)
  }
  advance(ms: number): void {
    this.#now += ms
  }
  advanceSeconds(s: number): void {
    this.advance(s * 1000)
  }
}
