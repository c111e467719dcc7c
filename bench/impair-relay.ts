/**
 * The netem-like relay program (loss, delay, reordering with netem's correlated random, per
 * direction) between two interfaces, run with `node FILE ADDON A_IF B_IF IMPAIRMENT_JSON` in the
 * namespace holding both: frames A→B get the impairment's `toVm` direction, B→A `fromVm`. One
 * copy for bench/lossy.ts and test/support/stack-impair.ts (test/ is not built, bench/ is).
 */
export const RELAY_JS = String.raw`
'use strict';
const [addonPath, aIf, bIf, impStr] = process.argv.slice(2);
const imp = JSON.parse(impStr);
const addon = require(addonPath);
const MAX = 65536;
function direction() {
  return { frames: 0, dropped: 0, immediate: 0, delayed: 0, writeRejected: 0, last: Math.random(), queue: [], timer: null };
}
const dirs = { toVm: direction(), fromVm: direction() };
function crandom(d) {
  const v = (1 - imp.correlation) * Math.random() + imp.correlation * d.last;
  d.last = v;
  return v;
}
function out(dev, d, frames) {
  if (frames.length === 0) return;
  const n = dev.write(frames, frames.length);
  d.writeRejected += frames.length - n;
}
function pump(d, dev) {
  d.timer = null;
  const now = performance.now();
  const due = [];
  while (d.queue.length > 0 && d.queue[0].at <= now) due.push(d.queue.shift().f);
  out(dev, d, due);
  if (d.queue.length > 0) d.timer = setTimeout(() => pump(d, dev), Math.max(0, d.queue[0].at - performance.now()));
}
function relay(src, dst, d) {
  return (count) => {
    const now = performance.now();
    const immediate = [];
    for (let i = 0; i < count; i++) {
      const len = src.lengths[i];
      if (len > MAX) continue;
      d.frames++;
      if (Math.random() < imp.loss) { d.dropped++; continue; }
      const f = Buffer.from(src.buffer.subarray(i * MAX, i * MAX + len));
      if (crandom(d) < imp.reorder) { d.immediate++; immediate.push(f); continue; }
      d.delayed++;
      d.queue.push({ at: now + imp.delayMs, f });
    }
    out(dst, d, immediate);
    if (d.queue.length > 0 && d.timer === null) d.timer = setTimeout(() => pump(d, dst), Math.max(0, d.queue[0].at - performance.now()));
  };
}
function device(fd, onRead) {
  return new addon.Device({ fd, mode: 'packet', maxFrame: MAX, batch: 64, queueFrames: 8192, queueBytes: 64 << 20, onRead, onError: (m) => { console.error('device error: ' + m); process.exit(3); } });
}
let onA = () => {};
let onB = () => {};
const a = device(addon.openPacket({ ifname: aIf }).fd, (c) => onA(c));
const b = device(addon.openPacket({ ifname: bIf }).fd, (c) => onB(c));
onA = relay(a, b, dirs.toVm);
onB = relay(b, a, dirs.fromVm);
a.start();
b.start();
const stats = () => {
  const pick = (d) => ({ frames: d.frames, dropped: d.dropped, immediate: d.immediate, delayed: d.delayed, writeRejected: d.writeRejected });
  process.stdout.write(JSON.stringify({ ev: 'stats', toVm: pick(dirs.toVm), fromVm: pick(dirs.fromVm) }) + '\n');
};
process.on('SIGUSR2', stats);
process.on('SIGTERM', () => { stats(); process.exit(0); });
process.stdout.write(JSON.stringify({ ev: 'ready' }) + '\n');
`;
