/**
 * `mvnet link`, `vm attach --agent` and `mvnet agent` refuse what cannot work with one line and
 * change nothing; the daemon's link key is made once, mode 0600, and never printed or logged;
 * links survive a restart.
 */
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawRpc, runCli, startDaemon, type Daemon, refused } from '../support/daemon.js';
import { cleanupAll, makeTempDir } from '../support/netns.js';
import type { LinksInfo } from '../../daemon/control/api.js';
import { generateKeyPair, keyToBase64, rawPrivateKey } from '../../daemon/links/keys.js';

afterAll(cleanupAll);


const PEER = keyToBase64(generateKeyPair().publicKey);
const ONION_BAD = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.onion:51820';

describe('links: refusals, key, state', () => {
  let d: Daemon;
  let dir: string;

  beforeAll(async () => {
    d = await startDaemon();
    dir = makeTempDir('lkref');
    await d.cliOk(['net', 'create', 'lan', '--subnet', '10.77.50.0/24']);
    await d.cliOk(['net', 'create', 'jumbo', '--subnet', '10.77.51.0/24', '--mtu', '65520']);
  });

  const cases: Array<[string, string[], string | RegExp]> = [
    ['no endpoint nor listen', ['link', 'add', 'l1', '--net', 'lan', '--peer', PEER], 'give --endpoint, --onion or --unix'],
    ['two endpoints', ['link', 'add', 'l1', '--net', 'lan', '--peer', PEER, '--endpoint', '127.0.0.1:1', '--unix', '/x.sock'], 'at most one of'],
    ['a bad key', ['link', 'add', 'l1', '--net', 'lan', '--peer', 'abc', '--listen', 'udp:51901'], 'invalid peer key'],
    ['port 0', ['link', 'add', 'l1', '--net', 'lan', '--peer', PEER, '--endpoint', '127.0.0.1:0'], /port/],
    ['port 70000', ['link', 'add', 'l1', '--net', 'lan', '--peer', PEER, '--listen', 'udp:70000'], /port/],
    ['an onion with a bad checksum', ['link', 'add', 'l1', '--net', 'lan', '--peer', PEER, '--onion', ONION_BAD], /onion/],
    ['a relative unix listen path', ['link', 'add', 'l1', '--net', 'lan', '--peer', PEER, '--listen', 'unix:rel.sock'], /absolute/],
    ['no such network', ['link', 'add', 'l1', '--net', 'nope', '--peer', PEER, '--listen', 'udp:51901'], 'no network named nope'],
    ['a network whose frames do not fit a UDP datagram', ['link', 'add', 'l1', '--net', 'jumbo', '--peer', PEER, '--listen', 'udp:51901'], /MTU 65520.*UDP/],
    ['keepalive out of range', ['link', 'add', 'l1', '--net', 'lan', '--peer', PEER, '--listen', 'udp:51901', '--keepalive', '99999'], /keepalive/],
    ['removing a link that is not there', ['link', 'remove', 'ghost'], 'no link named ghost'],
    ['--agent without --listen', ['vm', 'attach', 'v1', '--net', 'lan', '--agent', PEER], '--agent needs --listen'],
    ['--listen without --agent', ['vm', 'attach', 'v1', '--net', 'lan', '--tap', 'x', '--listen', 'udp:1'], '--listen and --agent-tun go with --agent'],
    ['--agent with a bad key', ['vm', 'attach', 'v1', '--net', 'lan', '--agent', 'xyz', '--listen', 'udp:51902'], 'invalid agent key'],
  ];
  for (const [what, args, reason] of cases) {
    it(`refuses ${what}`, async () => {
      refused(await d.cli(args), reason);
    });
  }

  it('nothing was added by the refusals', async () => {
    const l = await d.cliJson<LinksInfo>(['link', 'list']);
    expect(l.links).toEqual([]);
    expect(l.listeners).toEqual([]);
    expect((await d.status()).vms).toEqual([]);
  });

  it('refuses its own key as a peer, and a peer key used twice', async () => {
    const own = await d.cliJson<{ publicKey: string }>(['link', 'key']);
    refused(await d.cli(['link', 'add', 'self', '--net', 'lan', '--peer', own.publicKey, '--listen', 'udp:51903']), "this daemon's own link key".replace("'", '’'));
    await d.cliOk(['link', 'add', 'l2', '--net', 'lan', '--peer', PEER, '--listen', 'udp:51903']);
    refused(await d.cli(['link', 'add', 'l3', '--net', 'lan', '--peer', PEER, '--listen', 'udp:51904']), 'already the peer of link l2');
    refused(await d.cli(['link', 'add', 'l2', '--net', 'lan', '--peer', keyToBase64(generateKeyPair().publicKey), '--listen', 'udp:51903']), 'link l2 already exists');
    refused(await d.cli(['net', 'delete', 'lan']), 'has links (l2)');
    // The daemon refuses the same over JSON-RPC.
    const r = await rawRpc(d.socket, 'link.add', { name: 'l9', net: 'lan', peer: PEER, listen: 'udp:1', bogus: 1 });
    expect(r.error?.message).toContain('unknown link field "bogus"');
  });

  it('the link key file is 0600, printed only as its public half, never logged', async () => {
    const key = join(d.stateDir, 'link.key');
    expect(statSync(key).mode & 0o777).toBe(0o600);
    const priv = readFileSync(key, 'utf8').trim();
    const pub = (await d.cliJson<{ publicKey: string }>(['link', 'key'])).publicKey;
    expect(pub).not.toBe(priv);
    const all = JSON.stringify(d.allLogs) + JSON.stringify(await d.cliJson(['link', 'list'])) + JSON.stringify(await d.status());
    expect(all).not.toContain(priv);
  });

  it('a link survives a restart with its listener, and is gone after link remove', async () => {
    await d.restart();
    const l = await d.cliJson<LinksInfo>(['link', 'list']);
    expect(l.links.map((x) => [x.name, x.net, x.peer, x.listen])).toEqual([['l2', 'lan', PEER, '/ip6/::/udp/51903']]);
    expect(l.listeners.map((x) => x.text)).toEqual(['udp:51903']);
    await d.cliOk(['link', 'remove', 'l2']);
    const after = await d.cliJson<LinksInfo>(['link', 'list']);
    expect(after.links).toEqual([]);
    expect(after.listeners).toEqual([]);
    await d.restart();
    expect((await d.cliJson<LinksInfo>(['link', 'list'])).links).toEqual([]);
  });

  it('mvnet agent refuses a key file others may read, and a bad router key, in one line', async () => {
    const k = join(dir, 'loose.key');
    writeFileSync(k, `${rawPrivateKey(generateKeyPair().privateKey).toString('base64')}\n`);
    chmodSync(k, 0o644);
    refused(await runCli(undefined, ['agent', '--router', '127.0.0.1:9', '--peer', PEER, '--tap', 'x', '--key', k]), /chmod 600/);
    chmodSync(k, 0o600);
    refused(await runCli(undefined, ['agent', '--router', '127.0.0.1:9', '--peer', 'nope', '--tap', 'x', '--key', k]), 'invalid --peer');
    refused(await runCli(undefined, ['agent', '--router', '127.0.0.1:0', '--peer', PEER, '--tap', 'x', '--key', k]), /port/);
    refused(await runCli(undefined, ['agent', '--router', '127.0.0.1:9', '--peer', PEER, '--key', k]), 'exactly one of --tap, --tun, --unix');
  });
});
