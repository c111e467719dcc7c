/**
 * Request/response helper for bench/stack.ts (run inside the bench's namespaces).
 *
 *   node dist/bench/stack-rr.js server HOST PORT
 *       Echoes every byte back (1-byte request → 1-byte response), with TCP_NODELAY; ends its
 *       side when the client ends. Prints "listening" when ready.
 *   node dist/bench/stack-rr.js rr HOST PORT SECONDS
 *       One connection, sequential 1-byte request / 1-byte response exchanges for SECONDS.
 *   node dist/bench/stack-rr.js crr HOST PORT SECONDS
 *       A new connection per exchange: connect, 1 byte each way, client closes first (so
 *       TIME-WAIT stays in the client's kernel), the next connect once the server's FIN is in.
 *
 * The clients print one JSON line: {"mode","n","seconds","rate","errors"}; rate = exchanges/s.
 */
import net from 'node:net';

const ONE = Buffer.from([0x2a]);

function server(host: string, port: number): void {
  const srv = net.createServer({ noDelay: true }, (s) => {
    s.on('data', (d: Buffer) => s.write(d));
    s.on('error', () => s.destroy());
  });
  srv.listen({ host, port, backlog: 4096 }, () => console.log('listening'));
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => process.exit(0));
}

function rr(host: string, port: number, seconds: number): Promise<object> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port, noDelay: true });
    let n = 0;
    let t0 = 0;
    let end = 0;
    s.once('error', reject);
    s.once('connect', () => {
      t0 = performance.now();
      end = t0 + seconds * 1000;
      s.write(ONE);
    });
    s.on('data', (d: Buffer) => {
      n += d.length;
      const now = performance.now();
      if (now >= end) {
        s.destroy();
        resolve({ mode: 'rr', n, seconds: (now - t0) / 1000, rate: n / ((now - t0) / 1000), errors: 0 });
        return;
      }
      s.write(ONE);
    });
  });
}

function crr(host: string, port: number, seconds: number): Promise<object> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const end = t0 + seconds * 1000;
    let n = 0;
    let errors = 0;
    const errorKinds: Record<string, number> = {};
    const next = (): void => {
      const now = performance.now();
      if (now >= end) {
        resolve({ mode: 'crr', n, seconds: (now - t0) / 1000, rate: n / ((now - t0) / 1000), errors, errorKinds });
        return;
      }
      let got = false;
      let done = false;
      const s = net.connect({ host, port, noDelay: true });
      const finish = (): void => {
        if (done) return;
        done = true;
        if (got) n++;
        setImmediate(next);
      };
      s.once('connect', () => s.write(ONE));
      s.once('data', () => {
        got = true;
        s.end();
      });
      s.on('error', (e: NodeJS.ErrnoException) => {
        errors++;
        const k = e.code ?? e.message;
        errorKinds[k] = (errorKinds[k] ?? 0) + 1;
        s.destroy();
        finish();
      });
      s.once('close', finish);
      // A stuck connection must not stall the measurement.
      s.setTimeout(5_000, () => s.destroy(new Error('timeout')));
    };
    next();
  });
}

async function main(): Promise<void> {
  const [mode, host, portS, secS] = process.argv.slice(2);
  const port = Number(portS);
  if (!host || !Number.isInteger(port)) throw new Error('usage: stack-rr.js server|rr|crr HOST PORT [SECONDS]');
  if (mode === 'server') return server(host, port);
  const seconds = Number(secS ?? 3);
  if (mode === 'rr') console.log(JSON.stringify(await rr(host, port, seconds)));
  else if (mode === 'crr') console.log(JSON.stringify(await crr(host, port, seconds)));
  else throw new Error(`unknown mode ${mode}`);
}

main().catch((e: unknown) => {
  console.error((e as Error).message);
  process.exit(1);
});
