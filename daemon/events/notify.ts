/**
 * Desktop notices: when a VM's route fails closed (and when it recovers), an
 * org.freedesktop.Notifications.Notify call on a D-Bus session bus (`notify.dbus`, else
 * DBUS_SESSION_BUS_ADDRESS). Best effort and never in the way: notices of one moment are sent
 * as one, at most MAX_PENDING wait, every call has a deadline, and a bus that cannot be reached
 * is logged once (per outage) and tried again at the next notice.
 */
import dbus from 'dbus-next';
import type { Logger } from 'pino';
import { busAddressProblem } from './bus-address.js';
import type { MvnetEvent } from './types.js';

const NOTIFY_TIMEOUT_MS = 5000;
/** Events gathered before one notice is sent (several VMs failing closed at once: one notice). */
const COALESCE_MS = 200;
const MAX_PENDING = 64;

export interface NotifyConfig {
  /** Send notices (default: when a session bus address is known). */
  enabled?: boolean;
  /** The bus address, e.g. unix:path=/run/user/1000/bus (default DBUS_SESSION_BUS_ADDRESS). */
  dbus?: string;
}

/** The address notices go to, or null when they are off (and why, for the log). */
export function notifyAddress(cfg: NotifyConfig | undefined, env: NodeJS.ProcessEnv = process.env): { address: string } | { off: string; warn?: boolean } {
  const address = cfg?.dbus ?? env.DBUS_SESSION_BUS_ADDRESS;
  if (cfg?.enabled === false) return { off: 'notify.enabled is false' };
  if (address === undefined || address === '') return { off: cfg?.enabled === true ? 'notify.enabled is true but no bus address is known (set notify.dbus or DBUS_SESSION_BUS_ADDRESS)' : 'no session bus' };
  // notify.dbus was checked at load (config.ts); the inherited variable is checked here, and a
  // bad one skipped with a warning: dbus-next would spawn a unixexec: program as us, or dial tcp:.
  const problem = busAddressProblem(address);
  if (problem !== null) return { off: `DBUS_SESSION_BUS_ADDRESS ${problem}`, warn: true };
  return { address };
}

/**
 * Notification bodies are markup for servers that announce `body-markup` (most do): a VM name
 * or Tor's reason holding `<b>` or `&` would be read as markup, so the body is escaped.
 */
export function escapeBodyMarkup(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export class DesktopNotifier {
  private bus: dbus.MessageBus | null = null;
  private pending: MvnetEvent[] = [];
  private timer: NodeJS.Timeout | null = null;
  private sending = false;
  private failing = false;
  private closed = false;
  /** Notices sent, and not sent (the bus failed or too many waited). */
  sent = 0;
  failed = 0;

  constructor(
    private readonly address: string,
    private readonly log: Logger,
  ) {}

  /** Takes every event; notices only for routes failing closed and recovering. */
  event(e: MvnetEvent): void {
    if (this.closed || (e.type !== 'route.failclosed' && e.type !== 'route.recovered')) return;
    if (this.pending.length >= MAX_PENDING) {
      this.failed++;
      return;
    }
    this.pending.push(e);
    if (this.timer === null && !this.sending) {
      this.timer = setTimeout(() => void this.flush(), COALESCE_MS);
      this.timer.unref();
    }
  }

  private async flush(): Promise<void> {
    this.timer = null;
    if (this.closed || this.pending.length === 0) return;
    const batch = this.pending.splice(0);
    this.sending = true;
    try {
      const fail = batch.filter((e) => e.type === 'route.failclosed');
      const ok = batch.filter((e) => e.type === 'route.recovered');
      if (fail.length > 0) {
        const vms = [...new Set(fail.map((e) => e.vm))];
        const reason = fail[fail.length - 1]!.type === 'route.failclosed' ? (fail[fail.length - 1] as { reason: string }).reason : '';
        await this.send(`mvnet: ${vms.join(', ')} cut off (route fails closed)`, `${reason}. Tor traffic of ${vms.join(', ')} is refused until Tor is back; nothing is sent outside Tor.`, 2);
      }
      if (ok.length > 0) {
        const vms = [...new Set(ok.map((e) => e.vm))];
        await this.send(`mvnet: ${vms.join(', ')} routed through Tor again`, `Tor is ready again; the route of ${vms.join(', ')} works.`, 1);
      }
    } finally {
      this.sending = false;
      if (this.pending.length > 0 && !this.closed && this.timer === null) {
        this.timer = setTimeout(() => void this.flush(), COALESCE_MS);
        this.timer.unref();
      }
    }
  }

  private connect(): dbus.MessageBus {
    if (this.bus !== null) return this.bus;
    const bus = dbus.sessionBus({ busAddress: this.address });
    // Without a listener an unreachable bus would be an uncaught 'error'.
    bus.on('error', (err: Error) => {
      this.report(err);
      if (this.bus === bus) this.bus = null;
      try {
        bus.disconnect();
      } catch {
        // already gone
      }
    });
    this.bus = bus;
    return bus;
  }

  private report(err: unknown): void {
    if (this.failing) return;
    this.failing = true;
    this.log.warn({ bus: this.address, err: err instanceof Error ? err.message : String(err) }, 'desktop notice not sent: the D-Bus session bus cannot be reached (said once until it works again)');
  }

  private async send(summary: string, body: string, urgency: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    let bus: dbus.MessageBus | undefined;
    let onError: ((e: Error) => void) | undefined;
    try {
      bus = this.connect();
      const call = bus.call(
        new dbus.Message({
          destination: 'org.freedesktop.Notifications',
          path: '/org/freedesktop/Notifications',
          interface: 'org.freedesktop.Notifications',
          member: 'Notify',
          signature: 'susssasa{sv}i',
          body: ['mvnet', 0, 'network-error', summary, escapeBodyMarkup(body), [], { urgency: new dbus.Variant('y', urgency) }, -1],
        }),
      );
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${NOTIFY_TIMEOUT_MS} ms`)), NOTIFY_TIMEOUT_MS);
        // A connection that fails leaves its calls unanswered: fail now, not at the deadline.
        onError = reject;
        bus!.once('error', onError);
      });
      await Promise.race([call, deadline]);
      this.sent++;
      if (this.failing) this.log.info({ bus: this.address }, 'desktop notices work again');
      this.failing = false;
    } catch (err) {
      this.failed++;
      this.log.debug({ bus: this.address, err: err instanceof Error ? err.message : String(err) }, 'desktop notice failed');
      this.report(err);
      // A fresh connection next time: this one may be half open.
      const b = this.bus;
      this.bus = null;
      try {
        b?.disconnect();
      } catch {
        // already gone
      }
    } finally {
      if (timer !== undefined) clearTimeout(timer);
      if (onError !== undefined) bus?.off('error', onError);
    }
  }

  close(): void {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const b = this.bus;
    this.bus = null;
    try {
      b?.disconnect();
    } catch {
      // already gone
    }
  }
}
