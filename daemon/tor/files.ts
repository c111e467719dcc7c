/**
 * Files root shares with a tor that runs as another user, without letting that user turn them
 * against root: root's own files (torrc, the onion sockets' directories) live only in
 * directories the tor user cannot write, and ownership/mode are set through a file descriptor
 * opened with O_NOFOLLOW (never chown/chmod by name where the tor user could swap the name).
 */
import { execFile } from 'node:child_process';
import { constants as C, statSync } from 'node:fs';
import { lstat, lchown, chmod, mkdir, open, rename, rm, rmdir } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import type { Logger } from 'pino';

const DIR_FLAGS = C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW;

/**
 * Who must reach the sockets tor connects to (onion service targets): `self` (tor runs as the
 * daemon does: 0600 in 0700), `{ gid }` (tor's group: 0660 in 0710 root:gid), or `world` (an
 * external tor whose user is unknown: 0666 in 0711, as before; warned).
 */
export type TorReach = 'self' | 'world' | { gid: number };

function myIds(): { uid: number; gid: number } {
  return { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
}

/** Owner and mode of the directory `path`, set on an fd opened without following a link (refused: a link, not a directory). */
export async function fixDir(path: string, uid: number, gid: number, mode: number): Promise<void> {
  const fh = await open(path, DIR_FLAGS);
  try {
    const st = await fh.stat();
    if (st.uid !== uid || st.gid !== gid) await fh.chown(uid, gid);
    if ((st.mode & 0o7777) !== mode) await fh.chmod(mode);
  } finally {
    await fh.close();
  }
}

/** A new file (O_EXCL|O_NOFOLLOW: never an existing one or a link's target), owner and mode set on its fd, then written. */
export async function writeNewFile(path: string, data: string, uid: number, gid: number, mode: number): Promise<void> {
  await rm(path, { force: true });
  const fh = await open(path, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, mode);
  try {
    await fh.chown(uid, gid);
    await fh.chmod(mode);
    await fh.writeFile(data);
  } finally {
    await fh.close();
  }
}

function runAs(uid: number, gid: number, cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve) => execFile(cmd, args, { uid, gid }, () => resolve()));
}

/**
 * Moves `path` aside (its parent must be root's alone, so the rename is safe) and removes it.
 * A tree of another user's is removed as that user: whatever it swaps in meanwhile, the removal
 * has only its rights. Left over (and logged) when that fails.
 */
async function discard(path: string, st: { uid: number; gid: number; isDirectory(): boolean }, log: Logger): Promise<void> {
  const aside = join(dirname(path), `.old-${basename(path)}-${randomBytes(4).toString('hex')}`);
  await rename(path, aside);
  try {
    if (!st.isDirectory()) await rm(aside, { force: true });
    else if (st.uid === myIds().uid) await rm(aside, { recursive: true, force: true });
    else {
      // Inside a directory only root writes: that user empties it, root removes the empty directory.
      await runAs(st.uid, st.gid, 'rm', ['-rf', '--one-file-system', '--', `${aside}/`]);
      await rmdir(aside);
    }
  } catch (e) {
    log.warn({ path: aside, err: (e as Error).message }, 'could not remove an old tor directory; remove it by hand');
  }
}

/**
 * Makes `path` (in a directory only root writes) a directory of uid:gid with `mode`. One of that
 * owner is kept; anything else there (a link, a file, another user's or root's directory when it
 * should be the tor user's) is moved aside and removed, and a new directory made.
 */
export async function ownDir(path: string, uid: number, gid: number, mode: number, log: Logger): Promise<void> {
  let st;
  try {
    st = await lstat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  if (st !== undefined) {
    if (st.isDirectory() && st.uid === uid) return fixDir(path, uid, gid, mode);
    log.info({ path, owner: st.uid, wanted: uid }, 'replacing a tor directory of another owner or type');
    await discard(path, st, log);
  }
  await mkdir(path, { mode: 0o700 });
  await fixDir(path, uid, gid, mode);
}

/**
 * Lets group `gid` through the daemon's own state directory (g+x, group gid) instead of every
 * user (o+x): a state directory made 0711 by an earlier version goes back to 0710.
 */
export async function shareStateDir(stateDir: string, gid: number): Promise<void> {
  // The state directory may be a link an administrator made: follow it, but only to a directory of ours.
  const fh = await open(stateDir, C.O_RDONLY | C.O_DIRECTORY);
  try {
    const st = await fh.stat();
    if (st.uid !== myIds().uid) throw new Error(`tor: the state directory ${stateDir} is not the daemon's own`);
    let mode = st.mode & 0o7777;
    if ((mode & 0o777) === 0o711) mode &= ~0o001;
    if (st.gid !== gid) await fh.chown(st.uid, gid);
    if ((mode | 0o010) !== (st.mode & 0o7777)) await fh.chmod(mode | 0o010);
  } finally {
    await fh.close();
  }
}

/**
 * The directory `dir` (directly in `stateDir`) for sockets tor connects to: only root and tor's
 * group get in (0710 root:gid), tor's group through the state directory too.
 */
export async function prepareTorSocketDir(stateDir: string, dir: string, reach: TorReach): Promise<void> {
  const me = myIds();
  await mkdir(dir, { recursive: true, mode: 0o700 });
  if (reach === 'self') return fixDir(dir, me.uid, me.gid, 0o700);
  if (reach === 'world') return fixDir(dir, me.uid, me.gid, 0o711);
  await shareStateDir(stateDir, reach.gid);
  await fixDir(dir, me.uid, reach.gid, 0o710);
}

/** A socket tor connects to, in a directory of prepareTorSocketDir (root's: by name is safe there): 0660 root:gid. */
export async function shareTorSocket(sock: string, reach: TorReach): Promise<void> {
  const me = myIds();
  if (reach === 'self') return chmod(sock, 0o600);
  if (reach === 'world') return chmod(sock, 0o666);
  await lchown(sock, me.uid, reach.gid);
  await chmod(sock, 0o660);
}

/** Synchronous stat of a unix socket's group (an external tor's control socket), or undefined. */
export function socketGroup(path: string): number | undefined {
  try {
    return statSync(path).gid;
  } catch {
    return undefined;
  }
}
