/**
 * SOCKS credentials per VM: Tor's IsolateSOCKSAuth puts streams with different credentials on
 * different circuits, so each VM gets its own; `newnym(vm)` changes that VM's credentials only,
 * moving its next streams to new circuits without touching other VMs.
 */
import { randomBytes } from 'node:crypto';
import type { SocksAuth } from './socks-resolve.js';

export class Isolation {
  private readonly gen = new Map<string, number>();
  private readonly secret = randomBytes(8).toString('hex');

  creds(vm: string): SocksAuth {
    const g = this.gen.get(vm) ?? 0;
    return { user: `mvnet-${vm}-${g}`, pass: `${this.secret}-${g}` };
  }

  /** The username tor reports in CIRC/STREAM events for this VM's current streams. */
  username(vm: string): string {
    return this.creds(vm).user;
  }

  /** VM owning a SOCKS username seen in a Tor event (any generation). */
  vmOf(user: string): string | undefined {
    const m = /^mvnet-(.+)-(\d+)$/.exec(user);
    return m?.[1];
  }

  newnym(vm: string): number {
    const g = (this.gen.get(vm) ?? 0) + 1;
    this.gen.set(vm, g);
    return g;
  }
}
