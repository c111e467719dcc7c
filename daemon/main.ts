/**
 * `mvnet daemon`: config → state → ports → control socket. Runs in the foreground with JSON logs
 * on stdout; SIGTERM/SIGINT stop it gracefully (devices are kept for the next start).
 */
import fs from 'node:fs';
import { loadConfig, socketGroupId, type DaemonConfig } from './config.js';
import { prepareVmSocketDir } from '../plugins/common/socket-path.js';
import { UserError } from './errors.js';
import { createLogger } from './log.js';
import { StateStore } from './state/store.js';
import { Daemon } from './daemon.js';
import { ControlServer } from './control/server.js';
import { methods } from './control/methods.js';
import { packageVersion } from './version.js';
import { fdSocketPath } from '../plugins/fd/pass.js';

export interface DaemonFlags {
  stateDir?: string;
  socket?: string;
  config?: string;
  logLevel?: string;
  /** `--host-loopback PORTS`. */
  hostLoopback?: string;
}

export async function runDaemon(flags: DaemonFlags): Promise<void> {
  const cfg: DaemonConfig = loadConfig(flags.config, { stateDir: flags.stateDir, socket: flags.socket, logLevel: flags.logLevel, hostLoopback: flags.hostLoopback });
  const log = createLogger(cfg.logLevel);
  fs.mkdirSync(cfg.stateDir, { recursive: true, mode: 0o700 });
  try {
    prepareVmSocketDir(cfg.vmSocketDir, socketGroupId(cfg.socketGroup));
  } catch (e) {
    throw e instanceof UserError ? e : new UserError((e as Error).message);
  }
  const version = packageVersion();
  const daemon = new Daemon(log, new StateStore(cfg.stateDir), cfg);
  await daemon.restore();
  const control = new ControlServer({
    socket: cfg.socket,
    group: cfg.socketGroup,
    log,
    methods: methods(daemon, { socket: cfg.socket, stateDir: cfg.stateDir, version }),
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
    void (async () => {
      await control.close();
      await daemon.shutdown();
      fs.rmSync(cfg.socket, { force: true });
      log.info('stopped');
      log.flush();
      process.exit(0);
    })();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('uncaughtException', (err) => {
    // A bug must not take every VM's network down silently; log it loudly and keep routing.
    log.fatal({ err }, 'uncaught exception');
  });
  log.info({ socket: cfg.socket, stateDir: cfg.stateDir, version }, 'ready');
}
