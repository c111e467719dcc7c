/**
 * `mvnet agent`: the small mode of the same program that runs where a VM's device is (inside a
 * VM, on another host) and carries that device, encrypted, to a router, where it is an ordinary
 * VM port (`vm attach --agent`). One key, one peer, one local device: no switch, no state.
 */
import pino from 'pino';
import { Registry } from '../plugins/registry.js';
import { builtinDrivers } from '../plugins/builtin.js';
import type { Port, PortSpec } from '../plugins/types.js';
import { keyFromBase64, keyToBase64, keyPairFromPrivate, readPrivateKeyFile } from './links/keys.js';
import { LinkEngine } from './mesh/engine.js';
import { MAX_PAYLOAD } from './links/transport.js';
import { parseEndpoint, endpointText, type Endpoint } from './carriers/endpoint.js';
import { openUdp } from './carriers/udp.js';
import { dialStream } from './carriers/stream.js';
import { connectTcp, connectUnix, connectSocks } from './carriers/connect.js';
import type { Carrier } from './carriers/types.js';
import type { SocksEndpoint } from './tor/socks-endpoint.js';
import { UserError } from './errors.js';

export interface AgentOptions {
  /** The router's link endpoint (HOST:PORT, tcp:..., unix:..., ADDR.onion:PORT, multiaddr). */
  router: string;
  /** The router's link public key (its `mvnet link key`). */
  peer: string;
  tap?: string;
  tun?: string;
  /** A unix socket the agent listens on for QEMU (`-netdev stream,server=off`). */
  unix?: string;
  /** This agent's private key file (mode 0600; `mvnet key generate`). */
  key: string;
  /** The router network's MTU (default 1500). */
  mtu?: number;
  /** Tor's SOCKS port for an onion router (default 127.0.0.1:9050): HOST:PORT or a unix path. */
  socks?: string;
  keepaliveS?: number;
  logLevel?: string;
}

const DIAL_TIMEOUT_MS = 10_000;

function socksEndpoint(text: string | undefined): SocksEndpoint {
  if (text === undefined) return { host: '127.0.0.1', port: 9050 };
  if (text.startsWith('/')) return { path: text };
  const m = /^(.*):(\d+)$/.exec(text);
  if (m === null || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new UserError(`invalid --socks ${JSON.stringify(text)}: HOST:PORT or an absolute unix socket path`);
  return { host: m[1]!.replace(/^\[(.*)\]$/, '$1'), port: Number(m[2]) };
}

async function dial(ep: Endpoint, engine: LinkEngine, socks: SocksEndpoint): Promise<{ carrier: Carrier; to: string }> {
  let c: Carrier;
  switch (ep.kind) {
    case 'udp':
      c = await openUdp({ id: 'udp', host: '', port: 0, log: engine.log });
      break;
    case 'tcp':
      c = dialStream({ id: 'tcp', kind: 'tcp', connect: () => connectTcp(ep.host, ep.port, DIAL_TIMEOUT_MS), describe: endpointText(ep), log: engine.log });
      break;
    case 'unix':
      c = dialStream({ id: 'unix', kind: 'unix', connect: () => connectUnix(ep.path, DIAL_TIMEOUT_MS), describe: endpointText(ep), log: engine.log });
      break;
    case 'onion':
      c = dialStream({
        id: 'onion',
        kind: 'onion',
        connect: () => connectSocks(socks, `${ep.address}.onion`, ep.port, { username: 'mvnet-agent', password: 'router' }, 120_000),
        describe: endpointText(ep),
        log: engine.log,
      });
      break;
  }
  engine.addCarrier(c);
  return { carrier: c, to: await c.resolve(ep) };
}

/** Runs until SIGINT or SIGTERM. Throws UserError for bad options (one line for the CLI). */
export async function runAgent(o: AgentOptions): Promise<void> {
  const devices = [o.tap, o.tun, o.unix].filter((v) => v !== undefined);
  if (devices.length !== 1) throw new UserError('give exactly one of --tap, --tun, --unix');
  const peerKey = keyFromBase64(o.peer);
  if (peerKey === null) throw new UserError(`invalid --peer ${JSON.stringify(o.peer)}: the router's link public key (base64, 44 characters; \`mvnet link key\` on the router)`);
  let priv;
  try {
    priv = readPrivateKeyFile(o.key);
  } catch (e) {
    throw new UserError(`--key ${o.key}: ${(e as Error).message}`);
  }
  const ep = parseEndpoint(o.router);
  const mtu = o.mtu ?? 1500;
  const socks = socksEndpoint(o.socks);
  const log = pino({ level: o.logLevel ?? 'info', base: { pid: process.pid, agent: keyToBase64(keyPairFromPrivate(priv).publicKey) }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination(2));

  const spec: PortSpec = o.tap !== undefined ? { kind: 'tap', ifname: o.tap } : o.tun !== undefined ? { kind: 'tun', ifname: o.tun } : { kind: 'unix-listen', path: o.unix! };
  const registry = new Registry(builtinDrivers);
  let port: Port;
  try {
    port = await registry.openPort(spec, { log, mtu, restoring: false });
  } catch (e) {
    throw new UserError(`cannot open ${spec.kind} ${o.tap ?? o.tun ?? o.unix}: ${(e as Error).message}`);
  }
  const engine = new LinkEngine({ privateKey: priv, log });
  let d: { carrier: Carrier; to: string };
  try {
    d = await dial(ep, engine, socks);
  } catch (e) {
    await port.close({ remove: true });
    await engine.close();
    throw new UserError(`cannot reach ${endpointText(ep)}: ${(e as Error).message}`);
  }
  const maxFrame = Math.min(port.maxFrame, MAX_PAYLOAD);
  const lp = engine.addPeer(
    { name: 'router', publicKey: peerKey, endpoint: { carrier: d.carrier, to: d.to, text: ep }, persistentKeepaliveMs: (o.keepaliveS ?? 25) * 1000 },
    { frames: (batch) => port.send(batch) },
  );
  port.onFrames((frames) => {
    if (frames.every((f) => f.length <= maxFrame)) lp.send(frames);
    else lp.send(frames.filter((f) => f.length <= maxFrame));
  });
  log.info({ router: endpointText(ep), device: port.name }, 'agent started');
  await new Promise<void>((resolve) => {
    const stop = (sig: string): void => {
      log.info({ signal: sig }, 'agent stopping');
      resolve();
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  await engine.close();
  await port.close({ remove: true });
}
