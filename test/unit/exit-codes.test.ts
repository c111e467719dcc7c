/** The CLI's exit codes follow the daemon's JSON-RPC error codes (daemon/errors.ts), and the table is the documented one. */
import { describe, expect, it } from 'vitest';
import { EXIT, EXIT_NAMES, exitForRpcCode } from '../../cli/exit-codes.js';
import { CONFLICT, INVALID_PARAMS, NOT_FOUND, NotFoundError, ConflictError, UserError } from '../../daemon/errors.js';

describe('exit codes', () => {
  it('maps the daemon codes: not found 4, conflict 5, any other refusal 1', () => {
    expect(exitForRpcCode(NOT_FOUND)).toBe(4);
    expect(exitForRpcCode(CONFLICT)).toBe(5);
    expect(exitForRpcCode(INVALID_PARAMS)).toBe(1);
    expect(exitForRpcCode(-32603)).toBe(1);
    expect(new NotFoundError('x').code).toBe(NOT_FOUND);
    expect(new ConflictError('x').code).toBe(CONFLICT);
    expect(new UserError('x').code).toBe(INVALID_PARAMS);
  });

  it('is the documented table', () => {
    expect(EXIT).toEqual({ OK: 0, ERROR: 1, USAGE: 2, UNREACHABLE: 3, NOT_FOUND: 4, CONFLICT: 5, CHECK_FAILED: 6 });
    expect(Object.values(EXIT).map((c) => EXIT_NAMES[c])).toEqual(['ok', 'error', 'usage', 'unreachable', 'not-found', 'conflict', 'check-failed']);
  });
});
