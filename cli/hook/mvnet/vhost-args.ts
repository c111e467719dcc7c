/**
 * QEMU's arguments for a VM on mvnet's vhost-user back-end (`device: "vhost-user"`): mvnet maps
 * the guest's memory, so the VM's RAM must be a shared memfd backend (`size` is the VM's whole
 * memory, `-m`), QEMU connects as the client and reconnects after a daemon restart
 * (`reconnect=1`), and the NIC is a virtio-net device. `vectors=0` (no MSI-X) when the VM runs
 * under TCG: QEMU 7.2 crashes there when the guest starts a vhost-user device with MSI-X; under
 * KVM MSI-X is kept (INTx would cost every interrupt a slower path).
 */

/** QEMU sizes as `-m` takes them: a number of MiB, or with a K/M/G/T suffix. */
const SIZE_RE = /^([1-9][0-9]{0,8})([KMGT]?)$/i;
const UNIT: Record<string, number> = { K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };
/** Smallest memory that can hold a guest's rings and buffers at all (QEMU wants more anyway). */
const MIN_BYTES = 16 * 2 ** 20;

export type Accel = 'tcg' | 'kvm';
export const ACCELS: readonly Accel[] = ['tcg', 'kvm'];

/**
 * `memory: "existing"`: the VM already has its shared memory backend (its first vhost-user NIC's
 * answer gave it, or the builder's own arguments do), so this answer adds none: a second
 * backend and NUMA node would double the guest's memory and QEMU would refuse the VM.
 */
export const EXISTING_MEMORY = 'existing';

/**
 * The VM's memory as a memory-backend `size`: `256` (MiB, as `-m 256`), `"256M"`, `"2G"`, or
 * `"existing"` (EXISTING_MEMORY); or an error message. A bare number means MiB (QEMU's `-m`),
 * never bytes (the backend's own unit).
 */
export function vhostMemory(v: unknown): { size: string } | { error: string } {
  if (v === EXISTING_MEMORY) return { size: EXISTING_MEMORY };
  const text = typeof v === 'number' && Number.isInteger(v) ? String(v) : typeof v === 'string' ? v.trim() : undefined;
  const m = text !== undefined ? SIZE_RE.exec(text) : null;
  if (m === null) return { error: `invalid memory ${JSON.stringify(v)}: the VM's memory as QEMU's -m gives it, e.g. 512 (MiB), "512M" or "2G", or "existing" when the VM's shared memory backend is given elsewhere` };
  const unit = (m[2] ?? '').toUpperCase() || 'M';
  const bytes = Number(m[1]) * UNIT[unit]!;
  if (bytes < MIN_BYTES) return { error: `memory ${JSON.stringify(v)} is less than 16M; give the VM's whole memory (-m)` };
  return { size: `${m[1]}${unit}` };
}

export interface VhostArgsInput {
  /** The socket mvnet listens on. */
  path: string;
  netdevId: string;
  /** A virtio-net model (virtio-net-pci, virtio-net-device, …). */
  model: string;
  mac: string;
  /** The memory-backend size (vhostMemory), or EXISTING_MEMORY: no backend in the answer. */
  memory: string;
  mtu: number;
  accel?: Accel;
}

/** QEMU's option syntax doubles a comma inside a value. */
function q(v: string): string {
  return v.replace(/,/g, ',,');
}

export function vhostQemuArgs(i: VhostArgsInput): string[] {
  const mem = `mem-${i.netdevId}`;
  const chr = `chr-${i.netdevId}`;
  let dev = `${i.model},netdev=${i.netdevId},mac=${i.mac}`;
  // The guest learns the network's MTU (VIRTIO_NET_F_MTU) instead of assuming 1500.
  if (i.mtu !== 1500) dev += `,host_mtu=${i.mtu}`;
  if (i.accel === 'tcg') dev += ',vectors=0';
  const memory = i.memory === EXISTING_MEMORY ? [] : ['-object', `memory-backend-memfd,id=${mem},size=${i.memory},share=on`, '-numa', `node,memdev=${mem}`];
  return [
    ...memory,
    '-chardev',
    `socket,id=${chr},path=${q(i.path)},reconnect=1`,
    '-netdev',
    `vhost-user,id=${i.netdevId},chardev=${chr}`,
    '-device',
    dev,
  ];
}
