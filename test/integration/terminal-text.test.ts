/**
 * The daemon's text reaches people without control characters (cli/text.ts): a VM socket path
 * holding an OSC sequence (retitle the terminal) and a CSI one, as any text from outside might,
 * is shown as `\xNN` by `vm list`, `status` and `events`, while `--json` carries it exactly.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI_JS, startDaemon } from '../support/daemon.js';
import { cleanupAll, makeTempDir, spawnProcess } from '../support/netns.js';

afterAll(cleanupAll);

const ESC = '\x1b';

/** Any C0 (but the newline) or C1 control character. */
function controls(s: string): string[] {
  return [...s].filter((ch) => {
    const c = ch.charCodeAt(0);
    return (c < 0x20 && c !== 0x0a) || (c >= 0x7f && c <= 0x9f);
  });
}

describe('daemon text on a terminal', () => {
  it('vm list, status and events show control characters as \\xNN; --json keeps them', async () => {
    const d = await startDaemon();
    const dir = join(makeTempDir('tt'), `x${ESC}]0;owned\x07${ESC}[2J`);
    mkdirSync(dir);
    const sock = join(dir, 'vm.sock');
    await d.cliOk(['net', 'create', 'T', '--subnet', '10.77.93.0/24']);
    await d.cliOk(['vm', 'attach', 'tt1', '--net', 'T', '--unix-listen', sock]);
    const shown = 'x\\x1b]0;owned\\x07\\x1b[2J';
    for (const args of [['vm', 'list'], ['status'], ['events', '--backlog', '10', '--type', 'vm.attached']]) {
      const r = args[0] === 'events' ? await eventsOnce(d.socket) : await d.cli(args);
      expect(r.code, r.stderr).toBe(0);
      expect(controls(r.stdout), args.join(' ')).toEqual([]);
      expect(r.stdout, args.join(' ')).toContain(shown);
    }
    const list = await d.cliJson<{ port: { path?: string } }[]>(['vm', 'list']);
    expect(JSON.stringify(list)).toContain(JSON.stringify(sock).slice(1, -1));
    await d.stop();
  });
});

/** `mvnet events --backlog` until the attach event is out, then SIGINT. */
async function eventsOnce(socket: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = spawnProcess(['node', CLI_JS, '--socket', socket, 'events', '--backlog', '10', '--type', 'vm.attached'], { label: 'mvnet events' });
  await p.waitForLine((l) => l.includes('vm.attached'), { timeoutMs: 10_000 });
  p.signal('SIGINT');
  const exit = await p.exited;
  return { code: exit.code, stdout: p.lines.join('\n'), stderr: p.stderr };
}
