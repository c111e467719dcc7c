/**
 * The daemon's persisted state: networks and attachments (later routes and leases). Saved
 * atomically — temp file, fsync, rename, fsync of the directory — so a crash at any instant
 * leaves either the old or the new file, never a torn one.
 */
import fs from 'node:fs';
import path from 'node:path';
import { STATE_VERSION, type StateFile } from './model.js';
import { native } from '../../plugins/native/index.js';
import { UserError } from '../errors.js';

export class StateStore {
  readonly file: string;
  private chain: Promise<void> = Promise.resolve();

  constructor(readonly dir: string) {
    this.file = path.join(dir, 'state.json');
  }

  /**
   * Takes the state directory for this process (flock on STATE/lock) or throws naming the
   * daemon that has it. Called before anything else is touched, so a second daemon changes
   * nothing; the kernel releases the lock when this process exits, however it exits.
   */
  lock(): void {
    const file = path.join(this.dir, 'lock');
    let r: { fd: number } | { holder: string };
    try {
      r = native.lockFile(file);
    } catch (e) {
      throw new UserError(`cannot lock ${file}: ${(e as Error).message}`);
    }
    if ('holder' in r) throw new UserError(`state directory ${this.dir} is in use by another mvnet daemon (pid ${r.holder !== '' ? r.holder : 'unknown'}); stop it first`);
  }

  load(): StateFile {
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { version: STATE_VERSION, networks: [], vms: [], routes: {} };
      throw e;
    }
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (e) {
      throw new Error(`state file ${this.file} is not valid JSON (${(e as Error).message})`);
    }
    const o = data as Partial<StateFile>;
    if (typeof o !== 'object' || o === null || typeof o.version !== 'number') throw new Error(`state file ${this.file} has no version`);
    if (o.version > STATE_VERSION) throw new Error(`state file ${this.file} is version ${o.version}; this mvnet understands up to ${STATE_VERSION}`);
    const routes = typeof o.routes === 'object' && o.routes !== null && !Array.isArray(o.routes) ? o.routes : {};
    const leases = typeof o.leases === 'object' && o.leases !== null && !Array.isArray(o.leases) ? o.leases : {};
    return { version: STATE_VERSION, networks: Array.isArray(o.networks) ? o.networks : [], vms: Array.isArray(o.vms) ? o.vms : [], routes, leases, forwards: Array.isArray(o.forwards) ? o.forwards : [], tor: o.tor, tees: Array.isArray(o.tees) ? o.tees : [], links: o.links };
  }

  /** Saves in order; resolves once the new state is durable. */
  save(state: StateFile): Promise<void> {
    const text = JSON.stringify(state, null, 2) + '\n';
    const next = this.chain.then(() => this.write(text));
    this.chain = next.catch(() => {});
    return next;
  }

  private async write(text: string): Promise<void> {
    const tmp = `${this.file}.tmp-${process.pid}`;
    const fh = await fs.promises.open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.promises.rename(tmp, this.file);
    const dh = await fs.promises.open(this.dir, 'r');
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  }
}
