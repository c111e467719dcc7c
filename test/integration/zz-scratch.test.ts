import { it } from 'vitest';
import { startBackend, VhostFrontend } from '../support/vhost-frontend.js';
it('scratch', async () => {
  const b = startBackend();
  const t0 = Date.now();
  const fe = VhostFrontend.connect(b.path);
  await fe.start();
  console.log('a', Date.now() - t0);
  fe.reconnect(b.path);
  await fe.start();
  console.log('b', Date.now() - t0);
  fe.close();
  await b.waitState('listening').catch((e) => console.log(String(e)));
  console.log('c', Date.now() - t0, b.states);
  b.close();
});
