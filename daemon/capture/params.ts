/** Checks of `capture.start` and `tee.add` parameters (the control API's untyped input). */
import { UserError } from '../errors.js';
import { DEFAULT_SNAPLEN } from './session.js';

export interface SourceSpec {
  vm?: string;
  net?: string;
  point?: string[];
}

export interface CaptureParams {
  from: SourceSpec;
  filter: string;
  snaplen: number;
  count?: number;
  durationSec?: number;
  drops: boolean;
}

export function asRecord(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new UserError(`${what} must be an object`);
  return v as Record<string, unknown>;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$/;

function checkPointName(v: unknown, what: string): string {
  if (typeof v !== 'string' || !NAME_RE.test(v)) throw new UserError(`invalid ${what} ${JSON.stringify(v)}`);
  return v;
}

export function checkSource(v: unknown): SourceSpec {
  const o = asRecord(v, 'from');
  for (const k of Object.keys(o)) if (k !== 'vm' && k !== 'net' && k !== 'point') throw new UserError(`unknown key from.${k}`);
  const given = ['vm', 'net', 'point'].filter((k) => o[k] !== undefined);
  if (given.length !== 1) throw new UserError('give exactly one of a VM, --net NAME or --point NAME');
  if (o.vm !== undefined) return { vm: checkPointName(o.vm, 'VM name') };
  if (o.net !== undefined) return { net: checkPointName(o.net, 'network name') };
  if (!Array.isArray(o.point) || o.point.length === 0 || o.point.length > 64) throw new UserError('from.point must be a list of 1 to 64 point names');
  return { point: [...new Set(o.point.map((p) => checkPointName(p, 'point name')))] };
}

function optInt(v: unknown, what: string, min: number, max: number): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new UserError(`invalid ${what} ${JSON.stringify(v)}: an integer from ${min} to ${max}`);
  return v;
}

export function checkFilterText(v: unknown): string {
  if (v === undefined || v === null) return '';
  if (typeof v !== 'string' || v.length > 4096) throw new UserError('filter must be a string of at most 4096 characters');
  return v;
}

export function checkSnaplen(v: unknown): number {
  const n = optInt(v, 'snaplen', 0, DEFAULT_SNAPLEN);
  return n === undefined || n === 0 ? DEFAULT_SNAPLEN : n;
}

export function checkCaptureParams(p: unknown): CaptureParams {
  const o = asRecord(p, 'params');
  const count = optInt(o.count, 'count', 0, 2 ** 40);
  const durationSec = optInt(o.durationSec, 'duration', 0, 365 * 86400);
  return {
    from: checkSource(o.from),
    filter: checkFilterText(o.filter),
    snaplen: checkSnaplen(o.snaplen),
    ...(count !== undefined && count > 0 ? { count } : {}),
    ...(durationSec !== undefined && durationSec > 0 ? { durationSec } : {}),
    drops: o.drops === true,
  };
}
