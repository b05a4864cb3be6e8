import { createServer } from 'node:net'

/**
 * A TCP port that was free a moment ago on 127.0.0.1. Shared by the test runner, the test helpers and
 * the bench, which all start servers (PostgreSQL, Redis, Tessera) on ports of their own.
 */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => { resolve(typeof address === 'object' && address !== null ? address.port : 0) })
    })
  })
}
