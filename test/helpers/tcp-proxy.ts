/**
 * A TCP proxy in front of PostgreSQL that a test can cut (connections refused and reset) or freeze
 * (connections accepted, nothing forwarded), to inject database faults without touching the server.
 */
import net from 'node:net'

export interface TcpProxy {
  readonly port: number
  /** Refuse new connections and reset the open ones (the database "died"). */
  cut(): Promise<void>
  /** Keep sockets open but forward nothing (the database "froze"). */
  freeze(): void
  /** Forward again. */
  restore(): Promise<void>
  close(): Promise<void>
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  let mode: 'up' | 'frozen' = 'up'
  const sockets = new Set<net.Socket>()
  let server: net.Server | undefined
  let port = 0

  const listen = () => new Promise<void>((resolve, reject) => {
    server = net.createServer((client) => {
      sockets.add(client)
      const upstream = net.connect(target.port, target.host)
      sockets.add(upstream)
      const forward = (from: net.Socket, to: net.Socket) => from.on('data', (chunk) => { if (mode === 'up') to.write(chunk) })
      forward(client, upstream)
      forward(upstream, client)
      const end = () => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream) }
      client.on('error', end).on('close', end)
      upstream.on('error', end).on('close', end)
    })
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => {
      const address = server?.address()
      if (typeof address === 'object' && address) port = address.port
      resolve()
    })
  })
  const stop = () => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy()
    sockets.clear()
    if (server) server.close(() => resolve())
    else resolve()
    server = undefined
  })

  await listen()
  return {
    get port() { return port },
    cut: stop,
    freeze() { mode = 'frozen' },
    async restore() {
      if (mode === 'frozen') {
        // Frozen sockets have lost bytes; drop them so the pool opens fresh connections.
        for (const s of sockets) s.destroy()
        sockets.clear()
      }
      mode = 'up'
      if (!server) await listen()
    },
    close: stop,
  }
}
