import fs from 'node:fs';

/**
 * Removes a socket file left by a previous run so that bind() works again. Refuses to remove
 * anything that is not a socket: a typo must not delete a user's file.
 */
export function removeStaleSocket(path: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new Error(`${path} exists and is not a socket`);
  fs.rmSync(path, { force: true });
}
