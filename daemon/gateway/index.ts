/**
 * The per-network services at the gateway address: ARP, ICMP echo and errors, DHCPv4, NDP
 * (router advertisements), DNS (UDP and TCP front end with pluggable resolvers).
 *
 * All but the upstream DNS resolver are pure and clock-driven: they take parsed input (see
 * `dissect`) and `now` in ms, return complete Ethernet frames to send, and expose
 * `nextDeadline()` where periodic work exists. `GatewayServices` bundles them for one network.
 */
export * from './types.js';
export { ArpResponder, ARP_DEFEND_INTERVAL_MS, type ArpStats } from './arp.js';
export {
  IcmpService,
  TokenBucket,
  type IcmpErrorOptions,
  type IcmpOptions,
  type IcmpStats,
  type Icmpv4ErrorKind,
  type Icmpv6ErrorKind,
} from './icmp.js';
export {
  DhcpServer,
  DEFAULT_DECLINE_HOLD_MS,
  DEFAULT_OFFER_HOLD_MS,
  type DhcpLease,
  type DhcpLeaseEvent,
  type DhcpLeaseEventType,
  type DhcpLeaseState,
  type DhcpServerOptions,
  type DhcpSnapshot,
  type DhcpSnapshotLease,
  type DhcpStats,
} from './dhcp.js';
export {
  NdpService,
  dnsslData,
  MAX_INITIAL_RTR_ADVERTISEMENTS,
  MAX_INITIAL_RTR_ADVERT_INTERVAL_MS,
  MIN_DELAY_BETWEEN_RAS_MS,
  NDP_OPT_DNSSL,
  type NdpOptions,
  type NdpStats,
} from './ndp.js';
export {
  DnsServer,
  DnsTcpFramer,
  DnsTcpSession,
  dnsQuestion,
  frameDnsTcp,
  type DnsAnswer,
  type DnsRecords,
  type DnsServerOptions,
  type DnsServerStats,
  type DnsTransport,
  type Resolver,
} from './dns.js';
export { LocalZone, NoneResolver, type LocalHost, type LocalZoneOptions } from './dns-local.js';
export { UpstreamResolver, readResolvConf, type UpstreamOptions, type UpstreamServer, type UpstreamStats } from './dns-upstream.js';
export { LocalFirstResolver, RoutedResolver } from './dns-route.js';
export { dissect, type Dissected } from './dissect.js';
export { GatewayServices, type GatewayInputResult, type GatewayServicesOptions } from './services.js';
export { IPV6_ALL_NODES, IPV6_ALL_ROUTERS } from './frames.js';
