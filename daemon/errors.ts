/**
 * JSON-RPC error codes of the control API (rpc.ts re-exports them; the CLI maps them to exit
 * codes in cli/exit-codes.ts). Here because every layer throws UserErrors and this file imports
 * nothing.
 */
/** Bad input: a parameter the daemon refuses (JSON-RPC's invalid params). */
export const INVALID_PARAMS = -32602;
/** A request that is valid but conflicts with the current state (in use, exists, attached). */
export const CONFLICT = -32001;
/** A request that names something the daemon does not have (no VM, network, link, tee, forward…). */
export const NOT_FOUND = -32004;

/** An error whose message is meant for the user as is (bad input, a conflict, a missing thing). */
export class UserError extends Error {
  constructor(
    message: string,
    readonly code: number = INVALID_PARAMS,
  ) {
    super(message);
  }
}

/** A UserError for something named that is not there (NOT_FOUND). */
export class NotFoundError extends UserError {
  constructor(message: string) {
    super(message, NOT_FOUND);
  }
}

/** A UserError for a request that conflicts with the current state (CONFLICT). */
export class ConflictError extends UserError {
  constructor(message: string) {
    super(message, CONFLICT);
  }
}

/**
 * Exceptions caught at a data-path boundary (a port's batch, a router frame, a timer, an
 * upstream callback). Each one is a bug: it is counted and reported, and the daemon goes on,
 * so one bad frame cannot take every VM's network down. Process-wide, as the daemon is one
 * process; the daemon installs the reporter (its logger at error level).
 */
export const faults = {
  dataPath: 0,
  /** Exceptions that reached the process's uncaughtException handler (main.ts). */
  uncaught: 0,
};

export type FaultReporter = (where: string, err: unknown, context: Readonly<Record<string, unknown>>) => void;

let reporter: FaultReporter | null = null;

/** Installs the reporter (null: back to stderr). Returns the one it replaced. */
export function setFaultReporter(r: FaultReporter | null): FaultReporter | null {
  const old = reporter;
  reporter = r;
  return old;
}

/** Counts and reports one caught data-path exception; never throws. */
export function dataPathFault(where: string, err: unknown, context: Readonly<Record<string, unknown>> = {}): void {
  faults.dataPath++;
  try {
    if (reporter !== null) reporter(where, err, context);
    else console.error(`mvnet: data path fault in ${where}:`, err, context);
  } catch {
    // A reporter that throws must not turn a counted fault into a crash.
  }
}
