/**
 * Robustness, end to end: the daemon reports caught exceptions (bugs) in `status`, and the test
 * harness fails a test whose daemon logged at error level unless the test expected it.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startDaemon } from '../support/daemon.js';
import { cleanupAll, createNetns, makeTempDir } from '../support/netns.js';

afterAll(cleanupAll);

/** A state dir whose state file has a route the daemon must refuse, logging at error level. */
function stateWithBadRoute(): string {
  const dir = makeTempDir('rb');
  writeFileSync(join(dir, 'state.json'), JSON.stringify({ version: 1, networks: [], vms: [], routes: { v1: { kind: 'bogus' } } }));
  return dir;
}

describe('error-level log lines fail tests unless expected', () => {
  it('an error line the test did not expect is reported by the harness (which fails the test)', async () => {
    const d = await startDaemon({ stateDir: stateWithBadRoute() });
    const problems = d.unexpectedErrors();
    // What the afterEach hook would have thrown for: exactly that line, with its context.
    expect(problems).toHaveLength(1);
    expect(problems[0]).toContain('invalid route in the state file; using none');
    expect(problems[0]).toContain('"vm":"v1"');
    // Checked lines are not reported twice.
    expect(d.unexpectedErrors()).toEqual([]);
  });

  it('an expected error line (expectErrors) passes', async () => {
    const d = await startDaemon({ stateDir: stateWithBadRoute(), expectErrors: ['invalid route in the state file'] });
    expect(d.unexpectedErrors()).toEqual([]);
    // ...and it is still in the log for the test to look at.
    expect(d.logs.some((l) => l.level === 50 && l.msg === 'invalid route in the state file; using none')).toBe(true);
  });
});

describe('status counts caught exceptions', () => {
  it('daemon.errors is all zero on a daemon that routed traffic; device ports report theirs', async () => {
    const d = await startDaemon();
    const ns = await createNetns('rb');
    await d.cliOk(['net', 'create', 'R', '--subnet', '10.77.40.0/24']);
    await d.cliOk(['vm', 'attach', 'r1', '--net', 'R', '--tap', 'rbtap0', '--netns', ns.name]);
    await ns.exec(['ip', 'addr', 'add', '10.77.40.5/24', 'dev', 'rbtap0']);
    await ns.exec(['ip', 'link', 'set', 'rbtap0', 'up']);
    expect(await ns.ping('10.77.40.1', { count: 2 })).toBe(true);
    const s = await d.status();
    expect(s.daemon.errors).toEqual({ dataPath: 0, native: 0, uncaught: 0 });
    const r1 = s.vms.find((v) => v.name === 'r1')!;
    expect(r1.port.stats.rxFrames).toBeGreaterThan(0);
    expect(r1.port.stats.errors).toEqual({ native: 0, handler: 0 });
    // The text status says nothing of errors while there are none.
    expect(await d.cliOk(['status'])).not.toContain('caught exceptions');
  });
});
