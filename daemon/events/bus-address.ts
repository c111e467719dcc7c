/**
 * Which D-Bus addresses desktop notices may use (`notify.dbus`, DBUS_SESSION_BUS_ADDRESS): a unix
 * socket only. dbus-next also accepts `unixexec:path=PROG` (it spawns PROG, here as root) and
 * `tcp:` (unauthenticated, reachable by others), and tries every `;`-separated entry in turn, so
 * anything but one `unix:path=` or `unix:abstract=` entry is refused. Imports nothing: the
 * config check uses it too.
 */

/**
 * One entry, no characters dbus-next's parser splits on or D-Bus escapes (`; , : = %`), nor space
 * or NUL, in the value; a `guid=` is allowed (dbus-daemon's own addresses carry one).
 */
const UNIX_ADDRESS = /^unix:(?:path=\/[^;,:=%\s\0]*|abstract=[^;,:=%\s\0]+)(?:,guid=[0-9a-fA-F]{32})?$/;

/** Null when `address` is one unix socket dbus-next connects to as written; else what is wrong. */
export function busAddressProblem(address: string): string | null {
  if (UNIX_ADDRESS.test(address)) return null;
  return `${JSON.stringify(address)} is not a unix socket address: only unix:path=/ABSOLUTE/PATH or unix:abstract=NAME (one address, optionally ,guid=…) are accepted`;
}
