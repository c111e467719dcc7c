/**
 * `--vhost-user PATH`: mvnet is the vhost-user back-end of a QEMU virtio-net device. mvnet
 * listens at PATH and QEMU connects as the client (`-chardev socket,id=c,path=PATH,reconnect=1
 * -netdev vhost-user,id=n,chardev=c`; the VM's memory must be shared: `-object
 * memory-backend-memfd,...,share=on -numa node,memdev=...`). With `reconnect=1` QEMU comes back
 * by itself after a daemon restart, which re-listens on the same path (restore).
 *
 * The socket is made by common/socket-path.ts as `--unix-listen`'s: never over a live socket or
 * through a symlink; only the file made here is removed at detach.
 */
import fs from 'node:fs';
import { native } from '../native/index.js';
import type { PortContext, PortDriver, PortSpec } from '../types.js';
import { maxFrameFor } from '../types.js';
import { createSocketAt, removeOwnSocket } from '../common/socket-path.js';
import { VhostPort } from './port.js';

type Spec = Extract<PortSpec, { kind: 'vhost-user' }>;

export { VhostPort };

export const vhostUserDriver: PortDriver<Spec> = {
  kind: 'vhost-user',
  async open(spec, ctx: PortContext) {
    if (typeof native.VhostDevice !== 'function') throw new Error('this build of the native addon has no vhost-user back-end (rebuild it: npx node-gyp rebuild)');
    const made = await createSocketAt(spec.path, ctx.socketGid, (tmp) => native.openUnixListener({ path: tmp }).fd, (fd) => fs.closeSync(fd));
    const log = ctx.log;
    const afterClose = (remove: boolean): void => {
      if (remove && !removeOwnSocket(made.path, made.id)) log.warn({ path: spec.path }, 'the socket at the path is no longer the one mvnet made; left in place');
    };
    try {
      return new VhostPort({ path: spec.path, listenFd: made.value, maxFrame: maxFrameFor(ctx.mtu), log, afterClose });
    } catch (e) {
      // The device did not take the socket: close it and remove the file made for it.
      try {
        fs.closeSync(made.value);
      } catch {
        // Already closed by the device's constructor.
      }
      removeOwnSocket(made.path, made.id);
      throw e;
    }
  },
};
