/**
 * Where a capture's output goes. A sink never blocks the caller: what does not fit in its bounded
 * queue is refused (write() returns false) and the session counts it as dropped.
 */
export interface Sink {
  /** pcapng: write() takes pcapng blocks; frames: write() takes Ethernet frames (QEMU stream framing). */
  readonly format: 'pcapng' | 'frames';
  /** pcapng sinks: the section header and interfaces, written first (and again on each new file). */
  begin(preamble: Buffer): void;
  write(block: Buffer): boolean;
  /**
   * Whether write() would take `bytes` now. Asked before a packet is encoded, so a reader that
   * does not read costs no encoding; and by the hub before it drains a port's ring at all.
   */
  room(bytes: number): boolean;
  /** Writes `tail` (the ISBs; pcapng only), then ends this capture's output (a tee's file stays open for its next section). */
  finish(tail: Buffer | null): void;
  /** Ends without a tail (the reader is gone, or the daemon stops hard). */
  abort(): void;
  /**
   * Set by the session: the capture must end. `clean`: the reader asked to stop (a half-close)
   * and still reads the ISBs; not clean: it is gone, or the output failed.
   */
  onGone: ((why: string, clean: boolean) => void) | null;
  /** Nobody reads now (a unix tee without a peer): packets are not offered, nor counted as captured. */
  readonly idle: boolean;
  /** For tee.list: 'active' or why not. */
  state(): { state: 'active' | 'waiting' | 'error'; detail: string };
}

/** A pcapng sink's queue bound: past this many bytes waiting, packets are dropped. */
export const SINK_QUEUE_BYTES = 8 << 20;
