/**
 * Where the daemon (root) may create, replace and remove VM sockets, and how. A caller of the
 * control socket names the path, so every step assumes the path may point at something that is
 * not ours: the daemon's own control socket, another service's socket, a symlink to /etc.
 *
 * - The directory must be writable only by root (or the daemon's user) and the socket group;
 *   its parents too, except sticky ones such as /tmp (their entries cannot be swapped by others).
 * - Nothing at the path is followed (lstat); only a socket nobody accepts on (a stale one) is
 *   replaced.
 * - The socket is bound inside a private directory made next to the path, chmod'ed and chown'ed
 *   through an O_PATH|O_NOFOLLOW descriptor (never through a symlink), and renamed into place, so
 *   the replacement of a stale socket is atomic.
 * - Only the file we made (same device and inode) is removed at detach.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export interface FileId {
  dev: number;
  ino: number;
}

const O_PATH = 0o10000000; // Linux; not exported by node:fs

function euid(): number {
  return process.geteuid?.() ?? 0;
}

function octal(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}

/**
 * What is wrong with directory `dir`, from the error of an operation on it: for ENOENT, ENOTDIR
 * and EEXIST (mkdir over a file) the nearest existing ancestor tells whether `dir` does not
 * exist or a file stands in the way; anything else is named by its code.
 */
export function dirProblem(dir: string, e: unknown, what = 'directory'): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EEXIST') {
    for (let p = dir; ; p = path.dirname(p)) {
      let st: fs.Stats | undefined;
      try {
        st = fs.statSync(p);
      } catch {
        if (path.dirname(p) === p) break;
        continue;
      }
      if (!st.isDirectory()) return p === dir ? `${what} ${dir} is not a directory` : `${what} ${dir}: ${p} is not a directory`;
      if (p !== dir) return `${what} ${dir} does not exist`;
      break;
    }
  }
  return `${what} ${dir} is not usable (${code ?? (e as Error).message})`;
}

/**
 * Refuses a socket directory that someone other than root (or the daemon's user) and the socket
 * group `gid` could write to; checks its parents up to `/` as well. Returns the directory's real
 * path (symlinks resolved), where the socket is then made.
 */
export function checkSocketDir(dir: string, gid: number | undefined, hint = ', or a bare name (made in the VM socket directory)'): string {
  let real: string;
  try {
    real = fs.realpathSync(dir);
  } catch (e) {
    throw new Error(dirProblem(dir, e, 'socket directory'));
  }
  const me = euid();
  for (let p = real, own = true; ; own = false) {
    const st = fs.lstatSync(p);
    const where = own ? `socket directory ${p}` : `${p} (a parent of the socket directory ${real})`;
    if (!st.isDirectory()) throw new Error(`${where} is not a directory`);
    if (st.uid !== 0 && st.uid !== me) throw new Error(`${where} is owned by uid ${st.uid}, not root: others could replace the socket`);
    if ((st.mode & 0o020) !== 0 && st.gid !== 0 && st.gid !== gid) {
      throw new Error(`${where} is writable by group ${st.gid} (mode ${octal(st.mode)}), not root's or the socket group`);
    }
    // A sticky parent (like /tmp) is fine: others cannot rename or remove the root-owned entry below it.
    if ((st.mode & 0o002) !== 0 && (own || (st.mode & 0o1000) === 0)) {
      throw new Error(`${where} is writable by everyone (mode ${octal(st.mode)}); use a directory only root and the socket group can write${hint}`);
    }
    const up = path.dirname(p);
    if (up === p) break;
    p = up;
  }
  return real;
}

/** True when something accepts a connection on (or is bound at) the socket `p`. */
export function isLiveSocket(p: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.createConnection({ path: p });
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', (e: NodeJS.ErrnoException) => {
      c.destroy();
      // Only "refused" (nobody bound) and "gone" mean dead; a bound datagram socket answers
      // EPROTOTYPE to a stream connect, a full listener EAGAIN: both are alive.
      resolve(e.code !== 'ECONNREFUSED' && e.code !== 'ENOENT');
    });
  });
}

/** What is at `p` now, without following a symlink: absent, or a socket; anything else is refused. */
function lstatTarget(p: string, shown: string): fs.Stats | null {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  if (st.isSymbolicLink()) throw new Error(`${shown} is a symlink; give the socket's real path`);
  if (!st.isSocket()) throw new Error(`${shown} exists and is not a socket`);
  return st;
}

export interface MadeSocket<T> {
  value: T;
  /** The path it lives at (the directory's real path joined with the name). */
  path: string;
  /** The file we made: only this is ever removed. */
  id: FileId;
}

/** Longest path a unix socket can be bound at. */
const SUN_PATH_MAX = 107;

/**
 * Gives the socket file at `p` mode 0660 (and group `gid`) without ever following a symlink:
 * the file is pinned with O_PATH|O_NOFOLLOW, checked to be a socket, and changed through
 * /proc/self/fd (as fchmodat(AT_SYMLINK_NOFOLLOW) does). Returns its identity.
 */
function setSocketMode(p: string, gid: number | undefined): FileId {
  const pinned = fs.openSync(p, O_PATH | fs.constants.O_NOFOLLOW);
  try {
    const st = fs.fstatSync(pinned);
    if (!st.isSocket()) throw new Error(`${p} is not the socket just bound`);
    fs.chmodSync(`/proc/self/fd/${pinned}`, 0o660);
    if (gid !== undefined) fs.chownSync(`/proc/self/fd/${pinned}`, euid(), gid);
    return { dev: st.dev, ino: st.ino };
  } finally {
    fs.closeSync(pinned);
  }
}

/**
 * Creates a socket at `target`: checks the directory, refuses a symlink, a non-socket or a live
 * socket there, has `bind` create it at a path inside a private directory next to `target`, gives
 * it mode 0660 (group `gid` when set) and renames it into place. `undo` releases what `bind` made
 * when a later step fails.
 */
export async function createSocketAt<T>(target: string, gid: number | undefined, bind: (tmpPath: string) => Promise<T> | T, undo: (v: T) => void): Promise<MadeSocket<T>> {
  const dir = checkSocketDir(path.dirname(target), gid);
  const real = path.join(dir, path.basename(target));
  if (lstatTarget(real, target) !== null && (await isLiveSocket(real))) {
    throw new Error(`${target} is a live socket (something accepts connections on it); refusing to replace it`);
  }
  // ".mvXXXXXX/s": the private name is at most 12 bytes longer than the directory.
  if (Buffer.byteLength(dir) + 12 > SUN_PATH_MAX) throw new Error(`socket directory ${dir} is too long for a unix socket path (at most ${SUN_PATH_MAX - 12} bytes)`);
  const tmpDir = fs.mkdtempSync(path.join(dir, '.mv'));
  const tmpPath = path.join(tmpDir, 's');
  let made: { v: T } | null = null;
  try {
    made = { v: await bind(tmpPath) };
    const id = setSocketMode(tmpPath, gid);
    // Checked again right before the atomic replace: the bind took time.
    lstatTarget(real, target);
    fs.renameSync(tmpPath, real);
    const st = fs.lstatSync(real);
    if (st.dev !== id.dev || st.ino !== id.ino) throw new Error(`${target} was replaced while mvnet made it`);
    return { value: made.v, path: real, id };
  } catch (e) {
    if (made !== null) undo(made.v);
    throw e;
  } finally {
    fs.rmSync(tmpDir, { recursive: true, force: true });
  }
}

/** Removes `p` only if it is still the socket we made; returns whether it did. */
export function removeOwnSocket(p: string, id: FileId): boolean {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch {
    return false;
  }
  if (!st.isSocket() || st.dev !== id.dev || st.ino !== id.ino) return false;
  fs.rmSync(p, { force: true });
  return true;
}

/**
 * A socket path we send to but do not own (QEMU's datagram socket): absent (QEMU not started
 * yet) or a socket; a symlink or any other file is refused.
 */
export function checkPeerSocket(p: string): void {
  lstatTarget(p, p);
}

/**
 * Opens an existing FIFO read-write and non-blocking (so neither open() nor a missing writer
 * ever blocks the daemon), never following a symlink and never opening anything but a FIFO:
 * the path is pinned with O_PATH|O_NOFOLLOW, checked, and only then reopened through /proc.
 */
export function openFifo(p: string): number {
  let pinned: number;
  try {
    pinned = fs.openSync(p, O_PATH | fs.constants.O_NOFOLLOW);
  } catch (e) {
    throw new Error(`cannot open FIFO ${p} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    const st = fs.fstatSync(pinned);
    if (st.isSymbolicLink()) throw new Error(`${p} is a symlink; give the FIFO's real path`);
    if (!st.isFIFO()) throw new Error(`${p} is not a FIFO`);
    const fd = fs.openSync(`/proc/self/fd/${pinned}`, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    const again = fs.fstatSync(fd);
    if (!again.isFIFO() || again.ino !== st.ino || again.dev !== st.dev) {
      fs.closeSync(fd);
      throw new Error(`${p} changed while it was opened`);
    }
    return fd;
  } finally {
    fs.closeSync(pinned);
  }
}

/**
 * The VM socket directory: created mode 0750 (group `gid` when set) with its parent 0755. One
 * that exists already is not changed (it may be a directory the admin chose), except that a
 * directory that looks like ours (0750 or 0700) is given the socket group. Either way it is then
 * held to the rule of every socket directory.
 */
export function prepareVmSocketDir(dir: string, gid: number | undefined): void {
  fs.mkdirSync(path.dirname(dir), { recursive: true, mode: 0o755 });
  let created = true;
  try {
    fs.mkdirSync(dir, { mode: 0o750 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    created = false;
  }
  const st = fs.lstatSync(dir);
  if (!st.isDirectory()) throw new Error(`VM socket directory ${dir} is not a directory`);
  if (st.uid !== euid()) throw new Error(`VM socket directory ${dir} is owned by uid ${st.uid}, not by the daemon's user`);
  const ours = created || (st.mode & 0o7777) === 0o750 || (st.mode & 0o7777) === 0o700;
  if (created) fs.chmodSync(dir, 0o750); // mkdir's mode passed through the umask
  if (ours && gid !== undefined && st.gid !== gid) fs.chownSync(dir, euid(), gid);
  checkSocketDir(dir, gid, ' (config vmSocketDir)');
}
