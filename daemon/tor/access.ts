/**
 * What the router needs of Tor: the SOCKS port while ready, per-VM credentials, the automap and
 * the resolver. TorService (service.ts) provides it; the router takes it as a dependency, so
 * Tor does not depend on the router.
 */
import type { Resolver } from '../gateway/dns.js';
import type { TorEgressDeps } from '../egress/tor.js';
import type { Automap } from './automap.js';
import type { SocksAuth } from './socks-resolve.js';

export interface TorAccess extends TorEgressDeps {
  creds(vm: string): SocksAuth;
  automap: Automap;
  resolver: Resolver;
}
