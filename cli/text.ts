/**
 * Text from the daemon shown to people: a VM port's detail, Tor's warnings and reasons, a link's
 * error. Some of it comes from outside (Tor's log lines, a peer, a plugin), and a terminal acts on
 * control characters: ESC and CSI/OSC sequences can retitle the window, rewrite what was printed,
 * or hide text. Human output shows every C0 and C1 control character (and DEL) as `\xNN`
 * instead; `--json` output is never changed.
 */

// Matching control characters is the point here.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f-\x9f]/g;
// eslint-disable-next-line no-control-regex
const CONTROL_BUT_NEWLINE = /[\x00-\x09\x0b-\x1f\x7f-\x9f]/g;

function hex(c: string): string {
  return `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`;
}

/** One field of free text, on one line: every control character, newlines too, as `\xNN`. */
export function safeText(s: string): string {
  return s.replace(CONTROL, hex);
}

/** Output of several lines we composed: control characters as `\xNN`, our own newlines kept. */
export function safeLines(s: string): string {
  return s.replace(CONTROL_BUT_NEWLINE, hex);
}
