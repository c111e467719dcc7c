/**
 * `mvnet events`: follows the daemon's events (`events.follow`): after the reply line, the
 * connection carries one JSON event per line until Ctrl-C. People get one line per event (time,
 * type, subject, detail); `--json` prints the events' JSON lines as they come, and nothing else.
 * A streaming call: no per-call timeout applies to it.
 */
import net from 'node:net';
import { Command } from 'commander';
import type { Ctx } from '../context.js';
import { CliError, reachError, requestId } from '../client.js';
import { EXIT, EXIT_NAMES, exitForRpcCode, type ExitCode } from '../exit-codes.js';
import { parseIntArg } from './net.js';
import { safeText } from '../text.js';
import type { MvnetEvent } from '../../daemon/control/api.js';

/** A line longer than this is not an event. */
const MAX_LINE = 1 << 20;

/** A failure of the follow, with the exit code it means; cli/main.ts prints it (as JSON under --json). */
class FollowError extends CliError {
  constructor(message: string, exit: ExitCode, rpcCode: number | null = null) {
    super(message, exit, EXIT_NAMES[exit], rpcCode);
  }
}

function collect(v: string, prev: string[]): string[] {
  return [...prev, v];
}

/** The subject and detail of an event's human line. */
export function describeEvent(e: MvnetEvent): [subject: string, detail: string] {
  switch (e.type) {
    case 'vm.attached':
      return [e.vm, `to ${e.net} (${e.kind} ${e.port})`];
    case 'vm.detached':
      return [e.vm, `from ${e.net}`];
    case 'vm.up':
      return [e.vm, e.detail];
    case 'vm.down':
      return [e.vm, `${e.state}: ${e.detail}`];
    case 'route.changed':
      return [e.vm, e.routeText];
    case 'route.failclosed':
      return [e.vm, `Tor traffic refused: ${e.reason}`];
    case 'route.recovered':
      return [e.vm, 'Tor is back'];
    case 'tor.up':
      return ['tor', 'ready'];
    case 'tor.down':
      return ['tor', e.reason];
    case 'tor.warning':
      return ['tor', e.message];
    case 'link.up':
      return [e.link, `${e.kind} established`];
    case 'link.down':
      return [e.link, `${e.kind} ${e.state}`];
    case 'limit.hit':
      return [e.vm ?? e.capture ?? '-', `${e.limit} +${e.count} (total ${e.total})`];
    case 'events.overflow':
      return ['-', e.detail];
  }
}

/** One event for people; the daemon's fields (Tor's reasons and warnings above all) made safe for a terminal. */
export function humanLine(e: MvnetEvent): string {
  const [subject, detail] = describeEvent(e);
  return safeText(`${e.time.replace(/\.\d+Z$/, 'Z')}  ${e.type.padEnd(16)}  ${subject.padEnd(12)}  ${detail}`);
}

interface Opts {
  type: string[];
  backlog?: number;
  since?: number;
}

export function eventsCommand(ctx: Ctx): Command {
  return new Command('events')
    .description('follow the daemon\'s events (attach/detach, VM up/down, routes, fail closed, Tor, links, limits) until Ctrl-C')
    .option('--type <prefix>', 'only events whose type begins with PREFIX (vm., route.failclosed, tor, link, limit); repeat for several', collect, [])
    .option('--backlog <n>', 'first print the last N such events the daemon kept', parseIntArg('--backlog', 0, 1000))
    .option('--since <seq>', 'first print the kept events after this seq (resume after a disconnect)', parseIntArg('--since', 0, Number.MAX_SAFE_INTEGER))
    .action(async (o: Opts) => {
      const params = { ...(o.type.length > 0 ? { types: o.type } : {}), ...(o.backlog !== undefined ? { backlog: o.backlog } : {}), ...(o.since !== undefined ? { since: o.since } : {}) };
      // Pipes and files get stdout synchronously on Linux, so the events written before a failure are out before main exits.
      await follow(ctx.socket(), params, ctx.json());
    });
}

function follow(socket: string, params: unknown, json: boolean): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const conn = net.createConnection({ path: socket });
    let buf = '';
    let replied = false;
    let stopped = false;
    let overflow = false;
    const finish = (err?: Error): void => {
      if (stopped) return;
      stopped = true;
      process.off('SIGINT', onSigint);
      process.off('SIGTERM', onSigint);
      conn.destroy();
      if (err !== undefined) reject(err);
      else resolve();
    };
    const onSigint = (): void => finish();
    process.on('SIGINT', onSigint);
    process.on('SIGTERM', onSigint);
    // A reader that went away (`mvnet events | head`) ends the follow, quietly.
    process.stdout.on('error', () => finish());
    conn.setEncoding('utf8');
    conn.once('connect', () => conn.write(JSON.stringify({ jsonrpc: '2.0', id: requestId(), method: 'events.follow', params }) + '\n'));
    conn.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while (!stopped && (nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!replied) {
          replied = true;
          let res: { result?: unknown; error?: { message: string; code?: number } };
          try {
            res = JSON.parse(line) as typeof res;
          } catch {
            return finish(new FollowError(`the daemon on ${socket} sent an answer that is not JSON`, EXIT.ERROR));
          }
          // The daemon refuses only the parameters (a type prefix no event has).
          if (res.error !== undefined) return finish(new FollowError(res.error.message, res.error.code === -32602 ? EXIT.USAGE : exitForRpcCode(res.error.code ?? 0), res.error.code ?? null));
          continue;
        }
        let e: MvnetEvent;
        try {
          e = JSON.parse(line) as MvnetEvent;
        } catch {
          return finish(new FollowError(`the daemon on ${socket} sent an event that is not JSON`, EXIT.ERROR));
        }
        if (e.type === 'events.overflow') overflow = true;
        process.stdout.write(json ? line + '\n' : humanLine(e) + '\n');
      }
      if (buf.length > MAX_LINE) finish(new FollowError(`the daemon on ${socket} sent a line longer than ${MAX_LINE} bytes`, EXIT.ERROR));
    });
    conn.on('error', (e: NodeJS.ErrnoException) =>
      finish(replied ? new FollowError(`the event stream from ${socket} failed: ${e.message}`, EXIT.ERROR) : new FollowError(reachError(socket, e).message, EXIT.UNREACHABLE)),
    );
    conn.on('close', () => {
      if (!replied) finish(new FollowError(`the daemon on ${socket} closed the connection without answering`, EXIT.UNREACHABLE));
      else if (overflow) finish(new FollowError('this follower read too slowly and was disconnected by the daemon (see the last event); follow again with --since SEQ', EXIT.ERROR));
      else finish(new FollowError(`the daemon on ${socket} ended the event stream (it stopped)`, EXIT.ERROR));
    });
  });
}
