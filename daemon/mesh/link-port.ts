/**
 * A link peer as a switch port: a trunk between routers (`kind: 'link'`), or a remote VM's
 * device reached through `mvnet agent` (`kind: 'agent'`, layer 2 for a TAP or QEMU socket, 3 for
 * a TUN). The plaintext side is what the switch and captures see; the ciphertext goes out on
 * the peer's carrier.
 */
import type { FrameHandler, Port, PortStats, PortStatus } from '../../plugins/types.js';
import type { LinkPeer, PeerSink } from './engine.js';

export interface LinkPortOptions {
  kind: 'link' | 'agent';
  name: string;
  layer: 2 | 3;
  maxFrame: number;
  /** Said while there is no session: "waiting for the peer to connect to udp:51820". */
  waitingText: () => string;
  /** `remove`: false when the daemon stops (keep what a restart needs, e.g. an onion listener's key). */
  onClose: (remove: boolean) => Promise<void>;
}

export class LinkPort implements Port, PeerSink {
  readonly kind: 'link' | 'agent';
  readonly name: string;
  readonly layer: 2 | 3;
  readonly vnetHdrLen = 0;
  readonly maxFrame: number;
  private handler: FrameHandler = () => {};
  private readonly st: PortStats = { rxFrames: 0, rxBytes: 0, txFrames: 0, txBytes: 0, drops: {} };
  private closed = false;

  constructor(
    readonly peer: LinkPeer,
    private readonly o: LinkPortOptions,
  ) {
    this.kind = o.kind;
    this.name = o.name;
    this.layer = o.layer;
    this.maxFrame = o.maxFrame;
    peer.setSink(this);
  }

  onFrames(handler: FrameHandler): void {
    this.handler = handler;
  }

  /** From the peer: decrypted frames. Frames longer than this side accepts are dropped here. */
  frames(batch: readonly Buffer[]): void {
    if (this.closed) return;
    let ok = 0;
    for (let i = 0; i < batch.length; i++) {
      const f = batch[i]!;
      if (f.length > this.maxFrame) {
        this.count('oversize');
        continue;
      }
      this.st.rxBytes += f.length;
      ok++;
    }
    this.st.rxFrames += ok;
    this.handler(ok === batch.length ? batch : batch.filter((f) => f.length <= this.maxFrame));
  }

  send(frames: readonly Buffer[]): void {
    if (this.closed) return;
    let n = 0;
    let big = false;
    for (let i = 0; i < frames.length; i++) {
      const f = frames[i]!;
      if (f.length > this.maxFrame) big = true;
      else {
        this.st.txBytes += f.length;
        n++;
      }
    }
    this.st.txFrames += n;
    if (big) {
      this.count('oversize', frames.length - n);
      frames = frames.filter((f) => f.length <= this.maxFrame);
    }
    if (frames.length > 0) this.peer.send(frames);
  }

  private count(r: keyof PortStats['drops'], n = 1): void {
    this.st.drops[r] = (this.st.drops[r] ?? 0) + n;
  }

  stats(): PortStats {
    const unsent = this.peer.unsent;
    const drops = unsent > 0 ? { ...this.st.drops, 'no-peer': unsent } : { ...this.st.drops };
    return { ...this.st, drops };
  }

  status(): PortStatus {
    switch (this.peer.state()) {
      case 'established':
        return { state: 'up', detail: `encrypted link to ${this.peer.currentEndpoint()?.replace(' ', ' → ') ?? 'peer'}` };
      case 'handshaking':
        return { state: 'waiting', detail: `handshaking with ${this.peer.currentEndpoint()?.replace(' ', ' → ') ?? 'peer'}` };
      case 'waiting':
        return { state: 'waiting', detail: this.o.waitingText() };
    }
  }

  async close(opts?: { remove?: boolean }): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.handler = () => {};
    await this.o.onClose(opts?.remove !== false);
  }
}
