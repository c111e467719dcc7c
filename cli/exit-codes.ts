/**
 * The CLI's exit codes: one table for every command (README, "The --json contract"). Programs
 * tell a missing thing from a conflict from a daemon that is not there without reading messages.
 */
export const EXIT = {
  OK: 0,
  /** The request failed for another reason (the daemon refused it, a device failed, a bug). */
  ERROR: 1,
  /** A bad argument or option: nothing was asked of the daemon. */
  USAGE: 2,
  /** The daemon is not running, not reachable, or did not answer within --timeout. */
  UNREACHABLE: 3,
  /** The request names something the daemon does not have (a VM, network, link, tee, forward…). */
  NOT_FOUND: 4,
  /** The request conflicts with the current state (exists, in use, attached). */
  CONFLICT: 5,
  /** A check found a failure (`mvnet doctor`). */
  CHECK_FAILED: 6,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** The name an error carries in `--json` error output, by exit code. */
export const EXIT_NAMES: Readonly<Record<ExitCode, string>> = {
  0: 'ok',
  1: 'error',
  2: 'usage',
  3: 'unreachable',
  4: 'not-found',
  5: 'conflict',
  6: 'check-failed',
};

/** The daemon's JSON-RPC error codes (daemon/errors.ts, api.ts RpcErrorCode) that have their own exit code. */
const RPC_EXIT: ReadonlyMap<number, ExitCode> = new Map<number, ExitCode>([
  [-32004, EXIT.NOT_FOUND],
  [-32001, EXIT.CONFLICT],
]);

/** The exit code for a JSON-RPC error the daemon answered with. */
export function exitForRpcCode(code: number): ExitCode {
  return RPC_EXIT.get(code) ?? EXIT.ERROR;
}
