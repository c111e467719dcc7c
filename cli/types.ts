/** Shapes of the daemon's answers as the CLI reads them. */
export interface PortStatsView {
  rxFrames: number;
  rxBytes: number;
  txFrames: number;
  txBytes: number;
  drops: Record<string, number>;
}

export interface NetView {
  name: string;
  subnet: string;
  gateway: string;
  ipv6?: string;
  mtu: number;
  vms: string[];
  stats: { forwarded: number; flooded: number; toGateway: number; drops: Record<string, number> };
}

export interface VmView {
  name: string;
  net: string;
  mac: string | null;
  ip: string | null;
  route: string;
  flows: { tcp: number; udp: number; tcpLimit: number; udpLimit: number; tcpRefused: number; udpDropped: number } | null;
  port: {
    kind: string;
    ifname?: string;
    path?: string;
    netns?: string;
    fd?: number;
    rx?: string;
    tx?: string;
    state: string;
    detail: string;
    stats: PortStatsView;
  };
}

export interface StatusView {
  daemon: { pid: number; version: string; socket: string; stateDir: string; uptimeSec: number };
  networks: NetView[];
  vms: VmView[];
}
