import { Command } from 'commander';
import { CliError } from '../client.js';
import { parseIntArg } from './net.js';

interface AgentOpts {
  router: string;
  peer: string;
  tap?: string;
  tun?: string;
  unix?: string;
  key: string;
  mtu?: number;
  socks?: string;
  keepalive?: number;
  logLevel?: string;
}

/**
 * `mvnet agent`: carries a local device to a router over an encrypted link, where it is the VM
 * port `vm attach VM --agent PUBKEY --listen SPEC` made. Runs in the foreground until SIGTERM.
 */
export function agentCommand(): Command {
  return new Command('agent')
    .description("carry a local TAP, TUN or QEMU socket, encrypted, to a router, where it is a VM's port (vm attach --agent)")
    .requiredOption('--router <endpoint>', "the router's link listener: HOST:PORT (UDP), tcp:HOST:PORT, unix:PATH, ADDR.onion:PORT, or a multiaddr")
    .requiredOption('--peer <pubkey>', "the router's link public key (`mvnet link key` on the router)")
    .option('--tap <ifname>', 'a TAP device here (created if missing)')
    .option('--tun <ifname>', 'a TUN device here (the router attaches it with --agent-tun)')
    .option('--unix <path>', 'listen here for QEMU (-netdev stream,server=off,addr.type=unix,addr.path=PATH)')
    .requiredOption('--key <file>', "this agent's private key file, mode 0600 (`mvnet key generate`; give the router `mvnet key show FILE`)")
    .option('--mtu <n>', "the router network's MTU (default 1500)", parseIntArg('--mtu', 576, 65_535))
    .option('--socks <addr>', "Tor's SOCKS port for an onion router (default 127.0.0.1:9050)")
    .option('--keepalive <seconds>', 'keepalive interval (default 25)', parseIntArg('--keepalive', 1, 3600))
    .option('--log-level <level>', 'pino log level on stderr (default info)')
    .action(async (o: AgentOpts) => {
      if ([o.tap, o.tun, o.unix].filter((v) => v !== undefined).length !== 1) throw new CliError('give exactly one of --tap, --tun, --unix');
      // Loaded here, not at start-up: only `mvnet agent` needs the link stack.
      const { runAgent } = await import('../../daemon/agent.js');
      await runAgent({
        router: o.router,
        peer: o.peer,
        key: o.key,
        ...(o.tap !== undefined ? { tap: o.tap } : {}),
        ...(o.tun !== undefined ? { tun: o.tun } : {}),
        ...(o.unix !== undefined ? { unix: o.unix } : {}),
        ...(o.mtu !== undefined ? { mtu: o.mtu } : {}),
        ...(o.socks !== undefined ? { socks: o.socks } : {}),
        ...(o.keepalive !== undefined ? { keepaliveS: o.keepalive } : {}),
        ...(o.logLevel !== undefined ? { logLevel: o.logLevel } : {}),
      });
    });
}
