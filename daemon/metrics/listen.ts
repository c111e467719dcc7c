/** `metrics.listen`: where the metrics endpoint may listen (checked when the config is loaded). */
import net from 'node:net';
import path from 'node:path';
import { UserError } from '../errors.js';

export type MetricsListen = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

function isLoopback(host: string): boolean {
  if (net.isIPv4(host)) return host.startsWith('127.');
  return net.isIPv6(host) && (host === '::1' || /^(0{1,4}:){7}0{0,3}1$/.test(host));
}

/** `metrics.listen`: unix:/PATH, 127.0.0.1:PORT (any 127.0.0.0/8 address), or [::1]:PORT. */
export function parseMetricsListen(text: string): MetricsListen {
  if (text.startsWith('unix:')) {
    const p = text.slice(5);
    if (!path.isAbsolute(p) || p.includes('\0')) throw new UserError(`${JSON.stringify(text)}: unix: needs an absolute path`);
    return { kind: 'unix', path: p };
  }
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(text) ?? /^([^:[\]]+):(\d{1,5})$/.exec(text);
  const port = m !== null ? Number(m[2]) : 0;
  if (m === null || port < 1 || port > 65535) throw new UserError(`${JSON.stringify(text)} is not unix:/PATH, 127.0.0.1:PORT or [::1]:PORT`);
  const host = m[1]!;
  if (!isLoopback(host)) throw new UserError(`${JSON.stringify(text)} is not a loopback address: metrics are served only on a unix socket, 127.0.0.0/8 or ::1`);
  return { kind: 'tcp', host, port };
}

export function describeListen(l: MetricsListen): string {
  return l.kind === 'unix' ? `unix:${l.path}` : l.host.includes(':') ? `[${l.host}]:${l.port}` : `${l.host}:${l.port}`;
}
