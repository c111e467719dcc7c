import fs from 'node:fs';

/** The package version, read once from package.json next to the source or dist tree. */
export function packageVersion(): string {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const p = JSON.parse(fs.readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (p.name === 'mvnet' && typeof p.version === 'string') return p.version;
    } catch {
      // try the next location
    }
  }
  return 'unknown';
}
