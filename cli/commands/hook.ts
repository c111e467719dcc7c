/**
 * `mvnet hook [--adapter NAME] [--plugin PKG]... [ARGS...]`: runs a hook adapter (a builder
 * integration, cli/hook/adapters.ts). The default adapter, `mvnet`, is the CNI-like hook for
 * image builders and OCI runtimes (cli/hook/mvnet/).
 */
import { Command } from 'commander';
import type { Ctx } from '../context.js';


interface HookOpts {
  adapter: string;
  plugin: string[];
}

export function hookCommand(ctx: Ctx): Command {
  return new Command('hook')
    .description('hooks for image builders and runtimes: ADD, DEL, CHECK, VERSION (JSON config on stdin, JSON result on stdout)')
    .argument('[args...]', 'for the mvnet adapter: ADD | DEL | CHECK | VERSION (else MVNET_COMMAND)')
    .option('--adapter <name>', 'the hook adapter: mvnet (default), cni, or one a --plugin package registers', 'mvnet')
    .option('--plugin <package>', 'load an npm package (name or absolute path) that registers hook adapters; repeatable', (v: string, prev: string[]) => [...prev, v], [])
    .action(async (args: string[], o: HookOpts) => {
      // Loaded here: the adapters and the plugin registry are for `mvnet hook` alone.
      const { hookRegistry, processIo } = await import('../hook/adapters.js');
      let registry;
      try {
        registry = await hookRegistry(o.plugin);
      } catch (e) {
        process.stdout.write(JSON.stringify({ code: 4, msg: e instanceof Error ? e.message : String(e) }) + '\n');
        process.exitCode = 1;
        return;
      }
      const a = registry.hookAdapter(o.adapter);
      if (a === undefined) {
        process.stdout.write(JSON.stringify({ code: 4, msg: `no hook adapter ${JSON.stringify(o.adapter)}: ${registry.hookAdapterNames().join(', ')}` }) + '\n');
        process.exitCode = 1;
        return;
      }
      process.exitCode = await a.adapter.run(processIo(args, ctx.socket()));
    });
}
