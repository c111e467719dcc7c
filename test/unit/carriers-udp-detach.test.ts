// The addon's UdpSocket (plugins/native/src/udp.cc) when JS detaches (transfers) the ArrayBuffers
// it writes into: the arena, lengths and source indices on receive, txInfo on send. After a
// transfer the memory belongs to the receiver of the transfer (freed with it), so the socket
// must stop writing there: it fails (onError) instead of reading into it. Loopback only.
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { loadNative, type NativeUdpSocket } from '../../plugins/native/index.js';

function detach(ab: ArrayBufferLike): void {
  structuredClone(ab, { transfer: [ab as ArrayBuffer] });
}

function pair(onRead: (n: number) => void, onError: (m: string) => void): { a: NativeUdpSocket; b: NativeUdpSocket } {
  const { UdpSocket } = loadNative();
  const a = new UdpSocket({ host: '127.0.0.1', port: 0, onRead, onError });
  const b = new UdpSocket({ host: '127.0.0.1', port: 0, onRead: () => {}, onError: () => {} });
  return { a, b };
}

describe('native UdpSocket, detached buffers', () => {
  for (const which of ['buffer', 'lengths', 'sourceIndex'] as const) {
    it(`stops receiving, with an error, when its ${which} ArrayBuffer is detached`, async () => {
      let reads = 0;
      const errors: string[] = [];
      const { a, b } = pair(
        () => reads++,
        (m) => errors.push(m),
      );
      try {
        detach(a[which].buffer);
        a.start();
        const t = b.target('127.0.0.1', a.port);
        expect(t).not.toBeNull();
        b.send(t!, [Buffer.alloc(1000, 7), Buffer.alloc(10, 1)]);
        for (let i = 0; i < 50 && reads === 0 && errors.length === 0; i++) await sleep(10);
        expect(reads).toBe(0);
        expect(errors.length).toBe(1);
        expect(errors[0]).toMatch(/detached/);
      } finally {
        a.close();
        b.close();
      }
    });
  }

  it('send() does not write into a detached txInfo', () => {
    const { a, b } = pair(
      () => {},
      () => {},
    );
    try {
      const t = b.target('127.0.0.1', a.port)!;
      const old = b.txInfo;
      detach(old.buffer);
      expect(old.length).toBe(0);
      expect(() => b.send(t, [Buffer.alloc(10)])).not.toThrow();
      // The send still happened; there is just nowhere to report it.
      expect(b.txInfo.length).toBe(0);
    } finally {
      a.close();
      b.close();
    }
  });
});
