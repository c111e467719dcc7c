/**
 * The link protocol's handshake construction checked against WireGuard itself (Debian's
 * wireguard-go and wg). daemon/links/noise.ts, run with WireGuard's identifier instead of
 * mvnet's and with WireGuard's mac1 (keyed BLAKE2s-128, test/support/blake2s.ts, label
 * "mac1----"), completes a handshake with a wireguard-go interface in a namespace, and an ICMP
 * echo sealed by daemon/links/transport.ts is answered: the derivation, the AEADs, the TAI64N
 * timestamp and the counter nonces are WireGuard's. With mvnet's own identifier the same
 * initiation is ignored: the two never complete a handshake by accident.
 */
import { createSocket, type Socket } from 'node:dgram';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { generateKeyPair, keyToBase64, rawPrivateKey, x25519 } from '../../daemon/links/keys.js';
import { consumeResponse, createInitiation, MVNET_START, protocolStart, tai64n, type ProtocolStart } from '../../daemon/links/noise.js';
import { decodeResponse, decodeTransport, INITIATION_MAC1 } from '../../daemon/links/messages.js';
import { Keypair } from '../../daemon/links/transport.js';
import { aeadOpen } from '../../daemon/links/primitives.js';
import { blake2s } from '../support/blake2s.js';
import { addVeth, cleanupAll, createNetns, makeTempDir, randomSuffix, run, waitFor } from '../support/netns.js';

afterAll(cleanupAll);

const WG_IDENTIFIER = 'WireGuard v1 zx2c4 Jason@zx2c4.com';

function checksum(b: Buffer): number {
  let s = 0;
  for (let i = 0; i + 1 < b.length; i += 2) s += b.readUInt16BE(i);
  if (b.length % 2 === 1) s += b[b.length - 1]! << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** An IPv4 ICMP echo request from `src` to `dst` with `data`. */
function echoRequest(src: number[], dst: number[], data: Buffer): Buffer {
  const icmp = Buffer.concat([Buffer.from([8, 0, 0, 0, 0x12, 0x34, 0, 1]), data]);
  icmp.writeUInt16BE(checksum(icmp), 2);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + icmp.length, 2);
  ip[8] = 64;
  ip[9] = 1;
  Buffer.from(src).copy(ip, 12);
  Buffer.from(dst).copy(ip, 16);
  ip.writeUInt16BE(checksum(ip), 10);
  return Buffer.concat([ip, icmp]);
}

function nextMessage(sock: Socket, timeoutMs: number): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      sock.removeListener('message', on);
      resolve(null);
    }, timeoutMs);
    const on = (m: Buffer): void => {
      clearTimeout(t);
      resolve(m);
    };
    sock.once('message', on);
  });
}

describe('links: the construction is WireGuard\'s (wireguard-go)', () => {
  it('completes a handshake and exchanges a ping with wireguard-go; mvnet\'s identifier does not', async () => {
    for (const tool of ['wireguard-go', 'wg']) {
      const w = await run(['sh', '-c', `command -v ${tool}`], { check: false });
      expect(w.code, `${tool} is missing: scripts/deps.sh installs wireguard-go and wireguard-tools`).toBe(0);
    }
    const ns = await createNetns('lwg');
    const sfx = randomSuffix(4);
    const outer = `lwgr${sfx}`;
    const inner = `lwgn${sfx}`;
    const octet = 100 + Math.floor(Math.random() * 100);
    await addVeth({ name: outer }, { name: inner, netns: ns });
    await run(['ip', 'addr', 'add', `10.231.${octet}.1/30`, 'dev', outer]);
    await ns.exec(['ip', 'addr', 'add', `10.231.${octet}.2/30`, 'dev', inner]);
    const wgKeys = generateKeyPair();
    const ours = generateKeyPair();
    const dir = makeTempDir('lwg');
    const keyFile = join(dir, 'wg.key');
    writeFileSync(keyFile, `${keyToBase64(rawPrivateKey(wgKeys.privateKey))}\n`, { mode: 0o600 });
    const wg = ns.spawn(['wireguard-go', '-f', 'wgt0'], { env: { ...process.env, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1', LOG_LEVEL: 'error' } });
    await ns.waitForLink('wgt0');
    await waitFor(async () => (await ns.exec(['wg', 'show', 'wgt0'], { check: false })).code === 0 || undefined, { what: 'wireguard-go UAPI socket' });
    await ns.exec(['wg', 'set', 'wgt0', 'private-key', keyFile, 'listen-port', '51820', 'peer', keyToBase64(ours.publicKey), 'allowed-ips', '10.96.0.2/32']);
    await ns.addAddr('wgt0', '10.96.0.1/24');

    const sock = createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, `10.231.${octet}.1`, r));
    const send = (b: Buffer): Promise<void> => new Promise((r, j) => sock.send(b, 51820, `10.231.${octet}.2`, (e) => (e ? j(e) : r())));
    const ss = x25519(ours.privateKey, wgKeys.publicKey)!;
    const mac1Key = blake2s(Buffer.concat([Buffer.from('mac1----'), wgKeys.publicKey]));
    let sender = 0x0a0b0c00;
    const initiate = (start: ProtocolStart, wallMs: number) => {
      const made = createInitiation({ localPublic: ours.publicKey, remoteStatic: wgKeys.publicKey, ss, ephemeral: generateKeyPair(), timestamp: tai64n(wallMs), sender: ++sender, dh: x25519, start })!;
      blake2s(made.message.subarray(0, INITIATION_MAC1), 16, mac1Key).copy(made.message, INITIATION_MAC1);
      return made;
    };
    try {
      // mvnet's own identifier: WireGuard cannot open the static key, and says nothing.
      await send(initiate(MVNET_START, Date.now()).message);
      expect(await nextMessage(sock, 1500)).toBe(null);

      const made = initiate(protocolStart(WG_IDENTIFIER), Date.now() + 1000);
      await send(made.message);
      const respBytes = await nextMessage(sock, 5000);
      expect(respBytes, 'no response from wireguard-go').not.toBe(null);
      const resp = decodeResponse(respBytes!);
      expect(resp.ok).toBe(true);
      if (!resp.ok) return;
      expect(resp.value.receiver).toBe(sender);
      const done = consumeResponse({ state: made.state, localPrivate: ours.privateKey, msg: resp.value, psk: null, dh: x25519 });
      expect(done.ok, 'the response does not open: the derivation differs from WireGuard\'s').toBe(true);
      if (!done.ok) return;
      const session = new Keypair(done.keys, sender, resp.value.sender, true, 0);
      const marker = Buffer.from(`mvnet-wg-${createHash('sha256').update(String(Math.random())).digest('hex').slice(0, 8)}`);
      // WireGuard reads the IP packet's length and ignores what follows (here our padding and trailer).
      await send(session.seal(echoRequest([10, 96, 0, 2], [10, 96, 0, 1], marker)));
      let reply: Buffer | null = null;
      for (let i = 0; i < 5 && reply === null; i++) {
        const m = await nextMessage(sock, 3000);
        if (m === null) break;
        const t = decodeTransport(m);
        if (!t.ok) continue;
        const plain = aeadOpen(done.keys.recv, t.value.counter, t.value.sealed, Buffer.alloc(0));
        expect(plain, 'a transport message from wireguard-go does not open').not.toBe(null);
        if (plain !== null && plain.length > 0) reply = plain;
      }
      expect(reply, 'no echo reply').not.toBe(null);
      expect(reply![9]).toBe(1); // ICMP
      expect(reply![20]).toBe(0); // echo reply
      expect(reply!.includes(marker)).toBe(true);
    } finally {
      sock.close();
      await wg.stop();
    }
  }, 60_000);
});
