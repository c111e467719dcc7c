/**
 * The N-API addon's surface (built from plugins/native/src by node-gyp during `npm ci`).
 * Everything that touches /dev/net/tun, AF_PACKET, unix datagram sockets or setns lives there;
 * the data path is a Device: a non-blocking fd watched by uv_poll, drained in batches into one
 * reused buffer, with one JS callback per batch.
 */

export interface OpenTunOptions {
  /** Interface name (IFNAMSIZ-1 chars at most). */
  name: string;
  /** true: TAP (Ethernet frames); false: TUN (IP packets). Always IFF_NO_PI. */
  tap: boolean;
  /** IFF_VNET_HDR (10-byte virtio_net_hdr) and TUNSETOFFLOAD for csum/TSO4/TSO6. */
  vnetHdr?: boolean;
  multiQueue?: boolean;
  /** Path of a network namespace file (/run/netns/NAME or /proc/PID/ns/net): the device is created inside it. */
  netns?: string;
}

export interface OpenTunResult {
  fd: number;
  /** Kernel's name for the device. */
  name: string;
  /** false when the device already existed (persistent, left by an earlier run) and was attached. */
  created: boolean;
  /** IFF_PERSIST was set before this open (someone made the device to outlive its fds). */
  persistent: boolean;
}

/** A link's settings that configureLink changes, read by linkInfo. */
export interface LinkInfo {
  mtu: number;
  /** 6 bytes. */
  mac: Buffer;
  up: boolean;
  /** IFF_LOOPBACK: the host's own loopback (`lo`, or any other interface flagged so). */
  loopback: boolean;
}

export interface LinkConfig {
  name: string;
  netns?: string;
  mtu?: number;
  /** 6 bytes. */
  mac?: Buffer;
  up?: boolean;
}

export interface DeviceOptions {
  fd: number;
  /** 'packet': one read() is one frame (tun/tap/AF_PACKET); 'dgram': recvfrom/sendto on a unix datagram socket. */
  mode: 'packet' | 'dgram';
  /** Largest frame including any vnet header; reads are made into slots of this size. */
  maxFrame: number;
  /** Most frames per batch callback. */
  batch: number;
  /** Bound of the write queue used while the fd would block. */
  queueFrames: number;
  queueBytes: number;
  /**
   * Zero bytes written before every frame (the iface port's all-zero virtio_net_hdr on an
   * AF_PACKET socket with PACKET_VNET_HDR). Default 0; at most 64.
   */
  txHeaderLen?: number;
  /** Called with the number of frames in `buffer`/`lengths` (slot i starts at i * maxFrame). */
  onRead: (count: number) => void;
  /** Called once when the fd fails (EOF, EIO…); the device stops polling. */
  onError: (message: string) => void;
}

export interface DeviceStats {
  rxFrames: number;
  rxBytes: number;
  txFrames: number;
  txBytes: number;
  dropQueueFull: number;
  dropIoError: number;
  dropNoPeer: number;
  /** Frames currently queued waiting for the fd to become writable. */
  queued: number;
  /** Exceptions thrown by onRead/onError (caught and dropped so the process survives). */
  callbackErrors: number;
  /** Writes the kernel refused since the last write it took (0: the last write went through). */
  ioFailRun: number;
  /** The last refused write's error, "ECONNREFUSED (Connection refused)", and how long ago (ms); absent before any. */
  lastIoError?: string;
  lastIoErrorAgoMs?: number;
  /** dgram mode: the peer's socket path ("@name" for an abstract address), when known. */
  peer?: string;
}

/** device.cc's Fib (`native.Device.Fib`): one switch's native forwarding table, unicast MAC → member. */
export interface NativeFib {
  /** Frames to `mac` may go to `device` for `validMs`; false if the device is not bound to this Fib. */
  set(mac: number, device: NativeSwitchMember, validMs: number): boolean;
  delete(mac: number): void;
  clear(): void;
}

/** The cut-through calls of a native Device and a VhostDevice (device.h SwitchMember). */
export interface NativeSwitchMember {
  bindSwitch(fib: NativeFib, mode: number, minLen: number, maxFrame: number, mac: number, onForwarded: (frames: number, bytes: number) => void): void;
  setSwitchMac(mac: number): void;
  unbindSwitch(): void;
  /** Runs the pending onForwarded report now (reports are otherwise deferred by ~10 ms). */
  flushForwarded(): void;
}

export interface NativeDevice extends NativeSwitchMember {
  /** Reused read buffer: slot i is buffer[i * maxFrame, i * maxFrame + lengths[i]). */
  readonly buffer: Buffer;
  /**
   * Frame lengths of the current batch. A length above maxFrame means the frame did not fit
   * its slot (the slot holds a truncated copy): drop it as oversize, never read past the slot.
   */
  readonly lengths: Uint32Array;
  start(): void;
  stop(): void;
  /**
   * Writes frames[0..count) in order, each as one write()/sendto(); what would block is
   * copied into the bounded queue, what does not fit is dropped. Returns frames accepted.
   */
  write(frames: readonly Buffer[], count: number): number;
  /** dgram mode: the socket path frames are sent to (otherwise learned from the last sender). */
  setPeer(path: string): void;
  stats(): DeviceStats;
  /**
   * Capture (plugins/common/tee-ring.ts has the ring's layout, which the device writes): from
   * now on every frame read is copied into `ring` as TEE_IN (dirs bit 1) — cut-through ones and
   * ones JS will drop included — and every frame accepted for writing (by write() or by another
   * device's cut-through; queued ones when queued) as TEE_OUT (bit 2), the first `rxSkip` /
   * `txSkip` bytes (a virtio_net_hdr: its gso_type and gso_size are recorded) left out and the
   * rest cut to `snaplen` (0: whole). A full ring refuses the copy and counts it in `ctl`.
   * The device holds references to both until setTee(null) or close(). `setTee(null)` stops.
   * `program` (daemon/capture/filter.ts compileFilterProgram) runs on the bytes a record would
   * hold before they are copied: a frame it rejects is not copied, only counted in `ctl`
   * ("filtered"). Checked here once: a malformed program throws TypeError.
   */
  setTee(ring: Buffer | null, ctl?: Uint32Array, dirs?: number, snaplen?: number, rxSkip?: number, txSkip?: number, program?: Uint32Array | null): void;
  /** Stops polling and closes the fd. Idempotent. */
  close(): void;
}

export interface OpenPingResult {
  fd: number;
  /**
   * The socket's ICMP identifier ("port", allocated at bind): the kernel puts it in every echo
   * request sent through the socket, whatever identifier the message carried, and delivers only
   * echo replies carrying it.
   */
  ident: number;
}

export interface PingSocketOptions {
  /** A socket from openPing (the PingSocket takes it over and closes it). */
  fd: number;
  /** Largest ICMP message (8-byte header + data) read into a slot; 8..65536. */
  maxMessage: number;
  /** Most messages per onRead call; 1..256. */
  batch: number;
  /** Called with the number of messages in `buffer`/`lengths`/`addrs` (slot i starts at i * maxMessage). */
  onRead: (count: number) => void;
  /** Called once when the socket fails for good; it stops polling. */
  onError: (message: string) => void;
}

export interface PingSocketStats {
  rxMessages: number;
  rxBytes: number;
  txMessages: number;
  txBytes: number;
  /** Sends refused by the kernel (unreachable, broadcast without SO_BROADCAST…), EAGAIN excluded. */
  txErrors: number;
  /** Sends dropped because the socket's send buffer was full (nothing is queued). */
  txWouldBlock: number;
  /** Errors read from the socket (queued ICMP errors, memory shortage), survived. */
  rxErrors: number;
  /** Exceptions thrown by onRead/onError (caught and dropped so the process survives). */
  callbackErrors: number;
  /** errno names of the last receive and send errors, when there were any. */
  lastRxError?: string;
  lastTxError?: string;
}

export interface NativePingSocket {
  /** true for an ICMPv6 socket. */
  readonly v6: boolean;
  /**
   * Reused read buffer: slot i is buffer[i * maxMessage, i * maxMessage + lengths[i]), an ICMP
   * message (header included, no IP header): an echo reply carrying the socket's ident.
   */
  readonly buffer: Buffer;
  /** Message lengths of the current batch; above maxMessage: truncated, drop it as oversize. */
  readonly lengths: Uint32Array;
  /**
   * Sender of each message of the current batch, 16 bytes per slot: an IPv4 address in the
   * first 4 bytes (network order, rest zero) on an IPv4 socket, else the IPv6 address.
   */
  readonly addrs: Buffer;
  start(): void;
  stop(): void;
  /**
   * Sends one ICMP echo request (type 8 / 128, code 0, 8-byte header then data; the kernel sets
   * the identifier and the checksum) to `dst` (4 bytes on an IPv4 socket, 16 on IPv6). Never
   * queues or blocks. Returns 0 when the kernel took it, else the errno value (EAGAIN: the send
   * buffer is full; EBADF: closed). Throws TypeError for malformed arguments.
   */
  send(dst: Uint8Array, icmp: Uint8Array): number;
  stats(): PingSocketStats;
  /**
   * Capture (plugins/common/tee-ring.ts has the ring's layout, which the device writes): from
   * now on every frame read is copied into `ring` as TEE_IN (dirs bit 1) — cut-through ones and
   * ones JS will drop included — and every frame accepted for writing (by write() or by another
   * device's cut-through; queued ones when queued) as TEE_OUT (bit 2), the first `rxSkip` /
   * `txSkip` bytes (a virtio_net_hdr: its gso_type and gso_size are recorded) left out and the
   * rest cut to `snaplen` (0: whole). A full ring refuses the copy and counts it in `ctl`.
   * The device holds references to both until setTee(null) or close(). `setTee(null)` stops.
   */
  setTee(ring: Buffer | null, ctl?: Uint32Array, dirs?: number, snaplen?: number, rxSkip?: number, txSkip?: number): void;
  /** Stops polling and closes the fd. Idempotent. */
  close(): void;
}

/** One message drained from an FdInbox: a usable descriptor, or why the one sent was refused (already closed). */
export type ReceivedFd = { token: string; fd: number; kind: 'unix-stream' | 'fifo' } | { token: string; fd: -1; refused: string };

export interface NativeFdInbox {
  /** Reads up to `max` queued messages without blocking; the descriptors returned are the caller's to close. */
  receive(max?: number): ReceivedFd[];
  /** Stops polling and closes the socket (queued descriptors are released by the kernel). Idempotent. */
  close(): void;
}

export interface AddrWatchOptions {
  /**
   * Called (from the event loop) with how many address or link notifications were read since
   * the last drain; an overrun of the socket's buffer counts as one. Exceptions are counted.
   */
  onChange: (count: number) => void;
}

export interface AddrWatchStats {
  /** Notifications read (by the poll and by drain()). */
  events: number;
  /** ENOBUFS: the kernel dropped notifications (each counts as a change). */
  overruns: number;
  /** Exceptions thrown by onChange (caught so the process survives). */
  callbackErrors: number;
  closed: boolean;
}

/** A NETLINK_ROUTE socket on the address and link groups of the creating thread's namespace. */
export interface NativeAddrWatch {
  /**
   * Reads whatever notifications are queued now, without blocking and without calling
   * onChange; returns how many. The kernel queues a notification before the change's own
   * syscall returns, so draining before a decision never decides on a stale address set.
   * Throws once the watch is closed (by close(), or given up after repeated socket errors).
   */
  drain(): number;
  stats(): AddrWatchStats;
  /** Closes the socket. Idempotent. */
  close(): void;
}

/** One address of the namespace, as the kernel lists it (RTM_GETADDR), on any interface in any state. */
export interface KernelAddr {
  family: 4 | 6;
  /** The host's own end (IFA_LOCAL, else IFA_ADDRESS): 4 or 16 bytes. */
  address: Buffer;
  prefixLen: number;
  /** IPv4: the interface's broadcast address, when it has one. */
  broadcast?: Buffer;
}

/** A key handle of the addon's ChaCha20-Poly1305: an external owning an EVP_CIPHER_CTX, freed (key zeroed) by its finalizer. */
export interface NativeAeadKey {
  readonly __nativeAeadKey: never;
}

export interface UdpSocketOptions {
  /** '' (dual-stack any address), an IPv6 literal (optionally with %scope; a dual-stack socket) or an IPv4 literal. */
  host: string;
  /** 0: an ephemeral port (see `port`). */
  port: number;
  /**
   * Called with the number of datagrams of a batch: datagram i is buffer[i * 65536, i * 65536 +
   * lengths[i]) (valid only during the call; a length above 65535 means truncated), from
   * sources[sourceIndex[i]].
   */
  onRead: (count: number) => void;
  /** Called once when the socket fails for good; it stops polling. */
  onError: (message: string) => void;
}

export interface UdpSocketStats {
  /** Errors read from the socket (queued ICMP errors, memory shortage), survived. */
  rxErrors: number;
  /** Datagrams larger than a slot (65535 bytes), delivered with length 65536 to be dropped. */
  rxTruncated: number;
  /** Exceptions thrown by onRead/onError (caught so the process survives). */
  callbackErrors: number;
  lastRxError?: string;
  /** Runs of equal-sized datagrams sent as one UDP GSO message (UDP_SEGMENT). */
  txGso: number;
  /** Whether GSO is still used (off for good after the kernel or the path refused it). */
  gso: boolean;
}

/**
 * A non-blocking UDP socket, bound at construction (throws an Error with `code`, e.g.
 * EADDRINUSE), with SO_RCVBUF/SO_SNDBUF of 4 MiB (forced when allowed). Reads: recvmmsg of up to
 * 64 datagrams into `buffer`, one onRead per batch, at most 4 batches per readable event.
 */
export interface NativeUdpSocket {
  /** A dual-stack AF_INET6 socket (IPv4 peers appear as plain IPv4 sources). */
  readonly v6: boolean;
  /** The bound port (the ephemeral one when bound to 0). */
  readonly port: number;
  /** The bound address as text: "[::]:51820", "127.0.0.1:5". */
  readonly address: string;
  /** The receive arena: 64 slots of 65536 bytes. */
  readonly buffer: Buffer;
  readonly lengths: Uint32Array;
  /** Per datagram of the batch: index into `sources`. */
  readonly sourceIndex: Uint8Array;
  /**
   * Source strings ("1.2.3.4:5", "[::1]:5", "[fe80::1%eth0]:5"; v4-mapped as plain IPv4), 64
   * entries: an entry is replaced only when a new source needs it, never during a batch that uses it.
   */
  readonly sources: string[];
  /** [sent, sentBytes, queueFull, ioError] of the last send(). */
  readonly txInfo: Float64Array;
  start(): void;
  /**
   * The sockaddr for an IP literal (IPv6 with optional %scope on a v6 socket; IPv4 destinations
   * of a v6 socket as "::ffff:a.b.c.d") and a port 1..65535, or null.
   */
  target(address: string, port: number): Buffer | null;
  /**
   * sendmmsg of `msgs` to a sockaddr from target(), runs of equal-sized ones (the last may be
   * shorter) as one UDP GSO message each; results in txInfo. Never blocks or queues.
   */
  send(sockaddr: Buffer, msgs: readonly Uint8Array[]): void;
  stats(): UdpSocketStats;
  /** Stops polling and closes the fd. Idempotent; send() afterwards counts everything as ioError. */
  close(): void;
}

/** A vhost-user back-end's state (vhost.cc): `vm list` shows it. */
export type VhostState = 'listening' | 'connected' | 'running' | 'broken';

export interface VhostDeviceOptions {
  /**
   * A listening, non-blocking unix stream socket (openUnixListener) where QEMU connects
   * (`-chardev socket,path=PATH,reconnect=1`). The device owns it from now on and closes it in
   * close(). One front-end at a time: a new connection replaces the old one (QEMU restarted).
   */
  listenFd: number;
  /** The port's largest frame without virtio-net header (a GSO super-frame may be up to GSO_MAX_FRAME). */
  maxFrame: number;
  /**
   * Most frames per onRead, and the per-event work budget: at most this many descriptor chains
   * are taken from (and at most this many frames put into) one guest per turn of the loop;
   * the rest waits for the next turn, so one guest cannot starve the others.
   */
  batch: number;
  /**
   * Offer VIRTIO_NET_F_CSUM, GUEST_CSUM, HOST_TSO4/6 and GUEST_TSO4/6 besides the base features
   * (VERSION_1, MRG_RXBUF, PROTOCOL_FEATURES, MTU, EVENT_IDX; protocol features REPLY_ACK and NET_MTU).
   */
  offloads: boolean;
  /**
   * Frames the guest sent: slot i of `buffer` is [i * slotSize, i * slotSize + lengths[i]), a
   * 10-byte virtio_net_hdr (num_buffers left out) then the Ethernet frame. Frames cut through
   * (bindSwitch) are never in the buffer: `start` is 0 and the batch holds only the rest.
   */
  onRead: (count: number, start: number) => void;
  /** Every state change, with a line for people: "QEMU connected", "guest ring violation: ...". */
  onState: (state: VhostState, detail: string) => void;
}

export interface VhostDeviceStats {
  state: VhostState;
  detail: string;
  /** Frames taken from the guest's TX ring, and frames put into its RX ring. */
  rxFrames: number;
  rxBytes: number;
  txFrames: number;
  txBytes: number;
  /** Frames for the guest dropped: its RX ring had no room (a guest that never refills it). */
  dropNoBuffers: number;
  /** Frames for the guest dropped: the rings are not running (no front-end, not started, broken). */
  dropNotRunning: number;
  /** Frames dropped for size (from the guest: longer than the slot; to it: longer than allowed). */
  dropOversize: number;
  /**
   * Frames with an offload the guest did not negotiate: to it (GSO or NEEDS_CSUM it cannot take)
   * or from it (a header asking for CSUM or TSO it did not negotiate, or UDP/ECN segmentation).
   */
  dropBadOffload: number;
  /** Exceptions thrown by onRead/onState (caught). */
  callbackErrors: number;
  /** Front-end connections accepted since start. */
  connections: number;
  /** Guest-memory or protocol violations seen (each made the device broken). */
  violations: number;
  /** Virtio feature bits negotiated (SET_FEATURES), as a hex string ("0x..."); "0x0" before. */
  features: string;
  /** What frames sent to the guest may carry, from the negotiated features. */
  guestCsum: boolean;
  guestTso4: boolean;
  guestTso6: boolean;
  /** Memory regions mapped, and their bytes. */
  regions: number;
  memBytes: number;
  /** Descriptors read from the guest's rings so far (the work its rings caused). */
  descriptorsRead: number;
}

/**
 * A vhost-user back-end for one QEMU virtio-net device (vhost.cc): the control protocol on the
 * listening socket, the guest's memory regions mapped (sealed memfds only), split RX/TX rings
 * served on the main loop. Guest memory is hostile: every index, chain, length and address is
 * checked and each descriptor read once; a violation makes the device `broken` (rings stopped,
 * onState says why) until the front-end connects again.
 */
export interface NativeVhostDevice extends NativeSwitchMember {
  /** Reused read buffer for onRead: slot i at i * slotSize. */
  readonly buffer: Buffer;
  readonly lengths: Uint32Array;
  readonly slotSize: number;
  /** Starts accepting on the listening socket. */
  start(): void;
  /**
   * Copies frames[0..count) (each a 10-byte virtio_net_hdr then the frame) into the guest's RX
   * buffers (merging buffers as MRG_RXBUF allows), in order; what does not fit is dropped and
   * counted, never queued. Signals the guest once. Returns frames delivered.
   */
  write(frames: readonly Buffer[], count: number): number;
  stats(): VhostDeviceStats;
  /** Capture: as NativeDevice.setTee (rxSkip/txSkip: the 10-byte header). */
  setTee(ring: Buffer | null, ctl?: Uint32Array, dirs?: number, snaplen?: number, rxSkip?: number, txSkip?: number, program?: Uint32Array | null): void;
  /**
   * Cut-through: as the native Device's, mode 1 ('pass') only (another mode throws a
   * TypeError). Frames the switch would forward unchanged go from guest memory to the
   * destination (a plain port gets them without the header when they carry no offload; the
   * rest goes to JS).
   */
  bindSwitch(fib: NativeFib, mode: number, minLen: number, maxFrame: number, mac: number, onForwarded: (frames: number, bytes: number) => void): void;
  /**
   * Tests and the fuzzer: runs now, synchronously, what a kick on every ring would run (the
   * same code path), within the usual budget. Returns chains taken.
   */
  processQueues(): number;
  /** Closes the connection, unmaps guest memory, closes the listening socket. Idempotent. */
  close(): void;
}

/**
 * Test aids for the vhost-user fake front-end (test/support/vhost-frontend.ts) and the fuzzer:
 * what QEMU does with memory and eventfds, done from a test.
 */
export interface NativeVhostTesting {
  /**
   * A memfd of `size` bytes mapped MAP_SHARED into this process: `mem` is a view of it (valid
   * until unmapTest). `seals`: F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL applied (as QEMU's
   * memory-backend-memfd does); false leaves it unsealed (to be refused).
   */
  memfdMap(size: number, seals: boolean): { fd: number; mem: Buffer; id: number };
  /**
   * Unmaps what memfdMap mapped (the fd stays open; close it with fs.closeSync): the pages
   * behind `mem` become anonymous zero pages, so a stale view never faults. A no-op when
   * already unmapped or `mem` was collected; a TypeError for an id never handed out.
   */
  memfdUnmap(id: number): void;
  /** ftruncate (a test that shrinks an unsealed memfd). */
  ftruncate(fd: number, size: number): void;
  /** eventfd(0, EFD_NONBLOCK|EFD_CLOEXEC). */
  eventfd(): number;
  /** Adds to an eventfd (a kick). */
  eventfdWrite(fd: number, value: number): void;
  /** Reads an eventfd's count (0 when none: it never blocks). */
  eventfdRead(fd: number): number;
  /** A blocking-connect unix stream socket to `path`, then made non-blocking. */
  unixConnect(path: string): number;
  /** One sendmsg of `data` with `fds` as SCM_RIGHTS; returns bytes sent (throws with `code`). */
  sendWithFds(fd: number, data: Buffer, fds: readonly number[]): number;
  /** Reads exactly `n` bytes within `timeoutMs` (poll), or throws (ETIMEDOUT, or 'EOF'). */
  recvExact(fd: number, n: number, timeoutMs: number): Buffer;
}

export interface NativeAddon {
  /** The tee's filter interpreter alone (tests): whether `program` accepts `frame`; TypeError when malformed. */
  teeFilterMatch(program: Uint32Array, frame: Uint8Array): boolean;
  openTun(opts: OpenTunOptions): OpenTunResult;
  /** TUNSETPERSIST: a persistent device outlives its fd (kept across daemon restarts). */
  setPersist(fd: number, persist: boolean): void;
  /** MTU, MAC and IFF_UP through ioctls, inside `netns` when given. */
  configureLink(cfg: LinkConfig): void;
  /** MTU, MAC, IFF_UP and IFF_LOOPBACK of an interface, inside `netns` when given. */
  linkInfo(name: string, netns?: string): LinkInfo;
  /** if_nametoindex inside `netns`; 0 when there is no such interface. */
  ifIndex(name: string, netns?: string): number;
  /** Deletes a tun/tap device by attaching, clearing persist and closing. No-op if absent. */
  removeTun(name: string, tap: boolean, netns?: string): void;
  /** AF_PACKET raw socket bound to the interface (ETH_P_ALL, promiscuous, PACKET_IGNORE_OUTGOING). */
  openPacket(opts: { ifname: string; netns?: string; vnetHdr?: boolean }): { fd: number };
  /** Non-blocking unix datagram socket bound to `path` (a stale socket file is replaced). */
  openUnixDgram(opts: { path: string }): { fd: number };
  /** Non-blocking listening unix stream socket bound at `path` (which must not exist); closing it unlinks nothing. */
  openUnixListener(opts: { path: string }): { fd: number };
  Device: (new (opts: DeviceOptions) => NativeDevice) & { Fib: new (gatewayMac: number, maxFrame: number) => NativeFib };
  /** A vhost-user back-end (vhost.cc). */
  VhostDevice: new (opts: VhostDeviceOptions) => NativeVhostDevice;
  /** Test aids (vhost-testing.cc): memfds, eventfds and fd passing as QEMU does them. */
  vhostTesting: NativeVhostTesting;
  /**
   * Whether cut-through may forward `frame` (Ethernet header at `vnetHdrLen`) as far as the
   * switch's rogue-router/DHCP guard is concerned: plainly nothing it looks at. Anything else is
   * left to the switch. Exposed for the differential test against daemon/switch/guard.ts.
   */
  isPlainFrame(frame: Buffer, vnetHdrLen: number): boolean;
  /**
   * The one's-complement sum (RFC 1071) of `buf[start, end)` as big-endian 16-bit words paired
   * from `start`, folded to 16 bits, not complemented (csum.cc). Throws a TypeError unless
   * 0 <= start <= end <= buf.length.
   */
  onesSum(buf: Uint8Array, start: number, end: number): number;
  /**
   * An unprivileged ICMP echo socket (SOCK_DGRAM + IPPROTO_ICMP, or IPPROTO_ICMPV6 when v6),
   * non-blocking, bound so its ident is allocated. Throws an Error with `code` 'EACCES' (or
   * 'EPERM') when the process's group is outside net.ipv4.ping_group_range of its namespace
   * (that one sysctl governs both families), 'EAFNOSUPPORT' where IPv6 is absent.
   */
  openPing(opts: { v6: boolean }): OpenPingResult;
  PingSocket: new (opts: PingSocketOptions) => NativePingSocket;
  /** The link carrier's UDP socket (daemon/carriers/udp.ts). */
  UdpSocket: new (opts: UdpSocketOptions) => NativeUdpSocket;
  /**
   * Sends descriptor `fd` with `token` (32 lowercase hex digits) as one datagram with SCM_RIGHTS
   * to the unix datagram socket at `path`. Never blocks: throws an Error with `code` (EAGAIN when
   * the receiver's queue is full, ENOENT/ECONNREFUSED when nobody is bound there, EBADF for `fd`).
   */
  sendFd(path: string, token: string, fd: number): void;
  /**
   * A unix datagram socket bound at `path` (a dead socket there is replaced; a live one or any
   * other file is refused with EADDRINUSE / EEXIST; the caller sets the umask),
   * polled: `onReadable` runs when messages are queued (false on a poll error).
   */
  FdInbox: new (opts: { path: string; onReadable: (ok: boolean) => void }) => NativeFdInbox;
  /** Address and link changes (RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR), polled unref'd. */
  AddrWatch: new (opts: AddrWatchOptions) => NativeAddrWatch;
  /** Every address of the calling thread's namespace (netlink dump), also on down or carrier-less links. */
  dumpAddrs(): KernelAddr[];
  /**
   * Takes flock(LOCK_EX|LOCK_NB) on `path` (created 0600, never through a symlink) and writes
   * this process's pid into it: `{ fd }` (keep it open; the kernel releases the lock when the
   * process dies), or `{ holder }` (what the holder wrote, its pid) when another process has it.
   */
  lockFile(path: string): { fd: number } | { holder: string };
  /**
   * One datagram `message` to systemd's notify socket (a path, or '@name' for an abstract
   * address), never blocking: false when the receiver's queue is full (the message is dropped).
   * Throws an Error with `code` on other failures.
   */
  sdNotify(socket: string, message: string): boolean;
  /**
   * Keeps only the capabilities numbered in `keep`, in every thread of the process: drops the
   * rest from the bounding set (when CAP_SETPCAP allows: `bounding`) and from the effective,
   * permitted and inheritable sets. `dropped`: the capabilities that were in the bounding set
   * and are not kept; `blocked`: threads left as they were because they block every signal;
   * `failed`: threads whose change failed or did not happen within 2 s (0 when all were changed).
   */
  dropCaps(keep: number[]): { dropped: number[]; bounding: boolean; threads: number; blocked: number; failed: number };
  /**
   * The link transport's ChaCha20-Poly1305 (aead.cc; absent when the addon was built without
   * the OpenSSL headers). Nonce: 4 zero bytes and `counter` (0 to 2^64-1) little-endian; no
   * associated data. TypeError on a malformed argument.
   */
  aeadImportKey?: (raw: Buffer) => NativeAeadKey;
  /**
   * `header` ‖ encrypt(`payload` ‖ `trailer`) ‖ tag, in one new Buffer, or into `out` (exactly
   * that long, overlapping no input; TypeError otherwise).
   */
  aeadSeal?: {
    (key: NativeAeadKey, counter: bigint, payload: Buffer, trailer: Buffer, header: Buffer): Buffer;
    (key: NativeAeadKey, counter: bigint, payload: Buffer, trailer: Buffer, header: Buffer, out: Buffer): undefined;
  };
  /**
   * The plaintext of `sealed` (ciphertext ‖ tag), or null when the tag does not verify or it is
   * shorter than a tag. With `out` (exactly `sealed.length - 16` bytes; it may be `sealed` itself,
   * decrypting in place): true with the plaintext in `out`, or false with `out` zeroed.
   */
  aeadOpen?: {
    (key: NativeAeadKey, counter: bigint, sealed: Buffer): Buffer | null;
    (key: NativeAeadKey, counter: bigint, sealed: Buffer, out: Buffer): boolean;
  };
  /** Frees the key's context now (zeroing the key); the handle then throws a TypeError. */
  aeadFreeKey?: (key: NativeAeadKey) => void;
}
