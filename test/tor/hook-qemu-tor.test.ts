/**
 * A real VM on the all-tor route, wired by `mvnet hook ADD` (the daemon has a `tor` section: the
 * private Tor network's client settings), fetches the private network's onion service by name
 * from inside: busybox `nslookup` asks the gateway (Tor resolves `.onion` to an automap
 * address), `wget` connects to that address and mvnet opens the stream to the onion through Tor.
 * `mvnet hook DEL` leaves nothing behind.
 */
import { readdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_JS } from '../support/daemon.js';
import { cleanupAll, makeTempDir, run } from '../support/netns.js';
import { bootVm, buildInitramfs, commandOutput, vmAssets, vmLines, type VmAssets } from '../support/qemu-vm.js';
import { privateTor } from './context.js';
import { TorRouter } from './mvnet-harness.js';
import { ONION_HELLO } from './private-network.js';
import type { RouteInfo, StatusInfo, VmInfo } from '../../daemon/control/api.js';

const tor = privateTor();
const GATEWAY = '10.237.0.1';
const BOOT_MS = 240_000;

afterAll(cleanupAll);

describe('a QEMU VM on the all-tor route, wired by mvnet hook', () => {
  let r: TorRouter;
  let assets: VmAssets;

  beforeAll(async () => {
    assets = vmAssets();
    r = await TorRouter.create({ prefix: 'thq', mode: 'embedded' });
    await r.cli(['net', 'create', 'lan', '--subnet', '10.237.0.0/24']);
    await r.waitTorReady(90_000);
  }, 150_000);

  it('fetches the onion service by name from inside the VM; DEL leaves nothing', { timeout: BOOT_MS + 30_000 }, async () => {
    const hook = async (cmd: string, cfg: Record<string, unknown>): Promise<Record<string, unknown>> => {
      const res = await run(['node', CLI_JS, '--socket', r.daemon.socket, 'hook', cmd], { input: JSON.stringify(cfg), check: false });
      expect(res.code, res.stdout).toBe(0);
      return JSON.parse(res.stdout) as Record<string, unknown>;
    };
    const add = await hook('ADD', { vm: 'qvm-tor', network: 'lan', route: 'all-tor' });
    expect(add.route).toEqual({ kind: 'tor' });
    const onion = tor.onion.hostname;
    const dir = makeTempDir('thq-vm');
    // The first onion circuit can take a while on the private network: a few tries inside the VM.
    const fetch = [
      `for i in 1 2 3 4 5 6; do`,
      `  a=$(nslookup ${onion} ${GATEWAY} 2>/dev/null | awk '/^Address/ && !/#|:53$/ {a=$NF} END {print a}')`,
      `  echo "resolved $a"`,
      `  if [ -n "$a" ] && timeout 30 wget -q -O - "http://$a/"; then exit 0; fi`,
      `done; exit 1`,
    ].join('\n');
    const initrd = buildInitramfs(dir, assets, [
      { name: 'ping', sh: `ping -c 1 -W 10 ${GATEWAY}` },
      { name: 'onion', sh: fetch },
    ]);
    const qemu = bootVm(assets, initrd, add.qemuArgs as string[], 'qemu all-tor');
    await qemu.waitForLine((l) => l.startsWith('MVT-DONE'), { timeoutMs: BOOT_MS });
    expect((await qemu.exited).code).toBe(0);
    const lines = vmLines(qemu);
    expect(lines.find((l) => l.startsWith('MVT-LEASE ')), lines.join('\n')).toContain(`router=${GATEWAY}`);
    expect(commandOutput(qemu, 'ping')?.rc).toBe(0);
    const got = commandOutput(qemu, 'onion');
    expect(got?.rc, lines.join('\n')).toBe(0);
    expect(got?.out).toMatch(/^resolved 10\.(19[2-9]|2[0-5]\d)\.\d+\.\d+$/m);
    expect(got?.out).toContain(ONION_HELLO);

    expect(await hook('DEL', { vm: 'qvm-tor' })).toMatchObject({ detached: true, routeCleared: true });
    const vmDir = (JSON.parse(await r.cli(['--json', 'status'])) as StatusInfo).daemon.vmSocketDir;
    expect(JSON.parse(await r.cli(['--json', 'vm', 'list'])) as VmInfo[]).toEqual([]);
    expect(JSON.parse(await r.cli(['--json', 'route', 'show'])) as RouteInfo[]).toEqual([]);
    expect(readdirSync(vmDir).filter((f) => f.startsWith('qvm-tor'))).toEqual([]);
  });
});
