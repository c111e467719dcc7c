import { Command } from 'commander';
import type { Ctx } from '../context.js';
import { CliError } from '../client.js';
import { EXIT } from '../exit-codes.js';
import { print } from '../output.js';

/** Loaded when a key command runs: node:crypto costs every other command start-up time. */
const keys = (): Promise<typeof import('../../daemon/links/keys.js')> => import('../../daemon/links/keys.js');

export const DEFAULT_KEY_FILE = 'mvnet.key';

/** The errno code of a failed fs call, if it has one. */
function code(e: unknown): string | undefined {
  return e instanceof Error && 'code' in e && typeof e.code === 'string' ? e.code : undefined;
}

/**
 * `mvnet key`: link keys (X25519, base64 as WireGuard's). The private key goes only to a new
 * file of mode 0600; only public keys are ever printed. Local: no daemon involved.
 */
export function keyCommand(ctx: Ctx): Command {
  const key = new Command('key').description('X25519 keys for encrypted links (private keys stay in files, mode 0600)');
  key
    .command('generate')
    .description('write a new private key to a new file (mode 0600) and print its public key')
    .option('--out <file>', `the private key file; never overwritten (default ./${DEFAULT_KEY_FILE})`)
    .action(async (o: { out?: string }) => {
      const { generateKeyPair, keyToBase64, writePrivateKeyFile } = await keys();
      const file = o.out ?? DEFAULT_KEY_FILE;
      const k = generateKeyPair();
      try {
        writePrivateKeyFile(file, k.privateKey);
      } catch (e) {
        if (code(e) === 'EEXIST' || code(e) === 'ELOOP') throw new CliError(`${file} exists: refusing to overwrite it (a key file is never replaced)`, EXIT.CONFLICT);
        throw e;
      }
      const pub = keyToBase64(k.publicKey);
      print(ctx.json(), { publicKey: pub, file }, () => pub);
    });
  key
    .command('show <file>')
    .description('print the public key of a private key file (the key to give to peers)')
    .action(async (file: string) => {
      const { keyPairFromPrivate, keyToBase64, readPrivateKeyFile } = await keys();
      let priv: ReturnType<typeof readPrivateKeyFile>;
      try {
        priv = readPrivateKeyFile(file);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') throw new CliError(`no key file ${file} (make one with mvnet key generate --out ${file})`, EXIT.NOT_FOUND);
        if (code === 'EACCES') throw new CliError(`permission denied reading ${file}`);
        if (code === 'EISDIR') throw new CliError(`${file} is a directory, not a key file`);
        throw e;
      }
      const pub = keyToBase64(keyPairFromPrivate(priv).publicKey);
      print(ctx.json(), { publicKey: pub, file }, () => pub);
    });
  return key;
}
