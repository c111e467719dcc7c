/** `--netns NAME` is `ip netns`'s /run/netns/NAME and nothing else: no path tricks in a name. */
import { describe, expect, it } from 'vitest';
import { netnsPath } from '../../plugins/native/index.js';

describe('netnsPath', () => {
  it('maps a name to /run/netns/NAME and keeps an absolute path', () => {
    expect(netnsPath('vm1')).toBe('/run/netns/vm1');
    expect(netnsPath('a.b_c-d')).toBe('/run/netns/a.b_c-d');
    expect(netnsPath('/proc/123/ns/net')).toBe('/proc/123/ns/net');
  });

  it.each(['..', '.', 'a/b', '../etc', 'x y', '', 'x\0y', 'n\n'])('refuses the name %j', (name) => {
    expect(() => netnsPath(name)).toThrow(/invalid network namespace name/);
  });

  it('refuses an absolute path with a NUL in it', () => {
    expect(() => netnsPath('/run/netns/a\0/../../x')).toThrow(/invalid network namespace path/);
  });
});
