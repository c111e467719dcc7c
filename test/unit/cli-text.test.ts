/**
 * Daemon text shown to people (cli/text.ts): control characters (C0, DEL, C1) from Tor's
 * output, a port's detail or a link's error never reach the terminal as such; they are shown as
 * `\xNN`. The places that print such text use it: event lines, tables, Tor's lines, print().
 * JSON output is unchanged.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { safeLines, safeText } from '../../cli/text.js';
import { humanLine } from '../../cli/commands/events.js';
import { print, table } from '../../cli/output.js';
import { torStatusLine } from '../../cli/commands/tor.js';
import type { MvnetEvent, TorSummary } from '../../daemon/control/api.js';

const ESC = '\x1b';
/** An OSC (retitle the window) and a CSI (clear the screen), as a hostile Tor log line might hold. */
const HOSTILE = `bad ${ESC}]0;owned\x07 ${ESC}[2J\u009b31m end\r\nforged line`;
const SHOWN = 'bad \\x1b]0;owned\\x07 \\x1b[2J\\x9b31m end\\x0d\\x0aforged line';

/** No C0 or C1 control character but, where allowed, the newline. */
function clean(s: string, newlines = false): boolean {
  for (const ch of s) {
    const c = ch.charCodeAt(0);
    if ((c < 0x20 && !(newlines && c === 0x0a)) || (c >= 0x7f && c <= 0x9f)) return false;
  }
  return true;
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('safeText / safeLines', () => {
  it('show every C0, DEL and C1 character as \\xNN, and leave other text (UTF-8 included) alone', () => {
    expect(safeText(HOSTILE)).toBe(SHOWN);
    expect(safeText('tab\there\x7f\x00')).toBe('tab\\x09here\\x7f\\x00');
    expect(safeText('VM café → ünïcode ✓')).toBe('VM café → ünïcode ✓');
    // Our own line breaks survive safeLines; everything else goes.
    expect(safeLines(`one ${ESC}[31m\ntwo\r`)).toBe('one \\x1b[31m\ntwo\\x0d');
  });
});

describe('where the CLI prints the daemon\'s text', () => {
  it("an event's human line (tor.down's reason, tor.warning) is one clean line", () => {
    const events: MvnetEvent[] = [
      { type: 'tor.down', reason: HOSTILE, time: '2026-12-06T10:00:00.123Z', seq: 1 },
      { type: 'tor.warning', message: HOSTILE, time: '2026-12-06T10:00:00.123Z', seq: 2 },
      { type: 'vm.down', vm: 'v1', state: 'down', detail: HOSTILE, time: '2026-12-06T10:00:00.123Z', seq: 3 } as MvnetEvent,
    ];
    for (const e of events) {
      const line = humanLine(e);
      expect(clean(line)).toBe(true);
      expect(line).toContain(SHOWN);
    }
  });

  it('table cells (vm list details, link endpoints) are one clean line each', () => {
    const t = table(['VM', 'DETAIL'], [['v1', HOSTILE]]);
    expect(t.split('\n')).toHaveLength(2);
    expect(clean(t, true)).toBe(true);
    expect(t).toContain(SHOWN);
  });

  it("Tor's status line (mvnet status) quotes Tor's reason cleanly", () => {
    const s = { mode: 'embedded', phase: 'down', progress: 0, summary: `stopped${ESC}[8m`, warnings: [HOSTILE], restarts: 0, version: null, lastError: null, bootstrapProblem: null, pid: null, privileges: null } as unknown as TorSummary;
    const line = torStatusLine(s);
    expect(clean(line)).toBe(true);
    expect(line).toContain(SHOWN);
  });

  it('print(): the human text is made clean, the JSON is exact', () => {
    const out: string[] = [];
    vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      out.push(String(chunk));
      return true;
    });
    const data = { detail: HOSTILE };
    print(false, data, () => `detail: ${data.detail}`);
    print(true, data, () => 'unused');
    expect(clean(out[0]!, true)).toBe(true);
    expect(out[0]).toBe('detail: bad \\x1b]0;owned\\x07 \\x1b[2J\\x9b31m end\\x0d\nforged line\n');
    expect(JSON.parse(out[1]!)).toEqual(data);
  });
});
