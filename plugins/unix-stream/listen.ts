/**
 * `--unix-listen PATH`: the daemon listens and QEMU connects (`server=off`). QEMU 7.2 never
 * reconnects as a client, so such a VM loses its network when the daemon restarts; the daemon
 * re-listens on the same path and a restarted QEMU gets it back. The socket is made by
 * common/socket-path.ts: never over a live socket or through a symlink, and only the file made
 * here is removed at detach.
 */
import net from 'node:net';
import { native } from '../native/index.js';
import { StreamPort, duplexEnds } from '../common/stream-port.js';
import type { PortContext, PortDriver, PortSpec } from '../types.js';
import { maxFrameFor } from '../types.js';
import { createSocketAt, removeOwnSocket, type FileId } from '../common/socket-path.js';

type Spec = Extract<PortSpec, { kind: 'unix-listen' }>;

class UnixListenPort extends StreamPort {
  constructor(
    private readonly path: string,
    /** Where the socket was made (its directory's real path) and which file it is. */
    private readonly made: { path: string; id: FileId },
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
    if (remove && !removeOwnSocket(this.made.path, this.made.id)) {
      this.log.warn({ path: this.path }, 'the socket at the path is no longer the one mvnet made; left in place');
    }
  }
}

/**
 * Bound natively and adopted by fd: a server Node binds itself unlinks its path when closed,
 * and by then that path may name someone else's file.
 */
export function listenAdopted(path: string): Promise<net.Server> {
  const { fd } = native.openUnixListener({ path });
  const server = net.createServer();
  return new Promise<net.Server>((resolve, reject) => {
    // On an error Node has closed the handle it made for the fd (or never took it): not closed twice here.
    server.once('error', reject);
    server.listen({ fd }, () => {
      server.removeAllListeners('error');
      resolve(server);
    });
  });
}

export const unixListenDriver: PortDriver<Spec> = {
  kind: 'unix-listen',
  async open(spec, ctx) {
    const made = await createSocketAt(spec.path, ctx.socketGid, listenAdopted, (s) => s.close());
    const server = made.value;
    server.on('error', (e) => ctx.log.error({ err: e, path: spec.path }, 'listening socket failed'));
    return new UnixListenPort(spec.path, made, server, ctx);
  },
};
