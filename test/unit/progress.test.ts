/** cli/progress.ts: a bar redrawn in place on a terminal, plain lines elsewhere, silence under --json. */
import { describe, expect, it } from 'vitest';
import { commandProgress, Progress, progressBar, type ProgressStream } from '../../cli/progress.js';

function fake(isTTY: boolean, columns = 80): ProgressStream & { out: string } {
  const s = { isTTY, columns, out: '', write: (t: string): boolean => ((s.out += t), true) };
  return s;
}

describe('Progress', () => {
  it('on a terminal: one line redrawn with \\r and erased to its end, a bar for the fraction, cleared at the end', () => {
    const s = fake(true);
    const p = new Progress(s);
    p.update('Tor bootstrapping 5% (conn)', 0.05);
    p.update('Tor bootstrapping 5% (conn)', 0.05);
    p.update('Tor bootstrapping 50% (loading)', 0.5);
    p.done('done');
    expect(s.out).not.toContain('\n' + '[');
    const frames = s.out.split('\r').filter((x) => x.length > 0);
    expect(frames).toEqual([
      `${progressBar(0.05)} Tor bootstrapping 5% (conn)\x1b[K`,
      `${progressBar(0.5)} Tor bootstrapping 50% (loading)\x1b[K`,
      '\x1b[Kdone\n',
    ]);
    expect(progressBar(0.5)).toBe(`[${'#'.repeat(12)}${'-'.repeat(12)}]  50%`);
  });

  it('on a terminal: a line longer than the terminal is cut (a wrapped line could not be redrawn)', () => {
    const s = fake(true, 20);
    new Progress(s).update('x'.repeat(50));
    expect(s.out).toBe(`\r${'x'.repeat(18)}…\x1b[K`);
  });

  it('elsewhere: plain lines, one per change, no control characters', () => {
    const s = fake(false);
    const p = new Progress(s);
    p.update('Tor starting 0%', 0);
    p.update('Tor starting 0%', 0);
    p.update('Tor bootstrapping 45% (loading)', 0.45);
    p.done('ready');
    expect(s.out).toBe('0% Tor starting 0%\n45% Tor bootstrapping 45% (loading)\nready\n');
    expect(s.out).not.toContain('\r');
    expect(s.out).not.toContain('\x1b');
  });

  it('under --json: nothing on stdout; the bar goes to stderr only when it is a terminal', () => {
    const out = fake(true);
    const errPipe = fake(false);
    const p = commandProgress(true, { stdout: out, stderr: errPipe });
    p.update('waiting', 0.3);
    p.done();
    expect(out.out + errPipe.out).toBe('');
    const errTty = fake(true);
    commandProgress(true, { stdout: out, stderr: errTty }).update('waiting', 0.3);
    expect(out.out).toBe('');
    expect(errTty.out).toContain('waiting');
    const plain = fake(false);
    commandProgress(false, { stdout: plain, stderr: errTty }).update('waiting');
    expect(plain.out).toBe('waiting\n');
  });
});
