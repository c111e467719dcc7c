/** An error whose message is meant for the user as is (bad input, a conflict, a missing thing). */
export class UserError extends Error {
  constructor(
    message: string,
    readonly code: number = -32602,
  ) {
    super(message);
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
