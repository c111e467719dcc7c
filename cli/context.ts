import type { Command } from 'commander';
import { call } from './client.js';

export const DEFAULT_SOCKET = '/run/mvnet/mvnet.sock';

/** Global options as every subcommand sees them. */
export interface Ctx {
  socket(): string;
  json(): boolean;
  call<T>(method: string, params?: unknown): Promise<T>;
}

export function makeCtx(program: Command): Ctx {
  const opts = (): { socket?: string; json?: boolean } => program.opts();
  const socket = (): string => opts().socket ?? process.env.MVNET_SOCKET ?? DEFAULT_SOCKET;
  return {
    socket,
    json: () => opts().json === true,
    call: <T>(method: string, params?: unknown) => call<T>(socket(), method, params),
  };
}
