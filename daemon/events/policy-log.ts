/**
 * Policy decisions in the log: every flow a route refuses or drops (and every spoofed source)
 * at debug, and at info at most one line per VM and reason every INFO_EVERY_MS, saying how many
 * like it were not logged since. The router reports the decision (RouterDeps.onPolicy); this
 * only decides what reaches the log, so a flood costs a map lookup per refused flow.
 */
import type { Logger } from 'pino';
import type { PolicyDecision } from '../router/net-router.js';

export const INFO_EVERY_MS = 10_000;
/** Keys remembered at most (VM × reason); the oldest are forgotten first. */
const MAX_KEYS = 4096;

interface Seen {
  at: number;
  suppressed: number;
}

export class PolicyLog {
  private readonly seen = new Map<string, Seen>();

  constructor(
    private readonly log: Logger,
    private readonly clock: () => number = Date.now,
  ) {}

  record(d: PolicyDecision): void {
    const fields = { vm: d.vm, proto: d.proto, dst: d.dst, reason: d.reason, action: d.action, ...(d.src !== undefined ? { src: d.src } : {}) };
    const msg = d.proto === 'frame' ? 'frame dropped by the switch' : d.reason === 'spoofed-source' ? 'packet dropped: spoofed source address' : `flow ${d.action} by policy`;
    if (this.log.isLevelEnabled('debug')) this.log.debug(fields, msg);
    if (!this.log.isLevelEnabled('info')) return;
    const key = `${d.vm}|${d.reason}`;
    const now = this.clock();
    const s = this.seen.get(key);
    if (s !== undefined && now - s.at < INFO_EVERY_MS) {
      s.suppressed++;
      return;
    }
    this.log.info({ ...fields, ...(s !== undefined && s.suppressed > 0 ? { suppressed: s.suppressed } : {}) }, `${msg}${s !== undefined && s.suppressed > 0 ? ` (${s.suppressed} more like it in the last ${Math.round((now - s.at) / 1000)} s not logged)` : ''}`);
    this.seen.delete(key);
    this.seen.set(key, { at: now, suppressed: 0 });
    if (this.seen.size > MAX_KEYS) this.seen.delete(this.seen.keys().next().value!);
  }
}
