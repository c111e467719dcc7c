/**
 * `mvnet daemon`: config → state lock → state → ports → control socket. Runs in the foreground
 * with JSON logs on stdout; SIGTERM/SIGINT stop it gracefully (devices are kept for the next
 * start); SIGHUP reloads the config file (the keys in config.ts RELOADABLE) and never stops it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Registry, loadPlugins } from '../plugins/registry.js';
import { builtinDrivers } from '../plugins/builtin.js';
import { configChanges, loadConfig, RELOADABLE, socketGroupId, type ConfigFlags, type DaemonConfig } from './config.js';
import { dirProblem, prepareVmSocketDir } from '../plugins/common/socket-path.js';
import { UserError } from './errors.js';
import { createLogger, LogSink, logFormat } from './log.js';
import { dropCapabilities, SdNotifier } from './service.js';
import { StateStore } from './state/store.js';
import { Daemon } from './daemon.js';
import { checkSocketFree, ControlServer } from './control/server.js';
import { methods, READ_ONLY_METHODS } from './control/methods.js';
import { packageVersion } from './version.js';
import { faults, setFaultReporter } from './errors.js';
import { fdSocketPath } from '../plugins/fd/pass.js';

export interface DaemonFlags {
  stateDir?: string;
  socket?: string;
  config?: string;
  logLevel?: string;
  /** `--host-loopback PORTS`. */
  hostLoopback?: string;
  /** `--log-format json|pretty` (default: pretty on a terminal, else JSON). */
  logFormat?: string;
  /** `--keep-caps`: keep every capability the process started with. */
  keepCaps?: boolean;
}

/** mkdir -p `dir` (mode 0700), with what is wrong in words when it cannot be (a file in the way, no permission). */
function makeOwnDir(dir: string, what: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new UserError(dirProblem(dir, e, what));
  }
}

/**
 * The control socket's directory is made (/run/mvnet under /run), its parent must exist: a
 * `--socket /no/such/dir/s.sock` is a typo, not a request to create /no/such.
 */
function checkSocketParent(socket: string): void {
  const parent = path.dirname(path.dirname(socket));
  let st: fs.Stats;
  try {
    st = fs.statSync(parent);
  } catch (e) {
    throw new UserError(`--socket ${socket}: ${dirProblem(parent, e)}`);
  }
  if (!st.isDirectory()) throw new UserError(`--socket ${socket}: ${parent} is not a directory`);
}

export async function runDaemon(flags: DaemonFlags): Promise<void> {
  const cfgFlags: ConfigFlags = { stateDir: flags.stateDir, socket: flags.socket, logLevel: flags.logLevel, hostLoopback: flags.hostLoopback, keepCaps: flags.keepCaps };
  let cfg: DaemonConfig = loadConfig(flags.config, cfgFlags);
  const format = logFormat(flags.logFormat);
  // Until a handler is installed SIGHUP would kill the process (`mvnet daemon &` dying with its terminal).
  let onHup: () => void = () => {};
  process.on('SIGHUP', () => onHup());
  // Plugins load before anything is touched: one that cannot be loaded stops the start (fail closed).
  const registry = new Registry(builtinDrivers);
  try {
    await loadPlugins(registry, cfg.plugins, flags.config !== undefined ? { searchFrom: [path.dirname(path.resolve(flags.config))] } : {});
  } catch (e) {
    throw new UserError(e instanceof Error ? e.message : String(e));
  }
  const sink = new LogSink(1, format === 'pretty');
  const log = createLogger(cfg.logLevel, sink);
  const sd = new SdNotifier(log);
  sd.notify({ STATUS: 'starting' });
  makeOwnDir(cfg.stateDir, '--state-dir');
  const store = new StateStore(cfg.stateDir);
  // Before anything is touched: a second daemon on this state, or on this socket, must change nothing.
  store.lock();
  checkSocketParent(cfg.socket);
  await checkSocketFree(cfg.socket);
  // Tee files go here and nowhere else; the daemon's own, like the state.
  makeOwnDir(cfg.captureDir, 'captureDir');
  try {
    prepareVmSocketDir(cfg.vmSocketDir, socketGroupId(cfg.socketGroup));
  } catch (e) {
    throw e instanceof UserError ? e : new UserError((e as Error).message);
  }
  const version = packageVersion();
  setFaultReporter((where, err, context) => log.error({ ...context, where, err }, 'data path exception (a bug); the frame or event is dropped'));
  const daemon = new Daemon(log, store, cfg, registry);
  sd.notify({ STATUS: 'restoring networks and VMs' });
  await daemon.restore();
  const control = new ControlServer({
    socket: cfg.socket,
    group: cfg.socketGroup,
    log,
    methods: methods(daemon, { socket: cfg.socket, stateDir: cfg.stateDir, version }),
    readOnly: READ_ONLY_METHODS,
  });
  try {
    await control.listen();
    // Next to the control socket, once it is ours: same owner and mode (plugins/fd/pass.ts).
    daemon.fdInbox.listen(fdSocketPath(cfg.socket), cfg.socket);
  } catch (e) {
    await control.close();
    await daemon.shutdown();
    throw e;
  }
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    sd.notify({ STOPPING: '1', STATUS: `stopping (${signal})` });
    void (async () => {
      // Each step runs even when an earlier one failed: a stop that hangs halfway leaves VMs without a daemon and no socket.
      const step = async (what: string, fn: () => unknown): Promise<void> => {
        try {
          await fn();
        } catch (err) {
          log.warn({ err: (err as Error).message }, `stopping: ${what} failed`);
        }
      };
      // Captures first: each writes its statistics and ends its connection, which control.close() lets out.
      await step('ending the captures', () => daemon.capture.close());
      await step('ending the event followers', () => daemon.events.bus.endFollowers());
      await step('closing the control socket', () => control.close());
      await step('closing the ports', () => daemon.shutdown());
      await step('removing the control socket', () => fs.rmSync(cfg.socket, { force: true }));
      log.info('stopped');
      await sink.drain();
      process.exit(0);
    })();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // systemd (ExecReload=kill -HUP) waits between RELOADING=1 and READY=1; every way out of a reload says READY again.
  onHup = () => {
    sd.reloading('reloading the config');
    reload();
    sd.notify({ READY: '1', STATUS: readyStatus() });
  };
  const readyStatus = (): string => `routing; control socket ${cfg.socket}`;
  const reload = (): void => {
    if (flags.config === undefined) {
      log.info({ signal: 'SIGHUP' }, 'no config file to reload (started without --config)');
      return;
    }
    let next: DaemonConfig;
    try {
      next = loadConfig(flags.config, cfgFlags);
    } catch (e) {
      log.warn({ signal: 'SIGHUP', err: (e as Error).message }, 'config not reloaded; the running one is kept');
      return;
    }
    const changes = configChanges(cfg, next);
    const applied = changes.filter((c) => RELOADABLE.has(c.key));
    const needRestart = changes.filter((c) => !RELOADABLE.has(c.key)).map((c) => c.key);
    try {
      daemon.reloadConfig(next);
    } catch (e) {
      log.warn({ signal: 'SIGHUP', err: (e as Error).message }, 'config not reloaded; the running one is kept');
      return;
    }
    // Logged at whichever of the old and new levels shows it (info -> warn still tells what changed).
    const report = (): void => log.info({ signal: 'SIGHUP', changed: applied, ...(needRestart.length > 0 ? { needRestart } : {}) }, 'config reloaded');
    const before = log.isLevelEnabled('info');
    if (before) report();
    log.level = next.logLevel;
    if (!before) report();
    // What is not applied stays as it runs, so the next reload reports it again.
    cfg = { ...cfg, logLevel: next.logLevel, limits: next.limits, dns: next.dns, metrics: next.metrics, notify: next.notify };
    if (needRestart.length > 0) log.warn({ keys: needRestart }, 'these config changes take effect only after a restart');
  };
  process.on('uncaughtException', (err) => {
    // A bug must not take every VM's network down silently; log it loudly and keep routing.
    faults.uncaught++;
    log.fatal({ err }, 'uncaught exception');
  });
  // After start nothing needs more than these (tor-ops spawns tor as its own user with them).
  if (!cfg.keepCaps) dropCapabilities(log);
  log.info({ socket: cfg.socket, stateDir: cfg.stateDir, version, plugins: registry.plugins() }, 'ready');
  // Only now: the control socket accepts (listen() has returned), so a unit ordered After= us can use it.
  sd.notify({ READY: '1', STATUS: readyStatus(), MAINPID: String(process.pid) });
}
