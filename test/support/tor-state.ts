/** Waiting on a TorManager's state in tests. */
import type { TorManager, TorState } from '../../daemon/tor/manager.js';

/** Resolves with the first state (current or future) that satisfies `pred`; rejects after `timeoutMs` with the state then. */
export function untilTorState(m: TorManager, pred: (s: TorState) => boolean, timeoutMs: number, what: string): Promise<TorState> {
  return new Promise<TorState>((resolve, reject) => {
    const check = (s: TorState): void => {
      if (!pred(s)) return;
      clearTimeout(t);
      m.off('state', check);
      resolve(s);
    };
    const t = setTimeout(() => {
      m.off('state', check);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; state ${JSON.stringify(m.state())}`));
    }, timeoutMs);
    m.on('state', check);
    check(m.state());
  });
}
