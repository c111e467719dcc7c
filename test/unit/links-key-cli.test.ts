/** `mvnet key generate/show` (cli/commands/key.ts), driven in process: no daemon is involved. */
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { keyCommand } from '../../cli/commands/key.js';
import { keyFromBase64, keyPairFromPrivate, privateKeyFromRaw } from '../../daemon/links/keys.js';
import type { Ctx } from '../../cli/context.js';

const dir = mkdtempSync(join(tmpdir(), 'mvnet-keycli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function run(json: boolean, ...args: string[]): Promise<{ out: string; error: string | null }> {
  const ctx: Ctx = { socket: () => '/nonexistent', json: () => json, quiet: () => false, timeoutMs: () => 10_000, call: () => Promise.reject(new Error('no daemon')) };
  const program = new Command('mvnet').exitOverride().addCommand(keyCommand(ctx));
  let out = '';
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => {
    out += String(s);
    return true;
  });
  try {
    await program.parseAsync(['node', 'mvnet', 'key', ...args]);
    return { out, error: null };
  } catch (e) {
    return { out, error: e instanceof Error ? e.message : String(e) };
  } finally {
    spy.mockRestore();
  }
}

describe('mvnet key', () => {
  it('generate writes a 0600 file and prints only the public key; show prints the same', async () => {
    const f = join(dir, 'a.key');
    const g = await run(false, 'generate', '--out', f);
    expect(g.error).toBe(null);
    const pub = g.out.trim();
    expect(keyFromBase64(pub)).not.toBe(null);
    expect(statSync(f).mode & 0o777).toBe(0o600);
    const priv = readFileSync(f, 'utf8').trim();
    expect(g.out).not.toContain(priv);
    expect(keyPairFromPrivate(privateKeyFromRaw(keyFromBase64(priv)!)).publicKey.toString('base64')).toBe(pub);
    const s = await run(false, 'show', f);
    expect(s.out.trim()).toBe(pub);
    expect(s.out).not.toContain(priv);
    expect(JSON.parse((await run(true, 'show', f)).out)).toEqual({ publicKey: pub, file: f });
  });

  it('refuses to overwrite a file, and to show a key others may read', async () => {
    const f = join(dir, 'b.key');
    writeFileSync(f, 'precious\n', { mode: 0o600 });
    const g = await run(false, 'generate', '--out', f);
    expect(g.error).toMatch(/exists: refusing to overwrite/);
    expect(g.out).toBe('');
    expect(readFileSync(f, 'utf8')).toBe('precious\n');
    const h = join(dir, 'c.key');
    await run(false, 'generate', '--out', h);
    const priv = readFileSync(h, 'utf8').trim();
    chmodSync(h, 0o640);
    const s = await run(false, 'show', h);
    expect(s.error).toMatch(/mode 0640.*chmod 600/);
    expect(`${s.out}${s.error}`).not.toContain(priv);
  });

  it('show of a file that is not there says so (not found), not a raw ENOENT', async () => {
    const f = join(dir, 'missing.key');
    const s = await run(false, 'show', f);
    expect(s.error).toBe(`no key file ${f} (make one with mvnet key generate --out ${f})`);
  });
});
