/**
 * The caller's half of `--fd N`: the CLI sends its own descriptor N to the daemon with
 * SCM_RIGHTS, with a fresh random token, over the daemon's fd socket (next to the control
 * socket, same owner and mode), then names the token in `vm.attach`. The daemon never takes a
 * descriptor number from a request, so no caller can make it use one of its own.
 */
import { randomBytes } from 'node:crypto';
import { native } from '../native/index.js';

/** 128 random bits as lowercase hex: unguessable, single use. */
export const FD_TOKEN_RE = /^[0-9a-f]{32}$/;

/** The daemon's fd socket for a control socket path. */
export function fdSocketPath(controlSocket: string): string {
  return `${controlSocket}.fd`;
}

function errnoCode(e: unknown): string | undefined {
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}

/** Sends this process's descriptor `fd` to the daemon; returns the token to attach it with. Throws an Error saying what went wrong in one line. */
export function passFd(controlSocket: string, fd: number): string {
  const path = fdSocketPath(controlSocket);
  const token = randomBytes(16).toString('hex');
  try {
    native.sendFd(path, token, fd);
  } catch (e) {
    switch (errnoCode(e)) {
      case 'EBADF':
        throw new Error(`fd ${fd} is not open in this process`);
      case 'ENOENT':
      case 'ECONNREFUSED':
        throw new Error(`no mvnet daemon takes descriptors at ${path} (is the daemon running, and new enough?)`);
      case 'EACCES':
        throw new Error(`permission denied on ${path} (run as root or as a member of the control socket's group)`);
      case 'EAGAIN':
        throw new Error(`the daemon's descriptor queue at ${path} is full; try again`);
      default:
        throw new Error(`cannot pass fd ${fd} to the daemon: ${(e as Error).message}`);
    }
  }
  return token;
}
