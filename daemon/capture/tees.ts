/**
 * Tees: persistent captures into a file under captureDir or to a unix socket. A tee's output is
 * opened when it is added (or restored) and lives until it is removed; its capture runs while its
 * source is there: when the VM detaches (or its network is deleted) the run ends cleanly (ISBs)
 * and the tee waits; when the source is back a new run starts (a new pcapng section in a file).
 */
import type { Logger } from 'pino';
import type { CaptureHub } from './hub.js';
import type { Session, Counters } from './session.js';
import { zeroCounters } from './session.js';
import type { SourceSpec } from './params.js';
import { FileSink } from './sink-file.js';
import { UnixSink } from './sink-unix.js';
import { UserError, NotFoundError, ConflictError } from '../errors.js';

/** A tee as saved in the state file and given to tee.add (checked by validate.ts checkTeeSpec). */
export interface TeeSpec {
  name: string;
  from: SourceSpec;
  /** A path relative to captureDir, or `unix:` and an absolute socket path. */
  to: string;
  filter: string;
  snaplen: number;
  ring?: { files: number; sizeMb: number };
}

export interface TeeStatus {
  spec: TeeSpec;
  state: 'active' | 'waiting' | 'error';
  detail: string;
  counters: Counters;
}

export const UNIX_PREFIX = 'unix:';
/** Tees at once (each holds an output, and a queue while it runs). */
export const MAX_TEES = 64;

interface Tee {
  spec: TeeSpec;
  /** null: the output could not be opened at restore (`failed` says why); kept so tee.list shows it. */
  sink: FileSink | UnixSink | null;
  failed: string;
  session: Session | null;
  counters: Counters;
  /** Why the source is not captured now. */
  waiting: string;
}

export class Tees {
  private readonly tees = new Map<string, Tee>();

  constructor(
    private readonly hub: CaptureHub,
    private readonly o: { log: Logger; captureDir: string; socketGid?: number | undefined },
  ) {
    hub.onPointsChanged = () => this.refresh();
  }

  has(name: string): boolean {
    return this.tees.has(name);
  }

  /**
   * Opens the tee's output and starts it if its source is there. When the output cannot be
   * opened: throws a UserError, or with `restoring` keeps the tee in the error state (logged).
   */
  async add(spec: TeeSpec, restoring = false): Promise<TeeStatus> {
    if (this.tees.has(spec.name)) throw new ConflictError(`a tee named ${spec.name} already exists`);
    if (!restoring && this.tees.size >= MAX_TEES) throw new ConflictError(`there are ${MAX_TEES} tees already; remove one first`);
    for (const t of this.tees.values()) if (t.spec.to === spec.to) throw new ConflictError(`tee ${t.spec.name} already ${spec.to.startsWith(UNIX_PREFIX) ? 'listens at' : 'writes'} ${spec.to}`);
    let sink: FileSink | UnixSink | null = null;
    let failed = '';
    try {
      sink = await this.open(spec);
    } catch (e) {
      if (!restoring) throw e;
      failed = (e as Error).message;
      this.o.log.warn({ tee: spec.name, err: failed }, 'a saved tee could not open its output; it stays in the error state until removed');
    }
    const t: Tee = { spec, sink, failed, session: null, counters: zeroCounters(), waiting: '' };
    this.tees.set(spec.name, t);
    this.run(t);
    return this.status(t);
  }

  private async open(spec: TeeSpec): Promise<FileSink | UnixSink> {
    if (!spec.to.startsWith(UNIX_PREFIX)) return new FileSink({ captureDir: this.o.captureDir, rel: spec.to, ...(spec.ring !== undefined ? { ring: spec.ring } : {}) });
    const path = spec.to.slice(UNIX_PREFIX.length);
    try {
      return await UnixSink.listen(path, this.o.socketGid);
    } catch (e) {
      throw e instanceof UserError ? e : new UserError(`cannot listen at ${path}: ${(e as Error).message}`);
    }
  }

  /** Starts the tee's capture when its source is there. */
  private run(t: Tee): void {
    if (t.session !== null || t.sink === null || t.sink.state().state === 'error') return;
    let prep;
    try {
      prep = this.hub.prepare({ from: t.spec.from, filter: t.spec.filter, snaplen: t.spec.snaplen, drops: false });
    } catch (e) {
      t.waiting = (e as Error).message;
      return;
    }
    t.waiting = '';
    const s = this.hub.open(prep, t.sink, { kind: 'tee', name: t.spec.name, counters: t.counters });
    t.session = s;
    const prev = s.onEnd;
    s.onEnd = (x, why) => {
      prev?.(x, why);
      if (t.session === s) t.session = null;
      t.waiting = why;
    };
    if (s.ended) t.session = null;
  }

  /** Points came or went: waiting tees whose source is back start again. */
  refresh(): void {
    for (const t of this.tees.values()) if (t.session === null) this.run(t);
  }

  async remove(name: string): Promise<TeeSpec> {
    const t = this.tees.get(name);
    if (t === undefined) throw new NotFoundError(`no tee named ${name}`);
    this.tees.delete(name);
    await this.stop(t, true);
    return t.spec;
  }

  private async stop(t: Tee, remove: boolean): Promise<void> {
    t.session?.stop(remove ? 'tee removed' : 'the daemon is stopping');
    t.session = null;
    if (t.sink instanceof UnixSink) await t.sink.close(remove);
    else await t.sink?.close();
  }

  specs(): TeeSpec[] {
    return [...this.tees.values()].map((t) => t.spec);
  }

  private status(t: Tee): TeeStatus {
    if (t.sink === null) return { spec: t.spec, state: 'error', detail: t.failed, counters: { ...t.counters } };
    const st = t.sink.state();
    if (st.state === 'error') return { spec: t.spec, state: 'error', detail: st.detail, counters: { ...t.counters } };
    if (t.session === null) return { spec: t.spec, state: 'waiting', detail: t.waiting !== '' ? `waiting: ${t.waiting}` : 'waiting for its source', counters: { ...t.counters } };
    return { spec: t.spec, state: st.state, detail: st.detail, counters: { ...t.counters } };
  }

  list(): TeeStatus[] {
    return [...this.tees.values()].sort((a, b) => a.spec.name.localeCompare(b.spec.name)).map((t) => this.status(t));
  }

  async close(): Promise<void> {
    for (const t of this.tees.values()) await this.stop(t, false);
    this.tees.clear();
  }
}
