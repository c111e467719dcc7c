/**
 * `mvnet daemon --config FILE`: a JSON file. Command-line flags win over the file, the file over
 * the defaults. Unknown keys are an error, so a typo does not silently weaken a setting.
 */
import fs from 'node:fs';
import { UserError } from './errors.js';

export interface DaemonConfig {
  stateDir: string;
  socket: string;
  /** pino level. */
  logLevel: string;
  /** Group allowed to use the control socket (its mode is 0660). */
  socketGroup?: string;
}

export const DEFAULTS: DaemonConfig = {
  stateDir: '/var/lib/mvnet',
  socket: '/run/mvnet/mvnet.sock',
  logLevel: 'info',
};

const KEYS = new Set(['stateDir', 'socket', 'logLevel', 'socketGroup']);
const LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

export function loadConfig(file: string | undefined, flags: Partial<DaemonConfig>): DaemonConfig {
  let fromFile: Partial<DaemonConfig> = {};
  if (file !== undefined) {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      throw new UserError(`cannot read config ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (e) {
      throw new UserError(`config ${file} is not valid JSON: ${(e as Error).message}`);
    }
    if (typeof data !== 'object' || data === null || Array.isArray(data)) throw new UserError(`config ${file} must be a JSON object`);
    for (const [k, v] of Object.entries(data)) {
      if (!KEYS.has(k)) throw new UserError(`config ${file}: unknown key ${JSON.stringify(k)} (known: ${[...KEYS].join(', ')})`);
      if (typeof v !== 'string' || v.length === 0) throw new UserError(`config ${file}: ${k} must be a non-empty string`);
    }
    fromFile = data as Partial<DaemonConfig>;
  }
  const cfg: DaemonConfig = { ...DEFAULTS, ...fromFile };
  for (const [k, v] of Object.entries(flags)) if (v !== undefined) (cfg as unknown as Record<string, unknown>)[k] = v;
  if (!LEVELS.has(cfg.logLevel)) throw new UserError(`logLevel must be one of ${[...LEVELS].join(', ')}`);
  if (!cfg.socket.startsWith('/')) throw new UserError(`socket must be an absolute path, got ${cfg.socket}`);
  if (!cfg.stateDir.startsWith('/')) throw new UserError(`stateDir must be an absolute path, got ${cfg.stateDir}`);
  return cfg;
}
