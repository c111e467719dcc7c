/**
 * `--unix-listen PATH`: the daemon listens and QEMU connects (`server=off`). QEMU 7.2 never
 * reconnects as a client, so such a VM loses its network when the daemon restarts; the daemon
 * re-listens on the same path and a restarted QEMU gets it back.
 */
import net from 'node:net';
import fs from 'node:fs';
import { StreamPort, duplexEnds } from '../common/stream-port.js';
import type { PortContext, PortDriver, PortSpec } from '../types.js';
import { maxFrameFor } from '../types.js';
import { removeStaleSocket } from '../common/socket-path.js';

type Spec = Extract<PortSpec, { kind: 'unix-listen' }>;

class UnixListenPort extends StreamPort {
  constructor(
    private readonly path: string,
    private readonly server: net.Server,
    ctx: PortContext,
  ) {
    super('unix-listen', path, maxFrameFor(ctx.mtu), ctx.log, `waiting for the VM to connect to ${path}`);
    server.on('connection', (sock) => {
      if (this.closed) {
        sock.destroy();
        return;
      }
      // A new connection replaces the old one: the VM restarted.
      this.attach(duplexEnds(sock));
    });
  }

  protected onDisconnect(why: string): void {
    this.waitingDetail = `waiting for the VM to reconnect to ${this.path} (${why})`;
  }

  protected async shutdown(remove: boolean): Promise<void> {
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (remove) fs.rmSync(this.path, { force: true });
  }
}

export const unixListenDriver: PortDriver<Spec> = {
  kind: 'unix-listen',
  async open(spec, ctx) {
    removeStaleSocket(spec.path);
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ path: spec.path }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    fs.chmodSync(spec.path, 0o660);
    server.on('error', (e) => ctx.log.error({ err: e, path: spec.path }, 'listening socket failed'));
    return new UnixListenPort(spec.path, server, ctx);
  },
};
