/** What TorService needs of the Tor manager (embedded or external). */
import type { TorControl } from './control.js';
import type { TorReach } from './files.js';
import type { TorState } from './manager.js';
import type { SocksEndpoint } from './socks-endpoint.js';

export interface TorManagerLike {
  isReady(): boolean;
  socks(): SocksEndpoint | null;
  control(): TorControl | null;
  state(): TorState;
  on(event: 'ready' | 'down', listener: () => void): unknown;
  stop(reason?: string): Promise<void>;
  /** Who may connect to a socket tor must reach (see files.ts). */
  torReach(): TorReach;
}
