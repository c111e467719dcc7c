// The Device class: a non-blocking fd watched by uv_poll, read in batches into one reused
// buffer (one JS callback per batch), written straight from JS Buffers with a bounded queue for
// the times the fd would block. Bound to a switch's forwarding table (Device.Fib, bindSwitch), a
// device forwards the frames the switch would forward unchanged to a known member itself, in
// native code ("cut-through"), and reports them to the switch afterwards.
//
// Also shared with the vhost-user back-end (vhost.cc): the capture tee (Tee) and the switch
// membership (SwitchMember), so a VhostDevice is a cut-through source and destination like a
// Device.
#pragma once

#include <node_api.h>
#include <sys/uio.h>
#include <time.h>
#include <uv.h>

#include <cstdint>
#include <vector>

namespace mvnet {

// Returns the constructor, or nullptr with a pending exception.
napi_value DefineDeviceClass(napi_env env);

// Whether cut-through may forward the frame as far as the switch's guard is concerned (see
// device.cc). Exported to JS as isPlainFrame for the differential test against the guard.
bool IsPlainFrame(const uint8_t* f, uint32_t h, uint32_t len);

// The bytes the switch decisions read in the worst case (vnet header, Ethernet, IPv4 with
// options, a TCP header with options: IsPlainFrame, and the offload checks of kCutNormalize):
// a copy of this much of a frame is all they depend on.
constexpr uint32_t kRouteBytes = 10 + 14 + 60 + 60;

// CLOCK_REALTIME, read once when first needed: a ring that refuses every copy never reads it.
struct TeeClock {
  timespec ts;
  bool have = false;
  const timespec& Get() {
    if (!have) {
      clock_gettime(CLOCK_REALTIME, &ts);
      have = true;
    }
    return ts;
  }
};

constexpr uint32_t kTeeIn = 1;
constexpr uint32_t kTeeOut = 2;

// Capture (setTee): copies of frames read (TEE_IN) and accepted for writing (TEE_OUT) into a
// ring JS drains (plugins/common/tee-ring.ts has the layout).
struct Tee {
  bool in = false;
  bool out = false;
  uint32_t rx_skip = 0;
  uint32_t tx_skip = 0;

  // One record: `len` bytes long, `avail` of them present at `f` (a truncated read).
  void Write(const uint8_t* f, uint32_t len, uint32_t avail, uint32_t skip, uint32_t dir, TeeClock& clock);
  // setTee(ring, ctl, dirs, snaplen, rxSkip, txSkip, program?) or setTee(null): false with an
  // exception pending on a malformed call. `closed`: accepted, nothing set.
  bool Set(napi_env env, size_t argc, napi_value* argv, bool closed);
  void Clear(napi_env env);

 private:
  uint8_t* buf_ = nullptr;
  uint32_t size_ = 0;
  uint32_t* ctl_ = nullptr;
  uint32_t snap_ = 0;
  napi_ref buf_ref_ = nullptr;
  napi_ref ctl_ref_ = nullptr;
  // The capture's filter program (empty: none), run before the copy (tee-filter.h).
  std::vector<uint32_t> prog_;
};

class Fib;
class SwitchMember;

enum CutConv { kCutSame = 0, kCutStrip = 1, kCutAdd = 2, kCutNormalize = 3 };
// A virtio_net_hdr of zeros (no offload), put before frames cut through with kCutAdd.
extern const uint8_t kZeroVnetHdr[10];

struct FibEntry {
  SwitchMember* dev;
  uint64_t deadline;  // uv_hrtime() ns
};

// A member of a switch's native forwarding table (Fib): frames read from it may be cut through
// to other members, and other members' frames to it. Device and VhostDevice are members.
class SwitchMember {
 public:
  virtual ~SwitchMember() = default;

  // Closed: the member takes no frames as a destination and reports nothing as a source.
  virtual bool Closed() const = 0;

  // As a destination.
  // The destination port's send checks (DevicePort.send's): frames it refuses go to the switch.
  virtual bool TxAccepts(const uint8_t* f, uint32_t len) const;
  // Frames forwarded to it, each contiguous and starting with its vnet header (sw_h_ bytes).
  virtual uint32_t CutWrite(const iovec* frames, size_t n) = 0;
  // One frame of `len` bytes in pieces (from guest memory). By default gathered and CutWrite.
  virtual void CutWriteV(const iovec* iov, int count, uint32_t len);
  // A TAP (a Device): written a frame at a time and read right after (Device::DrainPeers).
  virtual bool IsTap() const { return false; }
  // Completions deferred during a batch (vhost: the used ring and the guest's interrupt).
  virtual void CutPublish() {}

  // As a source.
  bool CanCutThrough() const;
  // The member the frame goes to, or null when the switch must see it. `f` holds at least
  // min(len, kRouteBytes) bytes; `slot`: the source's largest frame. `conv`: what the frame
  // becomes on the way, as the switch's enqueue does it between ports with and without a
  // virtio_net_hdr (kCutStrip: a frame with no offload, its header left out; kCutNormalize: a
  // TCP super-frame segmented or a partial checksum completed first, CutNormalized; kCutAdd: a
  // zero header put before it).
  SwitchMember* Route(const uint8_t* f, uint32_t len, uint32_t slot, uint64_t now, int* conv);
  void NoteForwarded(double frames, double bytes);
  // kCutNormalize: `f` (its virtio_net_hdr then the frame, `len` bytes, contiguous and not
  // guest memory: it is read more than once) made plain frames for `dst`, as the switch's
  // normalizeOffload (daemon/wire/gso.ts) makes them, and written.
  // Returns the frames written.
  static uint32_t CutNormalized(SwitchMember* dst, const uint8_t* f, uint32_t len);
  // Leaves the Fib (dropping its entries for this member). Pending counts stay for the report.
  void UnbindSwitch();
  // The Fib went away (garbage collected).
  void FibGone();

  // The JS methods' bodies (bindSwitch, setSwitchMac, unbindSwitch, flushForwarded); `wrapped`
  // is the pointer the member's JS object wraps (how the Fib recognises it in set()).
  napi_value JsBind(napi_env env, size_t argc, napi_value* argv, void* wrapped);
  napi_value JsSetMac(napi_env env, size_t argc, napi_value* argv);
  napi_value JsUnbind(napi_env env);
  napi_value JsFlush(napi_env env);

  Fib* fib_ = nullptr;
  uint32_t sw_h_ = 0;  // the port's vnetHdrLen

 protected:
  // The report timer: the owner inits it with its loop, and closes it with its own callback.
  void InitReport(uv_loop_t* loop);
  void CloseReport(uv_close_cb cb, void* data);
  void RunForwarded();
  // fwd_cb_(frames, bytes) as a callback from the loop (the owner's CallJs).
  virtual void CallForwarded(napi_ref cb, double frames, double bytes) = 0;

  bool sw_mac_set_ = false;
  uint64_t sw_mac_ = 0;
  bool sw_rx_ = false;      // frames read here may be cut through (vnet 'none' or 'pass')
  bool sw_pass_ = false;    // vnet 'pass': frames carry a virtio_net_hdr
  uint32_t sw_min_ = 0;     // the port's smallest frame (without vnet header)
  uint32_t sw_max_ = 0;     // the port's maxFrame
  napi_ref fwd_cb_ = nullptr;  // strong while bound: (frames, bytes) => void
  double fwd_frames_ = 0, fwd_bytes_ = 0;  // cut through, not yet reported
  bool fwd_armed_ = false;
  uv_timer_t report_;

 private:
  static void OnReport(uv_timer_t* handle);
  void ArmForwarded();
  const FibEntry* Lookup(uint64_t dmac);
  // The last Fib lookup (a stream's frames mostly go to one MAC), valid while the Fib's
  // generation is cache_gen_.
  uint64_t cache_gen_ = 0;
  uint64_t cache_dmac_ = 0;
  FibEntry cache_entry_ = {nullptr, 0};
};

// A TAP's own kernel stack may answer inside the write() that gave it a frame (an echo reply,
// a TCP ACK): the TAPs a VhostDevice's turn wrote to (members with IsTap()) are read right
// after it, as a Device reads its own (Device::DrainPeers). One level deep.
void DrainTaps(SwitchMember* const* taps, int n);

// Destinations with deferred completions (CutPublish) since the last PublishCutWrites: a source
// calls PublishCutWrites at the end of each batch it cut through (before any JS runs).
void MarkCutDirty(SwitchMember* m);
void PublishCutWrites();
// A member going away before the next PublishCutWrites.
void ForgetCutDirty(SwitchMember* m);

}  // namespace mvnet
