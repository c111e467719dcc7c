/** The daemon's readable log line (daemon/log.ts prettyLine) and the format choice. */
import { describe, expect, it } from 'vitest';
import { logFormat, prettyLine } from '../../daemon/log.js';

describe('prettyLine', () => {
  it('time, level, message and the fields as key=value; pid and date left out', () => {
    const line = JSON.stringify({ level: 40, time: '2026-12-06T09:33:26.222Z', pid: 7, msg: 'config not reloaded', signal: 'SIGHUP', keys: ['a', 'b'], note: 'two words' });
    expect(prettyLine(line, false)).toBe('09:33:26.222 WARN  config not reloaded  signal=SIGHUP keys=["a","b"] note="two words"\n');
  });

  it('colours the level only when asked, and puts an error stack below', () => {
    const line = JSON.stringify({ level: 50, time: '2026-12-06T09:33:26.222Z', msg: 'boom', err: { message: 'bad', stack: 'Error: bad\n    at f (x.js:1:1)' } });
    expect(prettyLine(line, true)).toBe('09:33:26.222 \x1b[31mERROR\x1b[0m boom  err=bad\n    at f (x.js:1:1)\n');
  });

  it('passes a line that is not a JSON object through', () => {
    expect(prettyLine('plain\n', false)).toBe('plain\n');
    expect(prettyLine('[1]', false)).toBe('[1]');
  });
});

describe('logFormat', () => {
  it('the flag wins; without it a non-terminal gets JSON; anything else is refused', () => {
    expect(logFormat('pretty', -1)).toBe('pretty');
    expect(logFormat('json', -1)).toBe('json');
    expect(logFormat(undefined, -1)).toBe('json');
    expect(() => logFormat('xml')).toThrow("--log-format must be json or pretty, not 'xml'");
  });
});
