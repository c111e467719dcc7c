/** `vm attach --wait`: until the VM's device is up (QEMU connected to a listening socket, ...). */
import type { Ctx } from '../context.js';
import type { VmInfo } from '../../daemon/control/api.js';
import { CliError } from '../client.js';
import { commandProgress, pollUntil } from '../progress.js';

/** Polls `vm.list` (short calls) until `name`'s port is up; throws after `timeoutMs` with the port's last state. */
export async function waitVmUp(ctx: Ctx, name: string, timeoutMs: number): Promise<VmInfo> {
  const progress = commandProgress(ctx.json());
  const t0 = Date.now();
  let last: VmInfo | undefined;
  const up = await pollUntil(
    async () => {
      last = (await ctx.call<VmInfo[]>('vm.list')).find((v) => v.name === name);
      if (last === undefined) throw new CliError(`${name} was detached while waiting for it`);
      if (last.port.state === 'up') return last;
      progress.update(`${name}: ${last.port.state} (${last.port.detail}), ${Math.floor((Date.now() - t0) / 1000)} s`);
      return undefined;
    },
    { intervalMs: 200, timeoutMs },
  );
  progress.done();
  if (up !== undefined) return up;
  throw new CliError(`${name} did not come up within ${Math.round(timeoutMs / 1000)} s: ${last?.port.state ?? 'unknown'} (${last?.port.detail ?? 'no status'})`);
}
