/**
 * `npm run bench`: the benches one after another — switch (bench/run.ts), stack, lossy, tor,
 * links, vhost — each against its yardstick, each with its own defaults (5+ interleaved runs, medians
 * with min–max). Not scale (bench/scale.ts, `npm run bench:scale`): it is long and measures
 * something else (costs per VM and stream, not speed).
 *
 *   node dist/bench/all.js [--quick] [--only switch,stack,lossy,tor,links,vhost]
 *
 * --quick is passed to every bench (one run each; links has no --quick and gets --reps 1), so
 * `npm run bench -- --quick` is the short form of the whole chain. A bench that fails does not
 * stop the ones after it (its output says why); the exit code is non-zero if any failed. The end
 * prints each bench's exit code and duration, and the load average before and after.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = fileURLToPath(new URL('.', import.meta.url)); // dist/bench/

interface Bench {
  id: string;
  file: string;
  /** Arguments by default and with --quick. */
  args: string[];
  quick: string[];
}

const BENCHES: Bench[] = [
  { id: 'switch', file: 'run.js', args: [], quick: ['--quick'] },
  { id: 'stack', file: 'stack.js', args: [], quick: ['--quick'] },
  { id: 'lossy', file: 'lossy.js', args: [], quick: ['--quick'] },
  { id: 'tor', file: 'tor.js', args: [], quick: ['--quick'] },
  // links.ts defaults to 3 reps and has no --quick.
  { id: 'links', file: 'links.js', args: ['--reps', '5'], quick: ['--reps', '1'] },
  // A QEMU VM (tcg) on --unix and on --vhost-user: mvnet's CPU per gigabit in each mode.
  { id: 'vhost', file: 'vhost.js', args: [], quick: ['--quick'] },
];

function runOne(file: string, args: string[]): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [file, ...args], { stdio: 'inherit' });
    child.on('error', () => resolve(127));
    child.on('close', (code, sig) => resolve(code ?? (sig ? 128 : 1)));
  });
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  let quick = false;
  let only = BENCHES.map((b) => b.id);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--quick') quick = true;
    else if (a === '--only' && argv[i + 1] !== undefined) {
      only = argv[++i]!.split(',');
      const unknown = only.filter((id) => !BENCHES.some((b) => b.id === id));
      if (unknown.length > 0) throw new Error(`--only: unknown bench ${unknown.join(',')} (${BENCHES.map((b) => b.id).join(',')})`);
    } else throw new Error(`unknown argument ${a} (use --quick --only ${BENCHES.map((b) => b.id).join(',')})`);
  }
  const load0 = loadavg()[0]!;
  const t0 = Date.now();
  const results: { id: string; code: number; minutes: number }[] = [];
  for (const b of BENCHES.filter((x) => only.includes(x.id))) {
    const file = join(HERE, b.file);
    const started = Date.now();
    let code: number;
    if (!existsSync(file)) {
      console.log(`\n=== bench ${b.id}: ${file} is missing (npx tsc -p tsconfig.build.json)`);
      code = 127;
    } else {
      console.log(`\n=== bench ${b.id}${quick ? ' (--quick)' : ''} ===`);
      code = await runOne(file, quick ? b.quick : b.args);
    }
    results.push({ id: b.id, code, minutes: (Date.now() - started) / 60_000 });
  }
  const load1 = loadavg()[0]!;
  console.log(`\n=== npm run bench${quick ? ' -- --quick' : ''}: ${((Date.now() - t0) / 60_000).toFixed(1)} min, load average ${load0.toFixed(2)} → ${load1.toFixed(2)} ===`);
  for (const r of results) console.log(`${r.id.padEnd(7)} ${(r.code === 0 ? 'ok' : `exit ${r.code}`).padEnd(8)}  ${r.minutes.toFixed(1)} min`);
  if (results.some((r) => r.code !== 0)) process.exitCode = 1;
}

main().catch((e: unknown) => {
  console.error((e as Error).message);
  process.exitCode = 2;
});
