/**
 * The admin API's service (stub: implemented with the admin issue work). Every action is audited with
 * the acting admin as actor.
 */
import type { Clock } from '../clock.ts'
import type { Pool } from '../db/pool.ts'
import type { EmailService } from '../email/email.service.ts'
import type { RevocationList } from '../sessions/revocation.ts'

export interface AdminServiceDeps {
  db: Pool
  clock: Clock
  revocations: RevocationList
  email: EmailService
}

export function createAdminService(deps: AdminServiceDeps) {
  void deps
  return {}
}

export type AdminService = ReturnType<typeof createAdminService>
