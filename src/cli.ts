#!/usr/bin/env node
/**
 * The `tessera` command. `tessera serve` (the default of `npm start`) runs the service;
 * `tessera migrate` applies pending migrations and exits.
 */
import { parseArgs } from 'node:util'
import { createLogger } from './logger.ts'
import { loadConfigOrExit, openDatabase, runMigrations, serve } from './main.ts'

const usage = `Usage: tessera <command>

Commands:
  serve      Run the HTTP API (applies migrations first unless TESSERA_MIGRATE_ON_START=false)
  migrate    Apply pending database migrations and exit
  help       Show this help

Configuration comes from environment variables: see docs/configuration.md.`

async function main(argv: string[]): Promise<void> {
  const { positionals, values } = parseArgs({ args: argv, allowPositionals: true, strict: false, options: { help: { type: 'boolean', short: 'h' } } })
  const command = positionals[0] ?? 'serve'
  if (values.help === true || command === 'help') {
    console.log(usage)
    return
  }
  switch (command) {
    case 'serve':
      await serve(process.env)
      return
    case 'migrate': {
      const initial = loadConfigOrExit(process.env)
      const logger = createLogger(initial.logLevel)
      const { config, embedded } = await openDatabase(initial, logger)
      try {
        await runMigrations(config, logger)
      } finally {
        await embedded?.stop()
      }
      return
    }
    default:
      console.error(`tessera: unknown command "${command}"\n\n${usage}`)
      process.exitCode = 64
  }
}

await main(process.argv.slice(2))
