/**
 * `--fd N` (a stream fd the daemon inherited, e.g. a socketpair end from a hypervisor that
 * spawned it) and `--fifo RX:TX` (two FIFOs, for pipes), both with QEMU's stream framing.
 * FIFOs are opened O_RDWR so that open() does not block and the port survives the writer
 * going away; an inherited fd cannot come back after a restart.
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
    if (ctx.restoring && spec.fd !== undefined) {
      throw new Error(`inherited fd ${spec.fd} does not survive a daemon restart`);
    }
    if (spec.fd !== undefined) {
      try {
        fs.fstatSync(spec.fd);
      } catch {
        throw new Error(`fd ${spec.fd} is not open in the daemon`);
      }
      const sock = new net.Socket({ fd: spec.fd, readable: true, writable: true });
      return new FdPort(`fd:${spec.fd}`, duplexEnds(sock), ctx);
    }
    if (spec.rx === undefined || spec.tx === undefined) throw new Error('fd port needs an fd or an rx and tx FIFO');
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
