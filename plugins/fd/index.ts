/**
 * `--fd N` (the caller's descriptor N, e.g. a socketpair end shared with QEMU, passed to the
 * daemon with SCM_RIGHTS and claimed by token: see pass.ts and inbox.ts) and `--fifo RX:TX`
 * (two FIFOs, for pipes), both with QEMU's stream framing. FIFOs are opened O_RDWR so that
 * open() does not block and the port survives the writer going away; a passed descriptor
 * cannot come back after a restart.
 */
import fs from 'node:fs';
import net from 'node:net';
import { StreamPort, duplexEnds, type StreamEnds } from '../common/stream-port.js';
import type { PortContext, PortDriver, PortSpec } from '../types.js';
import { maxFrameFor } from '../types.js';
// FIFOs: never through a symlink, only FIFOs, O_RDWR|O_NONBLOCK (see there).
import { openFifo } from '../common/socket-path.js';

type Spec = Extract<PortSpec, { kind: 'fd' }>;

class FdPort extends StreamPort {
  constructor(name: string, ends: StreamEnds, ctx: PortContext) {
    super('fd', name, maxFrameFor(ctx.mtu), ctx.log, `${name} closed`);
    this.attach(ends);
  }

  protected onDisconnect(why: string): void {
    // An fd, once closed, cannot be reopened by us; a FIFO could, but its writer keeps it open.
    this.waitingDetail = `${this.name} closed (${why}); detach and attach again`;
  }

  protected async shutdown(): Promise<void> {}
}

export const fdDriver: PortDriver<Spec> = {
  kind: 'fd',
  async open(spec, ctx) {
    if (spec.token !== undefined) {
      if (ctx.restoring) throw new Error('a passed descriptor does not survive a daemon restart; detach and attach again with --fd');
      if (ctx.takeFd === undefined) throw new Error('this daemon takes no passed descriptors');
      const fd = ctx.takeFd(spec.token);
      let sock: net.Socket;
      try {
        sock = new net.Socket({ fd, readable: true, writable: true });
      } catch (e) {
        fs.closeSync(fd);
        throw e;
      }
      return new FdPort(`fd:${spec.token.slice(0, 8)}`, duplexEnds(sock), ctx);
    }
    if (spec.rx === undefined || spec.tx === undefined) throw new Error('fd port needs a passed descriptor or an rx and tx FIFO');
    const rxFd = openFifo(spec.rx);
    let txFd: number;
    try {
      txFd = openFifo(spec.tx);
    } catch (e) {
      fs.closeSync(rxFd);
      throw e;
    }
    const rx = new net.Socket({ fd: rxFd, readable: true, writable: false });
    const tx = new net.Socket({ fd: txFd, readable: false, writable: true });
    const ends: StreamEnds = {
      readable: rx,
      writable: tx,
      destroy: () => {
        rx.destroy();
        tx.destroy();
      },
    };
    return new FdPort(`fifo:${spec.rx}:${spec.tx}`, ends, ctx);
  },
};
