/**
 * The CLI's hook adapters (builder integrations), one folder each under cli/hook/: `mvnet`
 * (`mvnet hook`: its JSON config or an OCI runtime state) and `cni` (`mvnet-cni`). A new builder
 * integration is a folder exporting a HookAdapter, listed here, or an npm package that registers
 * one (`mvnet hook --plugin PKG --adapter NAME`).
 */
import { Registry, loadPlugins } from '../../plugins/registry.js';
import type { HookAdapter, HookIo } from '../../plugins/types.js';
import { mvnetHookAdapter } from './mvnet/index.js';
import { cniAdapter } from './cni/index.js';
import { readStdin } from './core.js';

export const BUILTIN_HOOK_ADAPTERS: readonly HookAdapter[] = [mvnetHookAdapter, cniAdapter];

/** A registry with the built-in adapters, then the packages' (which cannot replace them). */
export async function hookRegistry(packages: readonly string[] = []): Promise<Registry> {
  const r = new Registry();
  for (const a of BUILTIN_HOOK_ADAPTERS) r.registerHookAdapter(a, 'builtin');
  await loadPlugins(r, packages, { searchFrom: [process.cwd()] });
  return r;
}

/** This process's arguments, environment, stdin and stdout as a HookIo. */
export function processIo(args: readonly string[], socket: string): HookIo {
  return {
    args,
    env: process.env,
    socket,
    readStdin,
    write: (text) => {
      process.stdout.write(text);
    },
  };
}
