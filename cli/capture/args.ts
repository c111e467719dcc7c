/**
 * `mvnet capture` and `mvnet tee add` arguments to control-API parameters, checked here so that a
 * bad combination is one line before anything is asked of the daemon (the daemon checks again).
 */
import { InvalidArgumentError } from 'commander';
import { UsageError } from '../client.js';
import type { CaptureSource } from '../../daemon/control/api.js';
import { MB } from './ring-files.js';

/** Words (and leading characters) a capture filter can start with: a first argument that is one is
 *  the filter, not a VM name (`mvnet capture --net n1 tcp port 80` and `mvnet capture vm1 tcp`). */
const FILTER_START = new Set([
  'host', 'src', 'dst', 'net', 'port', 'portrange', 'ether', 'arp', 'rarp', 'ip', 'ip6', 'tcp', 'udp',
  'icmp', 'icmp6', 'vlan', 'not', 'and', 'or', 'proto', 'sctp', 'gateway', 'less', 'greater', 'broadcast',
  'multicast', 'inbound', 'outbound', 'mpls', 'pppoed', 'pppoes', 'wlan', 'link', 'ifname', 'on', 'len',
]);

export function looksLikeFilter(word: string): boolean {
  return FILTER_START.has(word.toLowerCase()) || /^[(!]/.test(word) || /^\d/.test(word);
}

export interface SourceOpts {
  vm?: string | undefined;
  net?: string | undefined;
  point?: string[] | undefined;
}

/** Exactly one of VM, --net, --point (repeatable). */
export function captureSource(o: SourceOpts, words: { vm: string; net: string; point: string }): CaptureSource {
  const given = [o.vm !== undefined, o.net !== undefined, (o.point ?? []).length > 0].filter(Boolean).length;
  if (given === 0) throw new UsageError(`give what to capture: ${words.vm}, ${words.net} or ${words.point}`);
  if (given > 1) throw new UsageError(`give one of ${words.vm}, ${words.net} or ${words.point}, not several`);
  if (o.vm !== undefined) return { vm: o.vm };
  if (o.net !== undefined) return { net: o.net };
  return { point: o.point! };
}

export interface RingArg {
  files: number;
  sizeMb: number;
}

/** --ring N and --size MB go together. */
export function ringArg(ring: number | undefined, size: number | undefined): RingArg | undefined {
  if (ring === undefined && size === undefined) return undefined;
  if (ring === undefined) throw new UsageError('--size needs --ring N (how many files to keep)');
  if (size === undefined) throw new UsageError('--ring needs --size MB (when to begin the next file)');
  return { files: ring, sizeMb: size };
}

export interface CaptureOpts {
  net?: string;
  point?: string[];
  list?: boolean;
  write?: string;
  count?: number;
  duration?: number;
  snaplen?: number;
  ring?: number;
  size?: number;
  drops?: boolean;
}

export interface CapturePlan {
  params: { from: CaptureSource; filter?: string; snaplen?: number; count?: number; durationSec?: number; drops?: boolean };
  /** undefined: human lines on stdout; '-': pcapng on stdout; else a file. */
  write: string | undefined;
  ring: { files: number; sizeBytes: number } | undefined;
}

/** `mvnet capture [VM] [options] [FILTER...]` to a plan; throws CliError with one line when it cannot be. */
export function capturePlan(args: readonly string[], o: CaptureOpts): CapturePlan {
  let vm: string | undefined;
  let filterWords = [...args];
  const hasOther = o.net !== undefined || (o.point ?? []).length > 0;
  if (filterWords.length > 0 && !looksLikeFilter(filterWords[0]!)) {
    if (hasOther) throw new UsageError(`give a VM (${filterWords[0]}) or ${o.net !== undefined ? '--net' : '--point'}, not both`);
    vm = filterWords[0]!;
    filterWords = filterWords.slice(1);
  }
  const from = captureSource({ vm, net: o.net, point: o.point }, { vm: 'a VM', net: '--net NAME', point: '--point NAME' });
  const ring = ringArg(o.ring, o.size);
  if (ring && (o.write === undefined || o.write === '-')) throw new UsageError('--ring writes files: give -w FILE');
  const filter = filterWords.join(' ').trim();
  const params: CapturePlan['params'] = { from };
  if (filter !== '') params.filter = filter;
  if (o.snaplen !== undefined) params.snaplen = o.snaplen;
  if (o.count !== undefined) params.count = o.count;
  if (o.duration !== undefined) params.durationSec = o.duration;
  if (o.drops === true) params.drops = true;
  return { params, write: o.write, ring: ring ? { files: ring.files, sizeBytes: Math.round(ring.sizeMb * MB) } : undefined };
}

/** A positive number of seconds or megabytes (decimals allowed). */
export function parsePositive(what: string, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\d+(\.\d+)?$/.test(v) || !(n > 0) || n > max) throw new InvalidArgumentError(`${what} must be a number above 0 and at most ${max}`);
    return n;
  };
}
