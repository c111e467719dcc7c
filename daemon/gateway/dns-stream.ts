/** DNS over TCP to the gateway, as an in-process stream the TCP endpoint can bridge to. */
import { Duplex } from 'node:stream';
import { DnsTcpSession, type DnsServer } from './dns.js';
import type { StreamUpstream } from '../endpoint/upstream.js';

export const LOCAL_TAG = 'local';

class DnsStream extends Duplex {
  private chain: Promise<void> = Promise.resolve();
  constructor(
    private readonly session: DnsTcpSession,
    private readonly clock: () => number,
  ) {
    super({ allowHalfOpen: true });
  }
  override _read(): void {}
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    // Answers go back in query order even when resolution takes different times.
    this.chain = this.chain.then(async () => {
      const out = await this.session.handleTcpBytes(chunk, this.clock());
      if (out.length > 0) this.push(out);
      if (this.session.closed) this.destroy(new Error('DNS framing overflow'));
    });
    cb();
  }
  override _final(cb: (e?: Error | null) => void): void {
    void this.chain.then(() => {
      this.push(null);
      cb();
    });
  }
}

export function localDnsTcp(server: DnsServer, vm: string, clock: () => number): StreamUpstream {
  return {
    tag: LOCAL_TAG,
    open: async () => new DnsStream(new DnsTcpSession(server, vm), clock),
  };
}
