import { Command } from 'commander';
import type { Ctx } from '../context.js';
import { EXIT } from '../exit-codes.js';
import { safeLines } from '../text.js';
import type { CheckResult, DoctorInput } from '../doctor/checks.js';
import type { StatusInfo, TorStatus } from '../../daemon/control/api.js';

/** How long the daemon may take to answer before it counts as unreachable (at most --timeout). */
const DAEMON_TIMEOUT_MS = 3000;

/** `ctx.call` with a deadline: a stopped (SIGSTOP) daemon must not hang the doctor. */
async function ask<T>(ctx: Ctx, method: string): Promise<T | { error: string }> {
  const limit = ctx.timeoutMs();
  const timeoutMs = limit === 0 ? DAEMON_TIMEOUT_MS : Math.min(limit, DAEMON_TIMEOUT_MS);
  return ctx.call<T>(method, {}, { timeoutMs }).catch((e: Error) => ({ error: e.message }));
}

const LABEL: Record<CheckResult['status'], string> = { ok: 'ok  ', fail: 'FAIL', warn: 'warn', skip: 'skip' };

/** `ok    tun            /dev/net/tun present and openable`, and an indented `fix:` line under a FAIL or warn. */
export function formatChecks(results: CheckResult[]): string {
  const w = Math.max(...results.map((r) => r.id.length));
  return results
    .map((r) => {
      const line = `${LABEL[r.status]}  ${r.id.padEnd(w)}  ${r.status === 'skip' ? `(${r.detail})` : r.detail}`;
      return r.fix !== undefined && (r.status === 'fail' || r.status === 'warn') ? `${line}\n${' '.repeat(w + 8)}fix: ${r.fix}` : line;
    })
    .join('\n');
}

export function doctorCommand(ctx: Ctx): Command {
  return new Command('doctor')
    .description('check the host and the daemon: each line ok, FAIL (with the fix), warn or skip; exit 6 when any FAIL')
    .option('--state-dir <dir>', 'the state directory to check when the daemon cannot say (default /var/lib/mvnet)')
    .action(async (o: { stateDir?: string }) => {
      // Loaded here: the checks load the native addon, which no other command needs at start-up.
      const { runChecks, torRouted } = await import('../doctor/checks.js');
      const status = await ask<StatusInfo>(ctx, 'daemon.status');
      const input: DoctorInput = { socket: ctx.socket(), stateDir: o.stateDir ?? '/var/lib/mvnet', status };
      if (!('error' in status) && status.vms.some(torRouted)) {
        input.tor = await ask<TorStatus>(ctx, 'tor.status');
      }
      const results = await runChecks(input);
      const failed = results.some((r) => r.status === 'fail');
      // The checks' details quote the daemon (its errors, Tor's reason): no control characters for people.
      const out = ctx.json() ? JSON.stringify({ ok: !failed, checks: results }, null, 2) : safeLines(formatChecks(results));
      if (failed) process.exitCode = EXIT.CHECK_FAILED;
      // A daemon that never answered still holds a connection open: leave once the report is out.
      await new Promise<void>((resolve) => process.stdout.write(out + '\n', () => resolve()));
      if ('error' in status) process.exit(process.exitCode ?? 0);
    });
}
