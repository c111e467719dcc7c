/**
 * A port that records what the switch sends it, with a virtio-net header (vnetHdrLen 10: a
 * vhost-user or --vnet-hdr VM) or without (0); the test injects through `handler`. For switch
 * tests of offload frames, where MemPort (no header) does not do.
 */
import type { FrameHandler, Port, PortStats, PortStatus } from '../../plugins/types.js';

export class VPort implements Port {
  readonly kind = 'tap' as const;
  readonly layer = 2 as const;
  readonly maxFrame = 65550;
  sent: Buffer[] = [];
  offloadsOk?: () => boolean;
  handler: FrameHandler = () => {};
  constructor(
    readonly name: string,
    readonly vnetHdrLen: number,
  ) {}
  onFrames(h: FrameHandler): void {
    this.handler = h;
  }
  send(frames: readonly Buffer[]): void {
    for (const f of frames) this.sent.push(f);
  }
  stats(): PortStats {
    return { rxFrames: 0, rxBytes: 0, txFrames: 0, txBytes: 0, drops: {} };
  }
  status(): PortStatus {
    return { state: 'up', detail: '' };
  }
  async close(): Promise<void> {}
}
