import { fstatSync } from 'node:fs';
import net from 'node:net';
import { isatty } from 'node:tty';
import type { Writable } from 'node:stream';
import { Command } from 'commander';
import type { Ctx } from '../context.js';
import { print, table } from '../output.js';
import { CliError, UsageError } from '../client.js';
import { parseIntArg } from './net.js';
import type { CaptureCounters, CapturePointInfo, StatusInfo } from '../../daemon/control/api.js';
import { capturePlan, parsePositive, type CaptureOpts, type CapturePlan } from '../capture/args.js';
import { openCapture } from '../capture/stream.js';
import { BLOCK_EPB, BlockSplitter, PcapngStreamError, timestampNs, type Block } from '../capture/pcapng-reader.js';
import { CaptureFiles, checkOutput } from '../capture/ring-files.js';
import { CaptureTally, summaryLine } from '../capture/tally.js';
import { describeFrame, packetLine } from '../capture/decode.js';
import { Progress } from '../progress.js';

function collect(v: string, prev: string[]): string[] {
  return [...prev, v];
}

/**
 * stdout for the packets: a pipe or socket gets a non-blocking handle of its own, so that a
 * reader that stops reading stalls only the capture (backpressure to the daemon, which counts
 * drops), never the signal handling; a file or terminal keeps Node's blocking stdout.
 */
function stdoutSink(): { stream: Writable; own: boolean } {
  const st = fstatSync(1);
  // process.stdout must then never be touched: it would open fd 1 a second time (EEXIST).
  if (st.isFIFO() || st.isSocket()) return { stream: new net.Socket({ fd: 1, readable: false, writable: true }), own: true };
  return { stream: process.stdout, own: false };
}

/** Runs one capture to its end; resolves with the exit code. */
async function runCapture(ctx: Ctx, plan: CapturePlan): Promise<number> {
  const toFile = plan.write !== undefined && plan.write !== '-' ? plan.write : undefined;
  if (toFile !== undefined) {
    try {
      checkOutput(toFile);
    } catch (e) {
      throw new CliError((e as Error).message);
    }
  }
  let files: CaptureFiles | undefined = undefined;
  const sink = toFile !== undefined ? undefined : stdoutSink();
  const out = sink?.stream;
  const pcapOut = plan.write === '-';
  const json = ctx.json();

  let signals = 0;
  let conn: net.Socket | undefined = undefined;
  /** Its 'data' handler is on: resuming it no longer loses bytes. */
  let attached = false;
  let waitingDrain = false;
  let stopping = false;
  /** The reader of stdout went away (EPIPE): go on only to collect the daemon's counters. */
  let outGone = false;
  let localDrops = 0;
  let streamError: Error | undefined;

  /** The capture's counters just before the CLI stopped it, in case no statistics block comes. */
  let lastCounters: CaptureCounters | undefined;
  let captureId: string | undefined = undefined;
  const halfClose = (): void => {
    // Half-close: the daemon ends the capture, sends its statistics and closes its side.
    conn?.end();
    // Read on whatever the output does, so the statistics get through.
    if (attached) conn?.resume();
  };
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    if (captureId === undefined) return halfClose();
    // Bounded: a daemon that does not answer must not keep the capture from stopping.
    let t: NodeJS.Timeout | undefined;
    Promise.race([ctx.call<StatusInfo>('daemon.status'), new Promise<undefined>((r) => (t = setTimeout(() => r(undefined), 1000)))])
      .then((s) => {
        if (s !== undefined) lastCounters = s.captures?.find((c) => c.id === captureId)?.counters;
      })
      .catch(() => undefined)
      .finally(() => {
        clearTimeout(t);
        halfClose();
      });
  };
  const onSignal = (): void => {
    signals++;
    if (signals > 1) {
      // A second Ctrl-C: do not wait for the daemon.
      conn?.destroy();
      process.exit(130);
    }
    stop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  out?.on('error', (e: NodeJS.ErrnoException) => {
    outGone = true;
    if (e.code !== 'EPIPE') streamError ??= new CliError(`writing to stdout: ${e.message}`);
    stop();
  });

  const opened = await openCapture(ctx.socket(), plan.params);
  // The file is opened (truncated) only once the daemon accepted the capture.
  if (toFile !== undefined) {
    try {
      files = new CaptureFiles(toFile, plan.ring);
    } catch (e) {
      opened.conn.destroy();
      throw new CliError((e as Error).message);
    }
  }
  conn = opened.conn;
  captureId = opened.reply.id;
  // A signal while the daemon was still answering.
  if (stopping) conn.end();
  // Like tcpdump's 'listening on': the capture runs from here on.
  if (!json) process.stderr.write(`capturing on ${opened.reply.points.join(', ')}\n`);

  const tally = new CaptureTally();
  const live = liveCounters(ctx, json, toFile !== undefined || pcapOut, () => tally.packets, () => captureId);
  const splitter = new BlockSplitter();
  const count = plan.params.count;
  let timer: NodeJS.Timeout | undefined;
  // The daemon ends the capture at its duration; this only guards against one that does not.
  if (plan.params.durationSec !== undefined) timer = setTimeout(stop, plan.params.durationSec * 1000 + 5000);

  const humanLines = (blocks: Block[]): string => {
    let text = '';
    for (const b of blocks) {
      const p = tally.onBlock(b);
      if (p === undefined) continue;
      const iface = tally.interfaces[p.interfaceId];
      const link = iface?.link ?? 'ether';
      const ns = timestampNs(iface, p.timestamp);
      const point = tally.pointName(p.interfaceId);
      if (json) {
        const ms = Number(ns / 1_000_000n);
        text +=
          JSON.stringify({
            time: new Date(ms).toISOString(),
            timeNs: ns.toString(),
            point,
            direction: p.direction ?? null,
            length: p.originalLength,
            captured: p.data.length,
            summary: describeFrame(p.data, link),
            ...(p.comment !== undefined ? { comment: p.comment } : {}),
          }) + '\n';
      } else {
        text += packetLine({ timeNs: ns, point, direction: p.direction, length: p.originalLength, data: p.data, link, comment: p.comment }) + '\n';
      }
    }
    return text;
  };

  const onChunk = (chunk: Buffer): void => {
    let blocks: Block[];
    try {
      blocks = splitter.push(chunk);
    } catch (e) {
      streamError ??= e instanceof PcapngStreamError ? new CliError(`the daemon sent a broken capture stream: ${e.message}`) : (e as Error);
      conn!.destroy();
      return;
    }
    if (blocks.length === 0) return;
    if (files) {
      for (const b of blocks) tally.onBlock(b, false);
      try {
        files.write(blocks);
      } catch (e) {
        streamError ??= new CliError(`writing ${plan.write}: ${(e as Error).message}`);
        stop();
      }
    } else if (out) {
      // Once stopping, a stuck reader must not hold back the daemon's statistics: what cannot
      // be written is counted as dropped.
      if (outGone || (stopping && out.writableNeedDrain)) {
        for (const b of blocks) {
          tally.onBlock(b, false);
          if (b.type === BLOCK_EPB) localDrops++;
        }
      } else {
        let ok: boolean;
        if (pcapOut) {
          for (const b of blocks) tally.onBlock(b, false);
          ok = out.write(blocks.length === 1 ? blocks[0]!.bytes : Buffer.concat(blocks.map((b) => b.bytes)));
        } else {
          const text = humanLines(blocks);
          ok = text === '' || out.write(text);
        }
        if (!ok && !stopping && !waitingDrain) {
          // Backpressure: the daemon sees a slow reader and drops (and counts) capture packets.
          waitingDrain = true;
          conn!.pause();
          out.once('drain', () => {
            waitingDrain = false;
            conn!.resume();
          });
        }
      }
    }
    if (count !== undefined && tally.packets >= count) stop();
  };

  return new Promise<number>((resolve) => {
    const c = opened.conn;
    let ended = false;
    const finish = (): void => {
      if (ended) return;
      ended = true;
      if (timer) clearTimeout(timer);
      live.stop();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      files?.close();
      const summary = tally.summary(localDrops, lastCounters);
      const report = (): void => {
        process.stderr.write(
          json
            ? JSON.stringify({ ...summary, ...(files ? { files: files.files } : {}) }) + '\n'
            : summaryLine(summary) + '\n',
        );
        if (streamError) {
          process.stderr.write(`mvnet: ${streamError.message}\n`);
          resolve(1);
        } else if (!summary.complete && !summary.countersFromStatus) {
          process.stderr.write('mvnet: the capture ended without the daemon\'s statistics (the connection broke)\n');
          resolve(1);
        } else resolve(0);
      };
      if (!out || outGone || !sink?.own) {
        report();
        return;
      }
      // Give a reader that still reads a moment to take the rest; one that does not gets cut off.
      const t = setTimeout(report, 2000);
      out.end(() => {
        clearTimeout(t);
        report();
      });
    };
    c.on('data', onChunk);
    c.on('end', finish);
    c.on('close', finish);
    c.on('error', (e) => {
      streamError ??= new CliError(`the capture connection failed: ${e.message}`);
    });
    attached = true;
    if (opened.rest.length > 0) onChunk(opened.rest);
    if (!waitingDrain) c.resume();
  });
}

/**
 * While a capture runs on a terminal and its packets go elsewhere (a file, a pcap pipe), a line
 * on stderr counts them: captured here, and dropped by the daemon (from short `daemon.status` calls).
 */
function liveCounters(ctx: Ctx, json: boolean, packetsElsewhere: boolean, captured: () => number, id: () => string | undefined): { stop(): void } {
  // fd 1 is checked with isatty: process.stdout must not be opened next to the capture's own handle of it.
  if (json || process.stderr.isTTY !== true || (!packetsElsewhere && isatty(1))) return { stop: () => undefined };
  const bar = new Progress(process.stderr);
  let dropped = 0;
  let asking = false;
  const draw = (): void => bar.update(`captured ${captured()} packets, dropped ${dropped}`);
  const t = setInterval(() => {
    draw();
    if (asking || id() === undefined) return;
    asking = true;
    ctx
      .call<StatusInfo>('daemon.status')
      .then((s) => {
        dropped = s.captures?.find((c) => c.id === id())?.counters.dropped ?? dropped;
      })
      .catch(() => undefined)
      .finally(() => {
        asking = false;
      });
  }, 500);
  t.unref();
  return {
    stop: () => {
      clearInterval(t);
      bar.done();
    },
  };
}

export function captureCommand(ctx: Ctx): Command {
  return new Command('capture')
    .description('capture packets of a VM, a network or a capture point, as pcapng or one line per packet')
    .argument('[vm-and-filter...]', 'the VM (unless --net/--point), then a capture filter (tcpdump syntax subset)')
    .option('--net <name>', "a network: each frame once")
    .option('--point <name>', 'a capture point (see --list); repeat for several', collect, [])
    .option('--list', 'list the capture points')
    .option('-w, --write <file>', "write pcapng to FILE ('-': stdout), by this process")
    .option('-c, --count <n>', 'stop after N packets', parseIntArg('-c', 1, 2 ** 31 - 1))
    .option('--duration <s>', 'stop after S seconds', parseIntArg('--duration', 1, 31_536_000))
    .option('--snaplen <n>', 'bytes kept of each packet (0: all)', parseIntArg('--snaplen', 0, 262_144))
    .option('--ring <n>', 'with -w FILE and --size: keep N files, FILE the newest, then FILE.1 … FILE.(N-1)', parseIntArg('--ring', 1, 100_000))
    .option('--size <mb>', 'with --ring: begin the next file before one would exceed MB (2^20 bytes)', parsePositive('--size', 1_000_000))
    .option('--drops', "add the 'drops' point: frames the switch and the gateway dropped, with the reason")
    .action(async (args: string[], o: CaptureOpts) => {
      if (o.list === true) {
        if (args.length > 0 || o.net !== undefined || (o.point ?? []).length > 0 || o.write !== undefined) throw new UsageError('--list takes no VM, filter or other options');
        const pts = await ctx.call<CapturePointInfo[]>('capture.points');
        print(ctx.json(), pts, () => (pts.length === 0 ? 'no capture points' : table(['POINT', 'KIND', 'LINK', 'DESCRIPTION'], pts.map((p) => [p.name, p.kind, p.link, p.description]))));
        return;
      }
      const plan = capturePlan(args, o);
      const code = await runCapture(ctx, plan);
      process.exit(code);
    });
}
