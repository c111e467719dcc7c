/**
 * `mvnet vm attach --batch FILE|-`: many VMs from a JSON array, attached over ONE control
 * connection (pipelined), so a script attaching a thousand VMs pays for one CLI start-up and
 * one connect instead of a thousand. Each entry takes the fields of `vm attach`'s options
 * (camelCase: `unixListen`, `vnetHdr`, …) plus `vm`. The whole file is checked before anything
 * is sent: a bad one is one line and exit 2, nothing attached. Then every VM is tried, failures
 * do not stop the rest, and each is named.
 */
import { readFile } from 'node:fs/promises';
import type { Ctx } from '../context.js';
import type { AttachManyResult, CliErrorJson, VmAttachBatchItem, VmInfo } from '../../daemon/control/api.js';
import { callPipelined, CliError, rpcError, UsageError, type PipelinedResult } from '../client.js';

/** JSON-RPC's "method not found" (an older daemon without vm.attachMany). */
const METHOD_NOT_FOUND = -32601;
import { EXIT, type ExitCode } from '../exit-codes.js';
import { safeText } from '../text.js';
import { describePort, portParams, type AttachOpts } from './vm-port.js';

/** What each field of an entry may hold. */
type FieldKind = 'string' | 'path-or-true' | 'boolean' | 'options';

const FIELDS: Readonly<Record<string, FieldKind>> = {
  vm: 'string',
  net: 'string',
  tap: 'string',
  tun: 'string',
  unix: 'string',
  unixListen: 'path-or-true',
  dgram: 'path-or-true',
  vhostUser: 'path-or-true',
  dgramPeer: 'string',
  fifo: 'string',
  iface: 'string',
  netns: 'string',
  mac: 'string',
  ip: 'string',
  vnetHdr: 'boolean',
  multiQueue: 'boolean',
  kind: 'string',
  options: 'options',
  agent: 'string',
  listen: 'string',
  agentTun: 'boolean',
};

const WHAT: Readonly<Record<FieldKind, string>> = {
  string: 'a string',
  'path-or-true': 'a path or true',
  boolean: 'true or false',
  options: 'a JSON object (or its text)',
};

function fits(kind: FieldKind, v: unknown): boolean {
  switch (kind) {
    case 'string':
      return typeof v === 'string' && v !== '';
    case 'path-or-true':
      return v === true || (typeof v === 'string' && v !== '');
    case 'boolean':
      return typeof v === 'boolean';
    case 'options':
      return typeof v === 'string' || (typeof v === 'object' && v !== null && !Array.isArray(v));
  }
}

/** One VM of the file: its name and its `vm.attach` parameters. */
export interface BatchEntry {
  vm: string;
  params: Record<string, unknown>;
}

/**
 * The file's text to attach requests; throws a UsageError naming the source, the entry (number
 * from 1, and its VM when known) and what is wrong. `socket` only for messages' sake: no entry
 * may pass a descriptor (`fd`), so nothing is sent while checking.
 */
export async function parseBatch(text: string, source: string, socket: string): Promise<BatchEntry[]> {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`--batch ${source}: not JSON (${(e as Error).message})`);
  }
  if (!Array.isArray(data)) throw new UsageError(`--batch ${source}: expected a JSON array of VMs, got ${data === null ? 'null' : typeof data}`);
  const seen = new Set<string>();
  const out: BatchEntry[] = [];
  for (const [i, e] of data.entries()) {
    const vmName = typeof e === 'object' && e !== null && typeof (e as { vm?: unknown }).vm === 'string' ? ` (${(e as { vm: string }).vm})` : '';
    const where = `--batch ${source}: entry ${i + 1}${vmName}`;
    if (typeof e !== 'object' || e === null || Array.isArray(e)) throw new UsageError(`${where}: expected an object`);
    const o = e as Record<string, unknown>;
    for (const [k, v] of Object.entries(o)) {
      if (k === 'fd') throw new UsageError(`${where}: fd cannot be given in a batch (one --fd per vm attach)`);
      if (k === 'wait' || k === 'waitTimeout') throw new UsageError(`${where}: ${k} cannot be given in a batch`);
      const kind = Object.hasOwn(FIELDS, k) ? FIELDS[k]! : undefined;
      if (kind === undefined) throw new UsageError(`${where}: unknown field ${JSON.stringify(k)}`);
      if (!fits(kind, v)) throw new UsageError(`${where}: ${k} takes ${WHAT[kind]}`);
    }
    if (o.vm === undefined) throw new UsageError(`${where}: missing vm (the VM's name)`);
    if (o.net === undefined) throw new UsageError(`${where}: missing net`);
    const vm = o.vm as string;
    if (seen.has(vm)) throw new UsageError(`${where}: VM ${vm} appears twice`);
    seen.add(vm);
    const opts = { ...o, ...(typeof o.options === 'object' ? { options: JSON.stringify(o.options) } : {}) } as unknown as AttachOpts;
    let port: Record<string, unknown>;
    try {
      port = await portParams(opts, socket);
    } catch (err) {
      throw new UsageError(`${where}: ${(err as Error).message}`);
    }
    const params: Record<string, unknown> = { name: vm, net: opts.net, port };
    if (opts.mac !== undefined) params.mac = opts.mac;
    if (opts.ip !== undefined) params.ip = opts.ip;
    out.push({ vm, params });
  }
  return out;
}

async function readSource(source: string): Promise<string> {
  if (source === '-') {
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  }
  try {
    return await readFile(source, 'utf8');
  } catch (e) {
    throw new UsageError(`--batch ${source}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
}

function errorJson(e: CliError): CliErrorJson['error'] {
  return { code: e.code, exitCode: e.exitCode, message: e.message, rpcCode: e.rpcCode };
}

/** VMs per vm.attachMany call: one state write each, and well under the control socket's 1 MiB line. */
const ATTACH_CHUNK = 100;

/**
 * One result per entry, in order. vm.attachMany (one state write per chunk instead of one per VM)
 * over one connection; a daemon without it (older) gets pipelined vm.attach calls instead.
 */
async function attachAll(ctx: Ctx, entries: readonly { params: unknown }[]): Promise<PipelinedResult<VmInfo>[]> {
  const chunks: (typeof entries)[] = [];
  for (let i = 0; i < entries.length; i += ATTACH_CHUNK) chunks.push(entries.slice(i, i + ATTACH_CHUNK));
  const answers = await callPipelined<AttachManyResult>(
    ctx.socket(),
    chunks.map((c) => ({ method: 'vm.attachMany', params: { vms: c.map((e) => e.params) } })),
    { timeoutMs: ctx.timeoutMs() },
  );
  if (answers.some((a) => !a.ok && a.error.rpcCode === METHOD_NOT_FOUND)) {
    return callPipelined<VmInfo>(
      ctx.socket(),
      entries.map((e) => ({ method: 'vm.attach', params: e.params })),
      { timeoutMs: ctx.timeoutMs() },
    );
  }
  const out: PipelinedResult<VmInfo>[] = [];
  chunks.forEach((chunk, ci) => {
    const a = answers[ci]!;
    if (!a.ok) {
      for (let i = 0; i < chunk.length; i++) out.push({ ok: false, error: a.error });
      return;
    }
    const failed = new Map(a.result.failed.map((f) => [f.index, f]));
    let next = 0;
    for (let i = 0; i < chunk.length; i++) {
      const f = failed.get(i);
      if (f !== undefined) out.push({ ok: false, error: rpcError({ code: f.code ?? undefined, message: f.error }) });
      else out.push({ ok: true, result: a.result.attached[next++]! });
    }
  });
  return out;
}

/**
 * Attaches every VM of `source` (a file, or `-` for stdin). Text: a confirmation line per VM
 * attached (stdout, not under --quiet) and a line per failure (stderr, `mvnet: vm NAME: why`);
 * --json: an array of VmAttachBatchItem in the file's order. Exit: 0 when all attached, else the
 * failures' common exit code, or 1 when they differ.
 */
export async function attachBatch(ctx: Ctx, source: string): Promise<void> {
  const entries = await parseBatch(await readSource(source), source, ctx.socket());
  const results = await attachAll(ctx, entries);
  const items: VmAttachBatchItem[] = entries.map((e, i) => {
    const r = results[i]!;
    return r.ok ? { vm: e.vm, ok: true, result: r.result } : { vm: e.vm, ok: false, error: errorJson(r.error) };
  });
  const failed = items.filter((it): it is Extract<VmAttachBatchItem, { ok: false }> => !it.ok);
  const codes = new Set(failed.map((f) => f.error.exitCode));
  const exitCode: ExitCode = failed.length === 0 ? EXIT.OK : codes.size === 1 ? (failed[0]!.error.exitCode as ExitCode) : EXIT.ERROR;
  if (ctx.json()) {
    process.stdout.write(JSON.stringify(items, null, 2) + '\n');
    if (failed.length > 0) {
      const why = failed.map((f) => `${f.vm} (${f.error.message})`).join('; ');
      const e: CliErrorJson = { error: { code: codes.size === 1 ? failed[0]!.error.code : 'error', exitCode, message: `${failed.length} of ${items.length} VMs not attached: ${why}`, rpcCode: null } };
      process.stderr.write(JSON.stringify(e) + '\n');
    }
  } else {
    let out = '';
    let err = '';
    for (const it of items) {
      if (it.ok) {
        const v = it.result;
        if (!ctx.quiet()) out += safeText(`attached ${v.name} to ${v.net} by ${describePort(v.port)}: ${v.port.state} (${v.port.detail})`) + '\n';
      } else {
        err += `mvnet: vm ${safeText(it.vm)}: ${safeText(it.error.message.replace(/\s*\n\s*/g, ' '))}\n`;
      }
    }
    process.stdout.write(out);
    process.stderr.write(err);
  }
  process.exitCode = exitCode;
}
