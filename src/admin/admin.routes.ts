import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { preHandlerAsyncHookHandler } from 'fastify'
import type { AdminService } from './admin.service.ts'

/** The admin API (stub: implemented with the admin issue work). */
export const adminRoutes: FastifyPluginAsyncTypebox<{ admin: AdminService; authenticate: preHandlerAsyncHookHandler }> = async (app, options) => {
  void app
  void options
}
