/**
 * `--unix PATH`: QEMU listens (`-netdev stream,server=on,addr.type=unix,addr.path=PATH`) and
 * the daemon connects. The daemon reconnects by itself whenever either side restarts, which is
 * why this is the robust mode and the one the image-builder hooks use.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { StreamPort, duplexEnds } from '../common/stream-port.js';
import { dirProblem } from '../common/socket-path.js';
import type { PortContext, PortDriver, PortSpec } from '../types.js';
import { maxFrameFor } from '../types.js';

type Spec = Extract<PortSpec, { kind: 'unix' }>;

const RETRY_MIN_MS = 50;
const RETRY_MAX_MS = 2000;

class UnixConnectPort extends StreamPort {
  private timer: NodeJS.Timeout | null = null;
  private delay = RETRY_MIN_MS;
  private pending: net.Socket | null = null;

  constructor(
    private readonly path: string,
    ctx: PortContext,
  ) {
    super('unix', path, maxFrameFor(ctx.mtu), ctx.log, `connecting to ${path}`);
    this.connect();
  }

  private connect(): void {
    this.timer = null;
    if (this.closed) return;
    const sock = net.createConnection({ path: this.path });
    this.pending = sock;
    sock.once('connect', () => {
      this.pending = null;
      this.delay = RETRY_MIN_MS;
      sock.setNoDelay?.(true);
      this.attach(duplexEnds(sock));
    });
    sock.once('error', (e: NodeJS.ErrnoException) => {
      if (this.pending !== sock) return; // errors after connect are the base class's
      this.pending = null;
      sock.destroy();
      this.waitingDetail = `connecting to ${this.path} (${e.code ?? e.message})`;
      this.retry();
    });
  }

  private retry(): void {
    if (this.closed || this.timer !== null) return;
    this.timer = setTimeout(() => this.connect(), this.delay);
    this.timer.unref();
    this.delay = Math.min(this.delay * 2, RETRY_MAX_MS);
  }

  protected onDisconnect(why: string): void {
    this.waitingDetail = `reconnecting to ${this.path} (${why})`;
    this.delay = RETRY_MIN_MS;
    this.retry();
  }

  protected async shutdown(): Promise<void> {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.pending?.destroy();
    this.pending = null;
  }
}

export const unixConnectDriver: PortDriver<Spec> = {
  kind: 'unix',
  async open(spec, ctx) {
    // QEMU may start after the attach, but not in a directory that does not exist: that is a wrong
    // path, refused at attach (at restore it is waited for, like any socket not there yet).
    if (!ctx.restoring) {
      const dir = path.dirname(spec.path);
      let st: fs.Stats | undefined;
      try {
        st = fs.statSync(dir);
      } catch (e) {
        throw new Error(`--unix ${spec.path}: ${dirProblem(dir, e)}`);
      }
      if (!st.isDirectory()) throw new Error(`--unix ${spec.path}: ${dir} is not a directory`);
    }
    return new UnixConnectPort(spec.path, ctx);
  },
};
