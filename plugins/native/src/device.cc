#include "device.h"

#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <unordered_map>
#include <vector>

#include "napi_util.h"
#include "tee-filter.h"

namespace mvnet {
namespace {

constexpr uint32_t kMaxBatch = 1024;
constexpr uint32_t kMaxSlot = 256 * 1024;
constexpr uint64_t kMaxBufferBytes = 256ull * 1024 * 1024;
constexpr size_t kSendChunk = 64;  // frames per sendmmsg()
constexpr uint32_t kMaxTxHeader = 64;
constexpr uint64_t kRetryMs = 1;        // unconnected datagram socket that would block: poll by timer
constexpr uint64_t kReconnectMs = 1000;  // re-resolve a datagram peer's path (it may have restarted)
constexpr uint64_t kLinkWatchMs = 200;   // AF_PACKET interface went down: was it deleted?
constexpr int kMaxPollErrors = 16;
constexpr int kReadRounds = 4;  // batches per readable event at most
// Frames cut through are reported to JS (counters, MAC ageing) at most this often: a JS call
// (napi_make_callback) per loop iteration cost ~5% of the CPU with large frames. Readers that
// need exact counters take the pending report first (flushForwarded, DevicePort.stats).
constexpr uint64_t kReportMs = 10;
constexpr uint32_t kVnetHdrLen = 10;       // sizeof(struct virtio_net_hdr)
constexpr uint32_t kGsoMaxFrame = 65550;   // largest GSO super-frame without the vnet header
constexpr uint32_t kMinFrame = 14;         // an Ethernet header
// The tee ring (plugins/common/tee-ring.ts documents the layout; TeeWrite follows it).
constexpr uint32_t kTeeRecHdr = 24;
constexpr uint32_t kTeeCtlWords = 8;
constexpr int kCtlHead = 0, kCtlTail = 1, kCtlWritten = 2, kCtlDropped = 4, kCtlFiltered = 6;
constexpr uint32_t kTeeMaxSkip = 64;
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the tee ring's records are little-endian");
constexpr napi_type_tag kFibTag = {0x6d766e6574666962ull, 0x5377697463684669ull};
const uint8_t kZeros[kMaxTxHeader] = {0};

enum TimerMode { kTimerOff, kTimerRetry, kTimerReconnect, kTimerLinkWatch };

struct QueuedFrame {
  uint8_t* data;
  uint32_t len;  // including the tx header
};

struct SendResult {
  size_t consumed;  // written, or dropped for a reason other than "would block"
  size_t written;
};

bool IsTransientReadError(int err) {
  switch (err) {
    case ENETDOWN:  // AF_PACKET: the interface went down (checked for deletion separately)
    case ENOBUFS:
    case ENOMEM:
    case ECONNRESET:  // unix dgram: a peer that was connected to us went away
    case ECONNREFUSED:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case EMSGSIZE:
      return true;
    default:
      return false;
  }
}

bool IsPeerGone(int err) { return err == ECONNREFUSED || err == ENOENT || err == ENOTCONN || err == EDESTADDRREQ; }

inline uint64_t ReadMac(const uint8_t* p) {
  return (static_cast<uint64_t>(p[0]) << 40) | (static_cast<uint64_t>(p[1]) << 32) |
         (static_cast<uint64_t>(p[2]) << 24) | (static_cast<uint64_t>(p[3]) << 16) |
         (static_cast<uint64_t>(p[4]) << 8) | static_cast<uint64_t>(p[5]);
}

}  // namespace

// Whether a frame (Ethernet header at `h`, `len` bytes in all) is plainly none of the frames
// the switch's rogue-router/DHCP guard looks at (daemon/switch/guard.ts): only such frames are
// cut through; everything else goes to the switch, which runs the guard. So the guard has one
// implementation, and this is a conservative subset of "passes the guard" (checked by a
// differential test, test/unit/switch-guard.test.ts). Plain: unfragmented IPv4 TCP, UDP
// with no port in 67/68, and ICMP but redirect and router advertisement; IPv6 with TCP, UDP with
// no port in 546/547, or ICMPv6 echo request/reply right after the fixed header (any extension
// header, other ICMPv6, ARP, VLAN tag or other EtherType is not plain).
bool IsPlainFrame(const uint8_t* f, uint32_t h, uint32_t len) {
  if (len < h + 14) return false;
  const uint8_t* e = f + h;
  const uint32_t n = len - h - 14;  // bytes after the Ethernet header
  const uint32_t type = (static_cast<uint32_t>(e[12]) << 8) | e[13];
  const uint8_t* ip = e + 14;
  if (type == 0x0800) {
    if (n < 20 || (ip[0] >> 4) != 4) return false;
    const uint32_t ihl = (ip[0] & 0x0fu) * 4u;
    if (ihl < 20 || n < ihl) return false;
    if ((((static_cast<uint32_t>(ip[6]) << 8) | ip[7]) & 0x3fffu) != 0) return false;  // MF or offset
    if (ip[9] == 6) return true;
    if (ip[9] != 17 && ip[9] != 1) return false;
    const uint32_t total = (static_cast<uint32_t>(ip[2]) << 8) | ip[3];
    if (total < ihl + 8 || total > n) return false;
    if (ip[9] == 1) return ip[ihl] != 5 && ip[ihl] != 9;  // ICMP but redirect, router advertisement
    const uint32_t sport = (static_cast<uint32_t>(ip[ihl]) << 8) | ip[ihl + 1];
    const uint32_t dport = (static_cast<uint32_t>(ip[ihl + 2]) << 8) | ip[ihl + 3];
    return sport != 67 && sport != 68 && dport != 67 && dport != 68;
  }
  if (type == 0x86dd) {
    if (n < 40 || (ip[0] >> 4) != 6) return false;
    if (ip[6] == 6) return true;
    if (ip[6] != 17 && ip[6] != 58) return false;
    const uint32_t plen = (static_cast<uint32_t>(ip[4]) << 8) | ip[5];
    if (plen < 8 || plen > n - 40) return false;
    if (ip[6] == 58) return ip[40] == 128 || ip[40] == 129;  // echo request, reply
    const uint32_t sport = (static_cast<uint32_t>(ip[40]) << 8) | ip[41];
    const uint32_t dport = (static_cast<uint32_t>(ip[42]) << 8) | ip[43];
    return sport != 546 && sport != 547 && dport != 546 && dport != 547;
  }
  return false;
}

// One level of draining at a time: a drained TAP does not drain others (DrainPeers, DrainTaps).
thread_local bool draining = false;

// The switch's forwarding table mirrored for cut-through (see Device::CutThrough): unicast MAC
// -> the member (a Device or a VhostDevice), valid until a deadline a little before the
// switch's own entry ages out. One per network; the switch owns it and keeps it a subset of its
// MAC table.
class Fib {
 public:
  static napi_value New(napi_env env, napi_callback_info info);
  static napi_value JsSet(napi_env env, napi_callback_info info);
  static napi_value JsDelete(napi_env env, napi_callback_info info);
  static napi_value JsClear(napi_env env, napi_callback_info info);
  static void Finalize(napi_env env, void* data, void* hint);
  static Fib* Unwrap(napi_env env, napi_value v);

  // `wrapped`: the pointer the member's JS object wraps, how set() recognises it.
  void Bind(void* wrapped, SwitchMember* m) { members_.push_back({wrapped, m}); }
  void Unbind(SwitchMember* m);
  // Every change to entries_ takes a new generation (unique across all Fibs), which invalidates
  // the members' one-entry lookup caches (SwitchMember::Lookup).
  void Changed() { gen_ = ++next_gen_; }

  struct Member {
    void* wrapped;
    SwitchMember* m;
  };
  static inline uint64_t next_gen_ = 0;
  uint64_t gen_ = ++next_gen_;
  uint64_t gateway_mac_ = 0;
  uint32_t max_frame_ = 0;  // the network's largest frame without vnet header
  std::unordered_map<uint64_t, FibEntry> entries_;
  std::vector<Member> members_;
};

namespace {

class Device : public SwitchMember {
 public:
  static napi_value New(napi_env env, napi_callback_info info);
  static napi_value JsStart(napi_env env, napi_callback_info info);
  static napi_value JsStop(napi_env env, napi_callback_info info);
  static napi_value JsWrite(napi_env env, napi_callback_info info);
  static napi_value JsSetPeer(napi_env env, napi_callback_info info);
  static napi_value JsStats(napi_env env, napi_callback_info info);
  static napi_value JsClose(napi_env env, napi_callback_info info);
  static napi_value JsBindSwitch(napi_env env, napi_callback_info info);
  static napi_value JsSetSwitchMac(napi_env env, napi_callback_info info);
  static napi_value JsUnbindSwitch(napi_env env, napi_callback_info info);
  static napi_value JsFlushForwarded(napi_env env, napi_callback_info info);
  static napi_value JsSetTee(napi_env env, napi_callback_info info);
  static void Finalize(napi_env env, void* data, void* hint);

 private:
  Device() = default;
  ~Device() { FreeQueue(); }

  static Device* Unwrap(napi_env env, napi_callback_info info, size_t* argc, napi_value* argv);
  static void OnPoll(uv_poll_t* handle, int status, int events);
  static void OnTimer(uv_timer_t* handle);
  static void OnHandleClosed(uv_handle_t* handle);

  uint32_t ReadBatch();
  bool CheckPacketIfaceGone();
  // A read error that concerns one frame or a passing state, not the fd.
  bool Transient(int err) const {
    // AF_PACKET with PACKET_VNET_HDR: a GSO frame the kernel cannot describe is dropped with EINVAL.
    return IsTransientReadError(err) || (err == EINVAL && is_socket_ && !dgram_);
  }
  bool PacketIfaceUp();
  void OnPacketNetDown();
  void Fail(int err, const char* what);
  void CallJs(napi_ref fn_ref, size_t argc, const napi_value* argv);
  void CallOnRead(uint32_t count, uint32_t start);
  uint32_t Write(const iovec* frames, size_t n);
  uint32_t Submit(const iovec* frames, size_t n);
  // Cut-through: frames the switch would forward to a known member go out natively.
  uint32_t CutThrough(uint32_t n);
  void NotePeer(Device* dst);
  void WriteOne(uint8_t* f, uint32_t len);
  void DrainPeers();
 public:
  // Read as the TAP another member's cut-through just wrote to (DrainPeers, DrainTaps).
  void DrainAsPeer();
  void ClearPeers() { npeers_ = 0; }

 private:
  // SwitchMember.
  bool Closed() const override { return closed_; }
  uint32_t CutWrite(const iovec* frames, size_t n) override { return Write(frames, n); }
  void CutWriteV(const iovec* iov, int count, uint32_t len) override;
  bool IsTap() const override { return !is_socket_; }
  void CallForwarded(napi_ref cb, double frames, double bytes) override;
  SendResult TrySend(const iovec* frames, size_t n, uint32_t prefix, uint32_t exclude, TeeClock* tee);
  // Capture (setTee): copies of frames read (TEE_IN) and accepted for writing (TEE_OUT).
  void TeeIn(const uint8_t* f, uint32_t len) {
    TeeClock clock;
    tee_.Write(f, len, std::min(len, slot_), tee_.rx_skip, kTeeIn, clock);
  }
  void TeeOut(const iovec& v, TeeClock& clock) {
    const uint32_t len = static_cast<uint32_t>(v.iov_len);
    tee_.Write(static_cast<const uint8_t*>(v.iov_base), len, len, tee_.tx_skip, kTeeOut, clock);
  }
  void ClearTee() { tee_.Clear(env_); }
  bool Enqueue(const iovec& frame);
  void Flush();
  void FreeQueue();
  void UpdateIo();
  void SetActive(bool active);
  void OnSendError(int err);
  bool TryConnect();
  void Disconnect();
  void LearnPeer(const sockaddr_un& addr, socklen_t len);
  std::string PeerString() const;
  void Close();

  napi_env env_ = nullptr;
  napi_ref wrapper_ = nullptr;  // weak; strong (count 1) while polling so a live device isn't collected
  bool active_ref_ = false;

  int fd_ = -1;
  bool is_socket_ = false;
  bool dgram_ = false;
  uint32_t slot_ = 0;
  uint32_t batch_ = 0;
  uint32_t qmax_frames_ = 0;
  uint64_t qmax_bytes_ = 0;
  uint32_t tx_hdr_ = 0;
  uint8_t* buf_ = nullptr;
  uint32_t* lens_ = nullptr;

  uv_poll_t poll_;
  uv_timer_t timer_;
  int events_ = 0;
  TimerMode timer_mode_ = kTimerOff;
  int pending_closes_ = 0;
  napi_ref on_read_ = nullptr;   // weak: the functions are the object's own read-only properties
  napi_ref on_error_ = nullptr;

  // Cut-through (bindSwitch): the switch's table, this member's fixed source MAC and the port's
  // frame limits are SwitchMember's.
  std::vector<iovec> cut_iov_;
  static constexpr int kMaxPeers = 4;
  Device* peers_[kMaxPeers];  // TAPs written to by cut-through since the last DrainPeers
  int npeers_ = 0;
  int poll_errors_ = 0;

  bool reading_ = false;
  bool closed_ = false;
  bool failed_ = false;
  bool finalized_ = false;
  bool error_reported_ = false;

  // Capture (setTee): tee_.in / tee_.out are all the data path looks at while no tee is set.
  Tee tee_;

  std::vector<mmsghdr> rmsgs_;
  std::vector<iovec> riov_;
  std::vector<sockaddr_un> raddrs_;
  std::vector<mmsghdr> smsgs_;
  std::vector<iovec> siov_;
  std::vector<iovec> flush_iov_;
  std::vector<iovec> frames_;
  std::deque<QueuedFrame> queue_;
  uint64_t queued_bytes_ = 0;

  sockaddr_un peer_;
  socklen_t peer_len_ = 0;
  bool peer_explicit_ = false;
  bool connected_ = false;

  int bound_ifindex_ = 0;     // AF_PACKET: the interface the socket is bound to
  bool link_watch_ = false;   // AF_PACKET: the interface is down; watching for its deletion

  double rx_frames_ = 0, rx_bytes_ = 0, tx_frames_ = 0, tx_bytes_ = 0;
  double drop_qfull_ = 0, drop_io_ = 0, drop_nopeer_ = 0, cb_errors_ = 0;
  // Writes the kernel refused since the last one it took, the last such errno and when (CLOCK_MONOTONIC ms):
  // status() shows a port whose writes all fail as degraded, with the reason.
  double io_fail_run_ = 0, last_io_fail_ms_ = 0;
  int last_io_errno_ = 0;
  void IoFailed(int err) {
    io_fail_run_++;
    last_io_errno_ = err;
    last_io_fail_ms_ = MonoMs();
  }
  static double MonoMs() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<double>(ts.tv_sec) * 1000.0 + static_cast<double>(ts.tv_nsec) / 1e6;
  }
};

napi_value Device::New(napi_env env, napi_callback_info info) {
  napi_value self, opts;
  if (!ConstructorWithOptions(env, info, "Device", &self, &opts)) return nullptr;
  int32_t fd = -1;
  std::string mode;
  uint32_t slot = 0, batch = 0, qframes = 0, qbytes = 0, tx_hdr = 0;
  napi_value on_read, on_error;
  if (!GetInt32Prop(env, opts, "fd", true, &fd) || !GetStringProp(env, opts, "mode", true, &mode) ||
      !GetUint32Prop(env, opts, "maxFrame", true, &slot) || !GetUint32Prop(env, opts, "batch", true, &batch) ||
      !GetUint32Prop(env, opts, "queueFrames", true, &qframes) ||
      !GetUint32Prop(env, opts, "queueBytes", true, &qbytes) ||
      !GetUint32Prop(env, opts, "txHeaderLen", false, &tx_hdr) || !GetFunctionProp(env, opts, "onRead", &on_read) ||
      !GetFunctionProp(env, opts, "onError", &on_error)) {
    return nullptr;
  }
  if (mode != "packet" && mode != "dgram") {
    ThrowType(env, "option 'mode' must be 'packet' or 'dgram'");
    return nullptr;
  }
  if (slot < 1 || slot > kMaxSlot) {
    ThrowType(env, "option 'maxFrame' must be 1.." + std::to_string(kMaxSlot));
    return nullptr;
  }
  if (batch < 1 || batch > kMaxBatch) {
    ThrowType(env, "option 'batch' must be 1.." + std::to_string(kMaxBatch));
    return nullptr;
  }
  if (static_cast<uint64_t>(slot) * batch > kMaxBufferBytes) {
    ThrowType(env, "maxFrame * batch is too large");
    return nullptr;
  }
  if (tx_hdr > kMaxTxHeader) {
    ThrowType(env, "option 'txHeaderLen' must be 0.." + std::to_string(kMaxTxHeader));
    return nullptr;
  }
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    ThrowErrno(env, fd < 0 ? EBADF : errno, "new Device", "fd " + std::to_string(fd));
    return nullptr;
  }
  bool is_socket = S_ISSOCK(st.st_mode);
  if (mode == "dgram" && !is_socket) {
    ThrowType(env, "mode 'dgram' needs a socket fd");
    return nullptr;
  }

  void* data = nullptr;
  napi_value buffer, lengths_ab, lengths;
  // One byte more than the slots: a tun read may take slot + 1 bytes (see ReadBatch).
  MVNET_CALL(env, napi_create_buffer(env, static_cast<size_t>(slot) * batch + 1, &data, &buffer));
  void* lens_data = nullptr;
  MVNET_CALL(env, napi_create_arraybuffer(env, batch * sizeof(uint32_t), &lens_data, &lengths_ab));
  MVNET_CALL(env, napi_create_typedarray(env, napi_uint32_array, batch, lengths_ab, 0, &lengths));
  std::memset(lens_data, 0, batch * sizeof(uint32_t));

  napi_property_descriptor props[] = {
      {"buffer", nullptr, nullptr, nullptr, nullptr, buffer, napi_enumerable, nullptr},
      {"lengths", nullptr, nullptr, nullptr, nullptr, lengths, napi_enumerable, nullptr},
      {"onRead", nullptr, nullptr, nullptr, nullptr, on_read, napi_default, nullptr},
      {"onError", nullptr, nullptr, nullptr, nullptr, on_error, napi_default, nullptr},
  };
  MVNET_CALL(env, napi_define_properties(env, self, 4, props));

  uv_loop_t* loop = nullptr;
  MVNET_CALL(env, napi_get_uv_event_loop(env, &loop));

  Device* d = new Device();
  d->env_ = env;
  d->fd_ = fd;
  d->is_socket_ = is_socket;
  d->dgram_ = mode == "dgram";
  d->slot_ = slot;
  d->batch_ = batch;
  d->qmax_frames_ = qframes;
  d->qmax_bytes_ = qbytes;
  d->tx_hdr_ = tx_hdr;
  d->buf_ = static_cast<uint8_t*>(data);
  d->lens_ = static_cast<uint32_t*>(lens_data);
  std::memset(&d->peer_, 0, sizeof(d->peer_));

  if (is_socket) {
    d->rmsgs_.resize(batch);
    d->riov_.resize(batch);
    if (d->dgram_) d->raddrs_.resize(batch);
    for (uint32_t k = 0; k < batch; k++) {
      d->riov_[k].iov_base = d->buf_ + static_cast<size_t>(k) * slot;
      d->riov_[k].iov_len = slot;
      msghdr& h = d->rmsgs_[k].msg_hdr;
      std::memset(&h, 0, sizeof(h));
      h.msg_iov = &d->riov_[k];
      h.msg_iovlen = 1;
      if (d->dgram_) h.msg_name = &d->raddrs_[k];
    }
    d->smsgs_.resize(kSendChunk);
    d->siov_.resize(2 * kSendChunk);
  }
  d->flush_iov_.resize(kSendChunk);
  d->frames_.reserve(batch);
  d->cut_iov_.resize(batch);
  if (is_socket && !d->dgram_) {
    sockaddr_ll sll;
    socklen_t sll_len = sizeof(sll);
    std::memset(&sll, 0, sizeof(sll));
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&sll), &sll_len) == 0 && sll.sll_family == AF_PACKET) {
      d->bound_ifindex_ = sll.sll_ifindex;
    }
  }

  int r = uv_poll_init(loop, &d->poll_, fd);
  if (r != 0) {
    delete d;
    ThrowPlain(env, std::string("uv_poll_init: ") + uv_strerror(r));
    return nullptr;
  }
  uv_timer_init(loop, &d->timer_);
  d->InitReport(loop);
  d->poll_.data = d;
  d->timer_.data = d;

  if (napi_wrap(env, self, d, Finalize, nullptr, &d->wrapper_) != napi_ok) {
    ThrowLastError(env, "napi_wrap");
    d->finalized_ = true;
    d->fd_ = -1;  // not ours: the constructor failed
    d->Close();
    return nullptr;
  }
  // Looked up once: the callbacks are read-only, non-configurable own properties.
  if (napi_create_reference(env, on_read, 0, &d->on_read_) != napi_ok ||
      napi_create_reference(env, on_error, 0, &d->on_error_) != napi_ok) {
    ThrowLastError(env, "napi_create_reference");
    d->Close();
    return nullptr;
  }
  return self;
}

Device* Device::Unwrap(napi_env env, napi_callback_info info, size_t* argc, napi_value* argv) {
  return UnwrapThis<Device>(env, info, argc, argv, "not a Device");
}

void Device::Finalize(napi_env env, void* data, void* /*hint*/) {
  Device* d = static_cast<Device*>(data);
  d->finalized_ = true;
  if (d->wrapper_) {
    napi_delete_reference(env, d->wrapper_);
    d->wrapper_ = nullptr;
  }
  d->ClearTee();
  for (napi_ref* r : {&d->on_read_, &d->on_error_, &d->fwd_cb_}) {
    if (*r) napi_delete_reference(env, *r);
    *r = nullptr;
  }
  d->active_ref_ = false;
  if (!d->closed_) {
    d->Close();  // deleted in OnHandleClosed
  } else if (d->pending_closes_ == 0) {
    delete d;
  }
}

void Device::Close() {
  if (closed_) return;
  closed_ = true;
  reading_ = false;
  FreeQueue();
  ClearTee();
  UnbindSwitch();
  SetActive(false);
  // uv_close() stops the poll watcher and removes the fd from epoll synchronously, so the fd can
  // be closed right away (a persistent tun/tap or a socket file is released when close() returns).
  uv_close(reinterpret_cast<uv_handle_t*>(&poll_), OnHandleClosed);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), OnHandleClosed);
  CloseReport(OnHandleClosed, this);
  pending_closes_ = 3;
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

void Device::OnHandleClosed(uv_handle_t* handle) {
  Device* d = static_cast<Device*>(handle->data);
  if (--d->pending_closes_ == 0 && d->finalized_) delete d;
}

void Device::SetActive(bool active) {
  if (active == active_ref_ || wrapper_ == nullptr || finalized_) return;
  uint32_t count = 0;
  if (active) {
    napi_reference_ref(env_, wrapper_, &count);
  } else {
    napi_reference_unref(env_, wrapper_, &count);
  }
  active_ref_ = active;
}

void Device::UpdateIo() {
  if (closed_) return;
  int want = 0;
  bool retry = false;
  if (reading_) want |= UV_READABLE;
  if (!queue_.empty()) {
    // poll() on an unconnected unix datagram socket says "writable" even when the receiver is
    // full, so such a queue is retried on a timer instead.
    if (dgram_ && !connected_) {
      retry = true;
    } else {
      want |= UV_WRITABLE;
    }
  }
  if (want != events_) {
    if (want != 0) {
      uv_poll_start(&poll_, want, OnPoll);
    } else {
      uv_poll_stop(&poll_);
    }
    events_ = want;
  }
  TimerMode mode = retry                     ? kTimerRetry
                   : dgram_ && peer_len_ > 0 ? kTimerReconnect
                   : link_watch_             ? kTimerLinkWatch
                                             : kTimerOff;
  if (failed_) mode = kTimerOff;
  if (mode != timer_mode_) {
    uv_timer_stop(&timer_);
    if (mode == kTimerRetry) {
      uv_ref(reinterpret_cast<uv_handle_t*>(&timer_));
      uv_timer_start(&timer_, OnTimer, kRetryMs, kRetryMs);
    } else if (mode == kTimerReconnect || mode == kTimerLinkWatch) {
      uint64_t ms = mode == kTimerReconnect ? kReconnectMs : kLinkWatchMs;
      uv_unref(reinterpret_cast<uv_handle_t*>(&timer_));
      uv_timer_start(&timer_, OnTimer, ms, ms);
    }
    timer_mode_ = mode;
  }
  SetActive(want != 0 || retry);
}

void Device::OnPoll(uv_poll_t* handle, int status, int events) {
  Device* d = static_cast<Device*>(handle->data);
  if (d->closed_) return;
  if (status < 0) {
    // libuv stopped the watcher on POLLERR. Fetch (and clear) the socket's error: fatal ones
    // fail the device, transient ones (an interface going down) are survived and polling resumes.
    // A tun fd reports POLLERR when its device is gone; the read below then fails it.
    d->events_ = 0;
    int fatal = 0;
    bool cleared = false;
    if (d->is_socket_) {
      int err = 0;
      socklen_t len = sizeof(err);
      if (getsockopt(d->fd_, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0) {
        cleared = true;
        if (err == ENETDOWN && !d->dgram_) {
          if (d->CheckPacketIfaceGone()) {
            fatal = ENODEV;
          } else {
            d->OnPacketNetDown();
          }
        } else if (!d->Transient(err)) {
          fatal = err;
        }
      }
    }
    if (fatal != 0) {
      d->Fail(fatal, "socket");
      return;
    }
    if (cleared) {
      d->poll_errors_ = 0;
    } else if (++d->poll_errors_ > kMaxPollErrors) {
      d->Fail(EIO, "poll");
      return;
    }
    if (d->reading_) d->ReadBatch();
    d->DrainPeers();
    if (!d->closed_ && !d->failed_) d->UpdateIo();
    return;
  }
  d->poll_errors_ = 0;
  if (events & UV_WRITABLE) d->Flush();
  if (d->closed_) return;
  if (!(events & UV_READABLE)) return;
  // A full batch means more is probably waiting: take a few more batches (one JS call each)
  // before going back to the loop, as a drain-until-EAGAIN forwarder would, but bounded so one
  // busy device cannot starve the others.
  for (int round = 0; round < kReadRounds && d->reading_ && !d->closed_; round++) {
    if (d->ReadBatch() < d->batch_) break;
  }
  d->DrainPeers();
}

// A TAP's own kernel stack handles a frame inside the write() that gives it one, and may answer
// right there (an echo reply, a TCP ACK): read the TAPs cut-through just wrote to now, rather
// than one event-loop iteration later. One level deep: a drained TAP does not drain others.
// Called at the end of every OnPoll that read, so peers_ never outlives the callback (a device
// is only freed from the loop's closing phase).
void Device::DrainPeers() {
  if (npeers_ == 0) return;
  int n = npeers_;
  npeers_ = 0;
  if (draining) return;
  draining = true;
  Device* peers[kMaxPeers];
  std::copy(peers_, peers_ + n, peers);
  for (int i = 0; i < n; i++) {
    Device* p = peers[i];
    if (p != this) p->DrainAsPeer();
  }
  for (int i = 0; i < n; i++) peers[i]->npeers_ = 0;  // what they wrote while drained: not drained
  draining = false;
}

void Device::DrainAsPeer() {
  if (fib_ != nullptr && reading_ && !closed_ && !failed_) ReadBatch();
}

}  // namespace

// A VhostDevice's turn wrote to these TAPs: read them now, as DrainPeers does for a Device.
void DrainTaps(SwitchMember* const* taps, int n) {
  if (draining || n == 0) return;
  draining = true;
  for (int i = 0; i < n; i++) {
    if (taps[i]->IsTap()) static_cast<Device*>(taps[i])->DrainAsPeer();
  }
  for (int i = 0; i < n; i++) {
    if (taps[i]->IsTap()) static_cast<Device*>(taps[i])->ClearPeers();
  }
  draining = false;
}

namespace {

void Device::OnTimer(uv_timer_t* handle) {
  Device* d = static_cast<Device*>(handle->data);
  if (d->closed_) return;
  if (d->timer_mode_ == kTimerRetry) {
    if (!d->connected_) d->TryConnect();
    d->Flush();
  } else if (d->timer_mode_ == kTimerLinkWatch) {
    if (d->CheckPacketIfaceGone()) {
      d->Fail(ENODEV, "interface deleted");
    } else if (d->PacketIfaceUp()) {
      d->link_watch_ = false;
      d->UpdateIo();
    }
  } else {
    d->TryConnect();
    d->UpdateIo();
  }
}

bool Device::CheckPacketIfaceGone() {
  sockaddr_ll sll;
  socklen_t len = sizeof(sll);
  std::memset(&sll, 0, sizeof(sll));
  if (getsockname(fd_, reinterpret_cast<sockaddr*>(&sll), &len) != 0) return false;
  return sll.sll_family == AF_PACKET && sll.sll_ifindex <= 0;
}

// Device ioctls on a packet socket act in the socket's own namespace.
bool Device::PacketIfaceUp() {
  struct ifreq ifr;
  std::memset(&ifr, 0, sizeof(ifr));
  ifr.ifr_ifindex = bound_ifindex_;
  if (bound_ifindex_ <= 0 || ioctl(fd_, SIOCGIFNAME, &ifr) != 0) return false;
  if (ioctl(fd_, SIOCGIFFLAGS, &ifr) != 0) return false;
  return (ifr.ifr_flags & IFF_UP) != 0;
}

// The interface went down (ENETDOWN is reported once). Deletion is reported by nothing at all
// afterwards, so until the interface is up again it is checked for on a timer.
void Device::OnPacketNetDown() {
  if (link_watch_) return;
  link_watch_ = true;
  UpdateIo();
}

// Reads a batch (at most batch_ frames), cuts through what it can and hands the rest to JS.
// Returns the number of frames read.
uint32_t Device::ReadBatch() {
  uint32_t n = 0;      // frames in the buffer (slots [0, n))
  uint32_t start = 0;  // of which [0, start) were cut through: JS gets [start, n)
  uint32_t total = 0;  // frames read
  int fatal = 0;
  if (is_socket_) {
    for (int tries = 0; tries < 8; tries++) {
      if (dgram_) {
        for (uint32_t k = 0; k < batch_; k++) rmsgs_[k].msg_hdr.msg_namelen = sizeof(sockaddr_un);
      }
      int r = recvmmsg(fd_, rmsgs_.data(), batch_, MSG_DONTWAIT | MSG_TRUNC, nullptr);
      if (r >= 0) {
        n = static_cast<uint32_t>(r);
        break;
      }
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) break;
      if (err == ENETDOWN && !dgram_) {
        if (CheckPacketIfaceGone()) {
          fatal = ENODEV;
          break;
        }
        OnPacketNetDown();
      }
      if (Transient(err)) continue;
      fatal = err;
      break;
    }
    for (uint32_t k = 0; k < n; k++) {
      uint32_t len = rmsgs_[k].msg_len;
      if ((rmsgs_[k].msg_hdr.msg_flags & MSG_TRUNC) && len <= slot_) len = slot_ + 1;
      lens_[k] = len;
      rx_bytes_ += len;
      if (dgram_) LearnPeer(raddrs_[k], rmsgs_[k].msg_hdr.msg_namelen);
    }
    rx_frames_ += n;
    total = n;
    if (tee_.in && n > 0) {
      TeeClock clock;  // one time for the batch: recvmmsg took it at once
      for (uint32_t k = 0; k < n; k++) {
        tee_.Write(buf_ + static_cast<size_t>(k) * slot_, lens_[k], std::min(lens_[k], slot_), tee_.rx_skip, kTeeIn, clock);
      }
    }
    // Frames the switch would forward to a known member go out here, before any JS runs; JS
    // gets the rest of the batch (from `start`) now and a count of these later.
    if (n > 0 && CanCutThrough()) start = CutThrough(n);
  } else {
    // One read() per frame. While frames are cut through, each one for a TAP goes out as soon as
    // it is read and the next is read into the same slot (cache-hot, as a plain forwarder
    // would); those for a socket keep their slots and go out together (sendmmsg) when the
    // destination changes. From the first frame that is not cut through on, frames stay in
    // their slots for JS, so per-destination order is kept.
    bool cut = CanCutThrough();
    const uint64_t now = cut ? uv_hrtime() : 0;
    SwitchMember* run_dst = nullptr;
    Device* last_tap = nullptr;  // the TAP cut-through last wrote to (noted for DrainPeers)
    size_t run = 0;  // frames kept for run_dst: cut_iov_[0, run)
    uint32_t fwd = 0;
    double fwd_bytes = 0;
    uint32_t empty = 0;
    while (total < batch_) {
      // tun silently truncates a packet longer than the read: reading slot + 1 bytes tells such
      // a packet apart (its length is then reported as slot + 1: oversize). The extra byte
      // lands in the next slot, which holds nothing yet (or in the buffer's spare last byte).
      uint8_t* f = buf_ + static_cast<size_t>(n) * slot_;
      ssize_t r = read(fd_, f, static_cast<size_t>(slot_) + 1);
      if (r > 0) {
        if (r > static_cast<ssize_t>(slot_)) r = slot_ + 1;
        uint32_t len = static_cast<uint32_t>(r);
        total++;
        rx_bytes_ += static_cast<double>(r);
        lens_[n] = len;
        if (tee_.in) TeeIn(f, len);  // before cut-through may reuse the slot
        if (cut) {
          int conv = kCutSame;
          SwitchMember* dst = Route(f, len, slot_, now, &conv);
          if (dst != nullptr) {
            fwd++;
            fwd_bytes += len - sw_h_;
            if ((dst != run_dst || conv == kCutAdd || conv == kCutNormalize) && run > 0) {
              run_dst->CutWrite(cut_iov_.data(), run);
              run = 0;
            }
            const uint32_t skip = conv == kCutStrip ? kVnetHdrLen : 0;
            Device* tap = dst->IsTap() ? static_cast<Device*>(dst) : nullptr;
            if (tap == nullptr && conv != kCutAdd && conv != kCutNormalize) {
              run_dst = dst;
              cut_iov_[run].iov_base = f + skip;
              cut_iov_[run].iov_len = len - skip;
              run++;
              n++;
            } else {
              // Written now (a TAP, a zero header put before it, or made plain): the slot is
              // free again.
              if (conv == kCutAdd) {
                iovec two[2] = {{const_cast<uint8_t*>(kZeroVnetHdr), kVnetHdrLen}, {f, len}};
                dst->CutWriteV(two, 2, len + kVnetHdrLen);
              } else if (conv == kCutNormalize) {
                CutNormalized(dst, f, len);
              } else {
                tap->WriteOne(f + skip, len - skip);
              }
              if (tap != nullptr && tap != last_tap) {
                NotePeer(tap);
                last_tap = tap;
              }
              run_dst = nullptr;
              n = 0;  // any run went out above: every slot is free again
            }
            continue;
          }
          cut = false;
          if (run > 0) run_dst->CutWrite(cut_iov_.data(), run);
          run = 0;
          start = n;  // slots before this one were cut through
        }
        n++;
        continue;
      }
      if (r == 0) {
        if (++empty > batch_) break;
        continue;  // a zero-length packet: ignored
      }
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) break;
      if (Transient(err)) {
        if (++empty > batch_) break;
        continue;
      }
      fatal = err;
      break;
    }
    if (run > 0) run_dst->CutWrite(cut_iov_.data(), run);
    if (cut) start = n;  // the batch ended while cutting through: nothing for JS
    rx_frames_ += total;
    if (fwd > 0) NoteForwarded(fwd, fwd_bytes);
  }
  PublishCutWrites();  // before any JS runs
  if (start < n) CallOnRead(n, start);
  if (fatal != 0 && !closed_) Fail(fatal, "read");
  return total;
}

void Device::CallOnRead(uint32_t count, uint32_t start) {
  napi_handle_scope scope;
  if (napi_open_handle_scope(env_, &scope) != napi_ok) return;
  napi_value argv[2];
  size_t argc = 1;
  napi_create_uint32(env_, count, &argv[0]);
  if (start > 0) {
    napi_create_uint32(env_, start, &argv[1]);
    argc = 2;
  }
  CallJs(on_read_, argc, argv);
  napi_close_handle_scope(env_, scope);
}

// Calls fn_ref(...argv) with the device as `this`, as a callback from the event loop (so
// process.nextTick and microtasks run after it). Needs an open handle scope.
void Device::CallJs(napi_ref fn_ref, size_t argc, const napi_value* argv) {
  if (wrapper_ == nullptr || finalized_ || fn_ref == nullptr) return;
  napi_value self = nullptr, fn = nullptr;
  if (napi_get_reference_value(env_, wrapper_, &self) == napi_ok && self != nullptr &&
      napi_get_reference_value(env_, fn_ref, &fn) == napi_ok && fn != nullptr) {
    napi_value result;
    napi_status st = napi_make_callback(env_, nullptr, self, fn, argc, argv, &result);
    if (st != napi_ok) {
      // An exception from the callback must not take the daemon down: count it and go on.
      bool pending = false;
      napi_is_exception_pending(env_, &pending);
      if (pending) {
        napi_value exc;
        napi_get_and_clear_last_exception(env_, &exc);
        cb_errors_++;
      }
    }
  }
}

void Device::Fail(int err, const char* what) {
  if (failed_ || closed_) return;
  failed_ = true;
  reading_ = false;
  link_watch_ = false;
  drop_io_ += static_cast<double>(queue_.size());
  FreeQueue();
  UpdateIo();
  if (error_reported_) return;
  error_reported_ = true;
  std::string msg = std::string(what) + ": " + std::strerror(err) + " (" + ErrnoName(err) + ")";
  napi_handle_scope scope;
  if (napi_open_handle_scope(env_, &scope) != napi_ok) return;
  napi_value arg = nullptr;
  napi_create_string_utf8(env_, msg.data(), msg.size(), &arg);
  CallJs(on_error_, 1, &arg);
  napi_close_handle_scope(env_, scope);
}

void Device::FreeQueue() {
  for (QueuedFrame& q : queue_) std::free(q.data);
  queue_.clear();
  queued_bytes_ = 0;
}

// Cut-through's write of one frame to a TAP (CutWriteV in one piece).
void Device::WriteOne(uint8_t* f, uint32_t len) {
  iovec one = {f, len};
  CutWriteV(&one, 1, len);
}

// write() and cut-through: frames of a closed or failed device, or of a datagram device
// without a peer, are counted as dropped; the rest are submitted.
uint32_t Device::Write(const iovec* frames, size_t n) {
  if (n == 0) return 0;
  if (closed_ || failed_) {
    drop_io_ += static_cast<double>(n);
    return 0;
  }
  if (dgram_ && peer_len_ == 0) {
    drop_nopeer_ += static_cast<double>(n);
    return 0;
  }
  return Submit(frames, n);
}

// ---------------------------------------------------------------------------------------------
// Cut-through from a Device: ReadBatch forwards frames itself while SwitchMember::Route (below,
// with the whole story) finds a member for them; runs for one destination go out together, a
// TAP is written a frame at a time and read right after (DrainPeers).

// DrainPeers reads the TAPs cut-through wrote to.
void Device::NotePeer(Device* dst) {
  if (npeers_ < kMaxPeers && std::find(peers_, peers_ + npeers_, dst) == peers_ + npeers_) peers_[npeers_++] = dst;
}

// Cuts through the leading frames of a batch read at once (recvmmsg): runs of frames for one
// destination go out together. Returns how many.
uint32_t Device::CutThrough(uint32_t n) {
  const uint64_t now = uv_hrtime();
  SwitchMember* run_dst = nullptr;
  size_t run = 0;
  uint32_t k = 0;
  double bytes = 0;
  for (; k < n; k++) {
    uint8_t* f = buf_ + static_cast<size_t>(k) * slot_;
    uint32_t len = lens_[k];
    int conv = kCutSame;
    SwitchMember* dst = Route(f, len, slot_, now, &conv);
    if (dst == nullptr) break;
    if (dst != run_dst || conv == kCutAdd || conv == kCutNormalize) {
      if (run > 0) run_dst->CutWrite(cut_iov_.data(), run);
      run = 0;
      run_dst = nullptr;
      if (dst->IsTap()) NotePeer(static_cast<Device*>(dst));
    }
    bytes += len - sw_h_;
    if (conv == kCutAdd) {
      iovec two[2] = {{const_cast<uint8_t*>(kZeroVnetHdr), kVnetHdrLen}, {f, len}};
      dst->CutWriteV(two, 2, len + kVnetHdrLen);
      continue;
    }
    if (conv == kCutNormalize) {
      CutNormalized(dst, f, len);
      continue;
    }
    run_dst = dst;
    const uint32_t skip = conv == kCutStrip ? kVnetHdrLen : 0;
    cut_iov_[run].iov_base = f + skip;
    cut_iov_[run].iov_len = len - skip;
    run++;
  }
  if (run > 0) run_dst->CutWrite(cut_iov_.data(), run);
  if (k > 0) NoteForwarded(k, bytes);
  return k;
}

// A cut-through frame (in pieces when from a guest's memory) to a TAP: the plain case (a TAP
// that takes it, no queue, no header to prepend, no capture) in one writev(); a frame in one
// piece that would block is queued as it is; anything else (gathered first when in pieces)
// as Write does it.
void Device::CutWriteV(const iovec* iov, int count, uint32_t len) {
  if (!is_socket_ && tx_hdr_ == 0 && !tee_.out && queue_.empty() && !closed_ && !failed_) {
    ssize_t r;
    do {
      r = writev(fd_, iov, count);
    } while (r < 0 && errno == EINTR);
    if (r >= 0) {
      tx_bytes_ += len;
      tx_frames_++;
      io_fail_run_ = 0;
      return;
    }
    int err = errno;
    if (err != EAGAIN && err != EWOULDBLOCK) {
      drop_io_++;
      IoFailed(err);
      return;
    }
    if (count == 1) {
      if (Enqueue(iov[0])) UpdateIo();
      return;
    }
  } else if (count == 1) {
    Write(iov, 1);
    return;
  }
  SwitchMember::CutWriteV(iov, count, len);
}

void Device::CallForwarded(napi_ref cb, double frames, double bytes) {
  napi_handle_scope scope;
  if (napi_open_handle_scope(env_, &scope) != napi_ok) return;
  napi_value argv[2];
  napi_create_double(env_, frames, &argv[0]);
  napi_create_double(env_, bytes, &argv[1]);
  CallJs(cb, 2, argv);
  napi_close_handle_scope(env_, scope);
}

// Frames written now or queued are accepted, and teed as TEE_OUT when they are (in order).
uint32_t Device::Submit(const iovec* frames, size_t n) {
  size_t i = 0;
  uint32_t accepted = 0;
  TeeClock clock;
  TeeClock* tee = tee_.out ? &clock : nullptr;
  if (queue_.empty()) {
    SendResult r = TrySend(frames, n, tx_hdr_, 0, tee);
    i = r.consumed;
    accepted += static_cast<uint32_t>(r.written);
  }
  bool queued = false;
  for (; i < n; i++) {
    if (Enqueue(frames[i])) {
      accepted++;
      queued = true;
      if (tee != nullptr) TeeOut(frames[i], *tee);
    }
  }
  if (queued) UpdateIo();
  return accepted;
}

// Sends frames in order until one would block. `prefix` zero bytes are sent before each frame;
// `exclude` bytes of each frame are not counted in txBytes (a header already in the copy).
// `tee`: tee the frames written (Submit; Flush's were teed when queued).
SendResult Device::TrySend(const iovec* f, size_t n, uint32_t prefix, uint32_t exclude, TeeClock* tee) {
  size_t i = 0, written = 0;
  while (i < n) {
    if (closed_ || failed_) {
      drop_io_ += static_cast<double>(n - i);
      return {n, written};
    }
    if (dgram_ && peer_len_ == 0) {
      drop_nopeer_ += static_cast<double>(n - i);
      return {n, written};
    }
    if (is_socket_) {
      size_t m = std::min(n - i, kSendChunk);
      for (size_t k = 0; k < m; k++) {
        iovec* v = &siov_[2 * k];
        int cnt = 0;
        if (prefix) {
          v[cnt].iov_base = const_cast<uint8_t*>(kZeros);
          v[cnt].iov_len = prefix;
          cnt++;
        }
        v[cnt++] = f[i + k];
        msghdr& h = smsgs_[k].msg_hdr;
        std::memset(&h, 0, sizeof(h));
        h.msg_iov = v;
        h.msg_iovlen = cnt;
        if (dgram_ && !connected_) {
          h.msg_name = &peer_;
          h.msg_namelen = peer_len_;
        }
      }
      int r = sendmmsg(fd_, smsgs_.data(), static_cast<unsigned int>(m), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (r > 0) {
        for (int k = 0; k < r; k++) tx_bytes_ += static_cast<double>(f[i + k].iov_len - exclude);
        if (tee != nullptr) {
          for (int k = 0; k < r; k++) TeeOut(f[i + k], *tee);
        }
        tx_frames_ += r;
        io_fail_run_ = 0;
        written += r;
        i += r;
        continue;
      }
      int err = r < 0 ? errno : EIO;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) return {i, written};
      drop_io_++;
      IoFailed(err);
      i++;
      OnSendError(err);
    } else {
      ssize_t r;
      if (prefix) {
        iovec v[2] = {{const_cast<uint8_t*>(kZeros), prefix}, f[i]};
        r = writev(fd_, v, 2);
      } else {
        r = write(fd_, f[i].iov_base, f[i].iov_len);
      }
      if (r >= 0) {
        if (tee != nullptr) TeeOut(f[i], *tee);
        tx_bytes_ += static_cast<double>(f[i].iov_len - exclude);
        tx_frames_++;
        io_fail_run_ = 0;
        written++;
        i++;
        continue;
      }
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) return {i, written};
      drop_io_++;
      IoFailed(err);
      i++;
    }
  }
  return {n, written};
}

bool Device::Enqueue(const iovec& frame) {
  uint64_t total = frame.iov_len + tx_hdr_;
  if (queue_.size() >= qmax_frames_ || queued_bytes_ + total > qmax_bytes_) {
    drop_qfull_++;
    return false;
  }
  uint8_t* p = static_cast<uint8_t*>(std::malloc(total ? total : 1));
  if (p == nullptr) {
    drop_qfull_++;
    return false;
  }
  if (tx_hdr_) std::memset(p, 0, tx_hdr_);
  if (frame.iov_len) std::memcpy(p + tx_hdr_, frame.iov_base, frame.iov_len);
  queue_.push_back({p, static_cast<uint32_t>(total)});
  queued_bytes_ += total;
  return true;
}

void Device::Flush() {
  while (!queue_.empty() && !closed_) {
    size_t m = std::min(queue_.size(), kSendChunk);
    for (size_t k = 0; k < m; k++) {
      flush_iov_[k].iov_base = queue_[k].data;
      flush_iov_[k].iov_len = queue_[k].len;
    }
    SendResult r = TrySend(flush_iov_.data(), m, 0, tx_hdr_, nullptr);
    for (size_t k = 0; k < r.consumed && !queue_.empty(); k++) {
      queued_bytes_ -= queue_.front().len;
      std::free(queue_.front().data);
      queue_.pop_front();
    }
    if (r.consumed < m) break;  // would block
  }
  UpdateIo();
}

void Device::OnSendError(int err) {
  if (!dgram_ || !IsPeerGone(err)) return;
  // The peer's socket is gone (the kernel already dropped a connection to it). Its path may
  // have a new socket (the VM restarted): reconnect, else forget a learned peer.
  connected_ = false;
  if (!TryConnect() && !peer_explicit_) peer_len_ = 0;
  UpdateIo();
}

bool Device::TryConnect() {
  if (!dgram_ || peer_len_ == 0 || closed_) return false;
  if (connect(fd_, reinterpret_cast<sockaddr*>(&peer_), peer_len_) == 0) {
    connected_ = true;
    return true;
  }
  int err = errno;
  if (connected_ && IsPeerGone(err)) {
    // Still associated with a socket that no longer answers at the path: let go of it so a
    // restarted VM (a new socket) can reach us.
    Disconnect();
    if (!peer_explicit_) peer_len_ = 0;
  }
  return false;
}

void Device::Disconnect() {
  if (!connected_) return;
  sockaddr sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_family = AF_UNSPEC;
  connect(fd_, &sa, sizeof(sa));
  connected_ = false;
}

void Device::LearnPeer(const sockaddr_un& addr, socklen_t len) {
  if (peer_explicit_) return;
  constexpr socklen_t base = offsetof(sockaddr_un, sun_path);
  if (len <= base || len > sizeof(sockaddr_un)) return;  // unnamed sender
  if (addr.sun_path[0] == '\0' && len == base + 1) return;
  if (len == peer_len_ && std::memcmp(&peer_, &addr, len) == 0) return;
  std::memset(&peer_, 0, sizeof(peer_));
  std::memcpy(&peer_, &addr, len);
  peer_len_ = len;
  connected_ = false;  // we cannot have been connected: only the connected peer could send to us
  TryConnect();
  UpdateIo();
}

std::string Device::PeerString() const {
  constexpr socklen_t base = offsetof(sockaddr_un, sun_path);
  if (peer_len_ <= base) return "";
  size_t n = peer_len_ - base;
  if (peer_.sun_path[0] == '\0') return "@" + std::string(peer_.sun_path + 1, n - 1);
  return std::string(peer_.sun_path, strnlen(peer_.sun_path, n));
}

napi_value Device::JsStart(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  Device* d = Unwrap(env, info, &argc, nullptr);
  if (!d) return nullptr;
  if (d->closed_ || d->failed_) return nullptr;
  d->reading_ = true;
  d->UpdateIo();
  return nullptr;
}

napi_value Device::JsStop(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  Device* d = Unwrap(env, info, &argc, nullptr);
  if (!d) return nullptr;
  d->reading_ = false;
  d->UpdateIo();
  return nullptr;
}

napi_value Device::JsWrite(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  Device* d = Unwrap(env, info, &argc, argv);
  if (!d) return nullptr;
  uint32_t n = 0;
  if (!GetWriteCount(env, argc, argv, &n)) return nullptr;
  napi_value result;
  if (n == 0 || d->closed_ || d->failed_ || (d->dgram_ && d->peer_len_ == 0)) {
    d->Write(nullptr, n);  // counts the drops
    MVNET_CALL(env, napi_create_uint32(env, 0, &result));
    return result;
  }
  if (!GetWriteFrames(env, argv[0], n, &d->frames_)) return nullptr;
  uint32_t accepted = d->Write(d->frames_.data(), n);
  MVNET_CALL(env, napi_create_uint32(env, accepted, &result));
  return result;
}

napi_value Device::JsSetPeer(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  Device* d = Unwrap(env, info, &argc, argv);
  if (!d) return nullptr;
  std::string path;
  if (argc < 1 || !GetStringArg(env, argv[0], "path", &path)) {
    if (!IsExceptionPending(env)) ThrowType(env, "setPeer(path: string)");
    return nullptr;
  }
  if (!d->dgram_) {
    ThrowPlain(env, "setPeer: only datagram devices have a peer");
    return nullptr;
  }
  if (path.size() >= sizeof(d->peer_.sun_path) || path.find('\0') != std::string::npos) {
    ThrowType(env, "setPeer: socket path must be at most 107 bytes");
    return nullptr;
  }
  if (d->closed_) return nullptr;
  if (path.empty()) {
    d->Disconnect();
    d->peer_explicit_ = false;
    d->peer_len_ = 0;
    d->UpdateIo();
    return nullptr;
  }
  std::memset(&d->peer_, 0, sizeof(d->peer_));
  d->peer_.sun_family = AF_UNIX;
  std::memcpy(d->peer_.sun_path, path.data(), path.size());
  d->peer_len_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  d->peer_explicit_ = true;
  if (!d->TryConnect() && d->connected_) d->Disconnect();
  d->UpdateIo();
  return nullptr;
}

napi_value Device::JsStats(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  Device* d = Unwrap(env, info, &argc, nullptr);
  if (!d) return nullptr;
  napi_value o;
  MVNET_CALL(env, napi_create_object(env, &o));
  if (!SetNumber(env, o, "rxFrames", d->rx_frames_) || !SetNumber(env, o, "rxBytes", d->rx_bytes_) ||
      !SetNumber(env, o, "txFrames", d->tx_frames_) || !SetNumber(env, o, "txBytes", d->tx_bytes_) ||
      !SetNumber(env, o, "dropQueueFull", d->drop_qfull_) || !SetNumber(env, o, "dropIoError", d->drop_io_) ||
      !SetNumber(env, o, "dropNoPeer", d->drop_nopeer_) || !SetNumber(env, o, "ioFailRun", d->io_fail_run_) ||
      !SetNumber(env, o, "queued", static_cast<double>(d->queue_.size())) ||
      !SetNumber(env, o, "callbackErrors", d->cb_errors_)) {
    return nullptr;
  }
  if (d->dgram_ && d->peer_len_ > 0) {
    if (!SetString(env, o, "peer", d->PeerString())) return nullptr;
  }
  if (d->last_io_errno_ != 0) {
    const char* name = strerrorname_np(d->last_io_errno_);
    std::string text = std::string(name != nullptr ? name : "errno " + std::to_string(d->last_io_errno_)) + " (" + std::strerror(d->last_io_errno_) + ")";
    if (!SetString(env, o, "lastIoError", text) || !SetNumber(env, o, "lastIoErrorAgoMs", MonoMs() - d->last_io_fail_ms_)) return nullptr;
  }
  return o;
}

// The switch methods: SwitchMember's (device.h).
napi_value Device::JsBindSwitch(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  Device* d = Unwrap(env, info, &argc, argv);
  if (!d) return nullptr;
  return d->JsBind(env, argc, argv, d);
}

napi_value Device::JsSetSwitchMac(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  Device* d = Unwrap(env, info, &argc, argv);
  if (!d) return nullptr;
  return d->JsSetMac(env, argc, argv);
}

napi_value Device::JsUnbindSwitch(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  Device* d = Unwrap(env, info, &argc, nullptr);
  if (!d) return nullptr;
  return d->JsUnbind(env);
}

napi_value Device::JsFlushForwarded(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  Device* d = Unwrap(env, info, &argc, nullptr);
  if (!d) return nullptr;
  return d->JsFlush(env);
}

// setTee(ring: Buffer, ctl: Uint32Array, dirs, snaplen, rxSkip, txSkip, program?), or setTee(null) to stop.
napi_value Device::JsSetTee(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  Device* d = Unwrap(env, info, &argc, argv);
  if (!d) return nullptr;
  d->tee_.Set(env, argc, argv, d->closed_);
  return nullptr;
}

napi_value Device::JsClose(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  Device* d = Unwrap(env, info, &argc, nullptr);
  if (!d) return nullptr;
  d->Close();
  return nullptr;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Capture. The ring is plugins/common/tee-ring.ts's TeeRing, drained by JS on the same thread:
// records go in at ctl[head] (ours), JS frees them by moving ctl[tail] (its). The room is
// checked before anything is copied, so a full ring costs a few compares and a counter.

namespace {
inline void TeeCount(uint32_t* ctl, int i) {
  if (++ctl[i] == 0) ++ctl[i + 1];
}
inline void Put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
}  // namespace

void Tee::Write(const uint8_t* f, uint32_t len, uint32_t avail, uint32_t skip, uint32_t dir, TeeClock& clock) {
  uint32_t* ctl = ctl_;
  const uint32_t orig = len > skip ? len - skip : 0;
  uint32_t cap = snap_ != 0 && orig > snap_ ? snap_ : orig;
  if (cap > (avail > skip ? avail - skip : 0)) cap = avail > skip ? avail - skip : 0;  // a truncated read
  // On the bytes the record would hold, as the JS filter would see them: a frame filtered
  // out is not copied at all.
  if (!prog_.empty() && RunFilter(prog_.data(), cap > 0 ? f + skip : f, cap) != 1) {
    TeeCount(ctl, kCtlFiltered);
    return;
  }
  const uint64_t need = kTeeRecHdr + ((static_cast<uint64_t>(cap) + 7) & ~7ull);
  const uint32_t size = size_;
  const uint32_t head = ctl[kCtlHead], tail = ctl[kCtlTail];
  uint32_t off;
  // TeeRing.reserve: one piece, never completely full (head == tail is empty). Offsets JS
  // could have spoiled make the ring look full rather than send us outside it.
  if (head >= size || tail >= size || ((head | tail) & 7) != 0) {
    TeeCount(ctl, kCtlDropped);
    return;
  }
  if (head >= tail) {
    const uint64_t end = head + need;
    if (end < size || (end == size && tail != 0)) {
      off = head;
      ctl[kCtlHead] = end == size ? 0 : static_cast<uint32_t>(end);
    } else if (need < tail) {
      Put32(buf_ + head, 0);  // wrap marker
      off = 0;
      ctl[kCtlHead] = static_cast<uint32_t>(need);
    } else {
      TeeCount(ctl, kCtlDropped);
      return;
    }
  } else if (head + need < tail) {
    off = head;
    ctl[kCtlHead] = static_cast<uint32_t>(head + need);
  } else {
    TeeCount(ctl, kCtlDropped);
    return;
  }
  const timespec& ts = clock.Get();
  uint8_t* r = buf_ + off;
  Put32(r, static_cast<uint32_t>(need));
  Put32(r + 4, cap);
  Put32(r + 8, orig);
  r[12] = static_cast<uint8_t>(dir);
  if (skip >= kVnetHdrLen && len >= kVnetHdrLen) {
    r[13] = f[1];  // virtio_net_hdr gso_type
    r[14] = f[4];  // gso_size, little-endian
    r[15] = f[5];
  } else {
    r[13] = r[14] = r[15] = 0;
  }
  Put32(r + 16, static_cast<uint32_t>(ts.tv_sec));
  Put32(r + 20, static_cast<uint32_t>(ts.tv_nsec));
  if (cap > 0) std::memcpy(r + kTeeRecHdr, f + skip, cap);
  TeeCount(ctl, kCtlWritten);
}

void Tee::Clear(napi_env env) {
  in = out = false;
  buf_ = nullptr;
  ctl_ = nullptr;
  size_ = 0;
  prog_.clear();
  for (napi_ref* r : {&buf_ref_, &ctl_ref_}) {
    if (*r != nullptr) napi_delete_reference(env, *r);
    *r = nullptr;
  }
}

bool Tee::Set(napi_env env, size_t argc, napi_value* argv, bool closed) {
  Clear(env);
  if (argc < 1 || IsNullish(env, argv[0])) return true;
  bool is_buffer = false, is_ta = false;
  void* data = nullptr;
  size_t size = 0;
  void* ctl = nullptr;
  size_t ctl_len = 0;
  napi_typedarray_type type = napi_int8_array;
  uint32_t dirs = 0, snap = 0, rxs = 0, txs = 0;
  napi_value ab;
  size_t ab_off;
  if (argc < 6 || napi_is_buffer(env, argv[0], &is_buffer) != napi_ok || !is_buffer ||
      napi_get_buffer_info(env, argv[0], &data, &size) != napi_ok ||
      napi_is_typedarray(env, argv[1], &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, argv[1], &type, &ctl_len, &ctl, &ab, &ab_off) != napi_ok ||
      type != napi_uint32_array || ctl_len < kTeeCtlWords || napi_get_value_uint32(env, argv[2], &dirs) != napi_ok ||
      napi_get_value_uint32(env, argv[3], &snap) != napi_ok ||
      napi_get_value_uint32(env, argv[4], &rxs) != napi_ok ||
      napi_get_value_uint32(env, argv[5], &txs) != napi_ok || rxs > kTeeMaxSkip || txs > kTeeMaxSkip ||
      size < 2 * kTeeRecHdr || size > 0xfffffff8u || (reinterpret_cast<uintptr_t>(data) & 3) != 0) {
    if (!IsExceptionPending(env)) {
      ThrowType(env, "setTee(ring: Buffer, ctl: Uint32Array(8), dirs, snaplen, rxSkip, txSkip) or setTee(null)");
    }
    return false;
  }
  std::vector<uint32_t> prog;
  if (argc >= 7 && !IsNullish(env, argv[6]) && !ReadFilterProgram(env, argv[6], &prog)) return false;
  if (closed || (dirs & (kTeeIn | kTeeOut)) == 0) return true;
  prog_ = std::move(prog);
  MVNET_CALL_B(env, napi_create_reference(env, argv[0], 1, &buf_ref_));
  MVNET_CALL_B(env, napi_create_reference(env, argv[1], 1, &ctl_ref_));
  buf_ = static_cast<uint8_t*>(data);
  size_ = static_cast<uint32_t>(size & ~static_cast<size_t>(7));
  ctl_ = static_cast<uint32_t*>(ctl);
  snap_ = snap;
  rx_skip = rxs;
  tx_skip = txs;
  in = (dirs & kTeeIn) != 0;
  out = (dirs & kTeeOut) != 0;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Switch membership (cut-through), shared by Device and VhostDevice. The switch
// (daemon/switch/network.ts) binds each member's device to its network's Fib with the member's
// source MAC and the port's limits. Frames read from a bound member are then forwarded by the
// member itself, in order, for as long as each is one the switch would forward to a known
// member unchanged (Route): it passes the port's receive checks, is unicast from the member's
// own MAC to a MAC in the Fib (not the gateway, not itself), is a plain frame (IsPlainFrame:
// nothing the switch's guard looks at), and passes the destination port's send checks, with
// the virtio_net_hdr made what the destination port has as the switch makes it (Route's
// `conv`: left out of a frame without offloads, or a zero one put before). The first frame that is anything else ends cut-through for the
// batch: it and the rest go to JS, so per-destination order is kept. The switch's bookkeeping
// (counters, MAC ageing) for the frames cut through is reported to JS afterwards (fwd_cb_), from
// a timer kReportMs later, so a reply the write provoked is forwarded before any JS runs. The
// Fib is a subset of the switch's MAC table (its entries expire before the table's and go with
// them), so nothing is cut through that the switch would not have forwarded the same way.

bool SwitchMember::TxAccepts(const uint8_t* f, uint32_t len) const {
  if (sw_pass_) {
    return len >= kVnetHdrLen + sw_min_ && len <= kGsoMaxFrame + kVnetHdrLen &&
           !(f[1] == 0 && len - kVnetHdrLen > sw_max_);
  }
  return len >= sw_min_ && len <= sw_max_;
}

void SwitchMember::CutWriteV(const iovec* iov, int count, uint32_t len) {
  // Reused (no allocation per segment); CutWrite copies what it keeps.
  static thread_local std::vector<uint8_t> frame;
  frame.resize(len);
  size_t off = 0;
  for (int i = 0; i < count && off < len; i++) {
    const size_t n = std::min(iov[i].iov_len, len - off);
    std::memcpy(frame.data() + off, iov[i].iov_base, n);
    off += n;
  }
  iovec one = {frame.data(), off};
  CutWrite(&one, 1);
}

const FibEntry* SwitchMember::Lookup(uint64_t dmac) {
  if (cache_gen_ == fib_->gen_ && cache_dmac_ == dmac) return &cache_entry_;
  auto it = fib_->entries_.find(dmac);
  if (it == fib_->entries_.end()) return nullptr;
  cache_gen_ = fib_->gen_;
  cache_dmac_ = dmac;
  cache_entry_ = it->second;
  return &cache_entry_;
}

const uint8_t kZeroVnetHdr[10] = {0};

namespace {

// The one's-complement sum of p[0, n) as big-endian 16-bit words (an odd last byte padded),
// folded to 16 bits. Pieces summed separately must start at even offsets of the whole.
uint32_t SumBE(const uint8_t* p, size_t n) {
  uint64_t acc = 0;
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    acc += (w & 0xffffffffu) + (w >> 32);  // native order: the sum commutes with byte swaps
    p += 8;
    n -= 8;
  }
  while (n >= 2) {
    uint16_t w;
    std::memcpy(&w, p, 2);
    acc += w;
    p += 2;
    n -= 2;
  }
  if (n == 1) {
    const uint8_t last[2] = {p[0], 0};
    uint16_t w;
    std::memcpy(&w, last, 2);
    acc += w;
  }
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return __builtin_bswap16(static_cast<uint16_t>(acc));
}

inline uint16_t Finish(uint64_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum & 0xffff);
}

inline uint16_t Be16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
inline void PutBe16(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}

constexpr uint32_t kMaxGsoSegments = 2048;  // gso.ts MAX_GSO_SEGMENTS
// gso.ts MIN_GSO_SIZE: Linux's TCP_MIN_MSS. A smaller gso_size is no real guest's and only
// multiplies the frames (and synchronous writes) one guest frame costs (review-14b B).
constexpr uint32_t kMinGsoSize = 88;

struct OffloadPlan {
  bool segment;  // TCP segmentation; else a partial checksum to complete
  bool v6;
  uint32_t ip, l4, hdrs;  // offsets in the Ethernet frame
  uint32_t gso_size, segments;
  uint32_t max_seg, min_seg;  // the plain frames' sizes
  uint32_t csum_start, csum_offset;
};

bool PlanOffload(const uint8_t* f, uint32_t len, uint32_t avail, OffloadPlan* p);

}  // namespace

// What normalizeOffload (daemon/wire/gso.ts) would do with a frame (virtio_net_hdr first), for
// the offloads cut-through makes plain itself: a partial checksum (GSO_NONE + NEEDS_CSUM) and
// TCP segmentation (GSO_TCPV4/V6, ECN allowed) of a plain IPv4/IPv6 TCP frame (IsPlainFrame has
// passed: no VLAN, no IPv4 fragment, no IPv6 extension header). The headers must lie in the
// first `avail` bytes. False for anything normalizeOffload refuses or does otherwise (UFO).
namespace {
bool PlanOffload(const uint8_t* f, uint32_t len, uint32_t avail, OffloadPlan* p) {
  if (len < kVnetHdrLen + 14 || avail < kVnetHdrLen + 14) return false;
  const uint32_t flen = len - kVnetHdrLen;
  const uint8_t* e = f + kVnetHdrLen;
  const bool needs = (f[0] & 1) != 0;
  const uint8_t base = f[1] & 0x7f;
  const uint32_t gso_size = f[4] | (f[5] << 8);
  const uint32_t cs = f[6] | (f[7] << 8), co = f[8] | (f[9] << 8);
  if (needs && (cs >= flen || cs + co + 2 > flen)) return false;
  p->csum_start = cs;
  p->csum_offset = co;
  if (base != 0 && base != 1 && base != 4) return false;
  if ((base == 0 && ((f[1] & 0x80) != 0 || !needs)) || (base != 0 && gso_size < kMinGsoSize)) return false;
  // The IP header the frame itself has (IsPlainFrame has passed: no VLAN tag, no IPv4 fragment,
  // no IPv6 extension header), and so where its TCP/UDP header starts.
  const uint32_t type = Be16(e + 12);
  const uint32_t ip = 14;
  uint32_t l4, proto;
  if (type == 0x86dd && base != 1) {
    if (avail < kVnetHdrLen + ip + 40 || flen < ip + 40 || (e[ip] >> 4) != 6) return false;
    proto = e[ip + 6];
    l4 = ip + 40;
  } else if (type == 0x0800 && base != 4) {
    if (avail < kVnetHdrLen + ip + 20 || flen < ip + 20 || (e[ip] >> 4) != 4) return false;
    const uint32_t ihl = (e[ip] & 0x0fu) * 4u;
    if (ihl < 20 || ((e[ip + 6] & 0x3f) | e[ip + 7]) != 0) return false;
    proto = e[ip + 9];
    l4 = ip + ihl;
  } else {
    return false;
  }
  if (proto != 6 && (proto != 17 || base != 0)) return false;
  // A partial checksum only where Linux puts one: the checksum field of that TCP/UDP header.
  // Anything else would let the guest rewrite bytes the switch's checks (source MAC, guard)
  // have already judged (review-14b A).
  if (needs && (cs != l4 || co != (proto == 6 ? 16u : 6u))) return false;
  if (base == 0) {
    p->segment = false;
    p->max_seg = p->min_seg = flen;
    return true;
  }
  const bool v6 = base == 4;
  if (l4 + 20 > flen || kVnetHdrLen + l4 + 20 > avail) return false;
  const uint32_t thl = (e[l4 + 12] >> 4) * 4u;
  const uint32_t hdrs = l4 + thl;
  if (thl < 20 || hdrs > flen || kVnetHdrLen + hdrs > avail) return false;
  const uint32_t payload = flen - hdrs;
  const uint32_t first = std::min(gso_size, payload);
  if (!v6 && hdrs - ip + first > 0xffff) return false;
  if (v6 && hdrs - ip - 40 + first > 0xffff) return false;
  const uint32_t n = payload == 0 ? 1 : (payload + gso_size - 1) / gso_size;
  if (n > kMaxGsoSegments) return false;
  p->segment = true;
  p->v6 = v6;
  p->ip = ip;
  p->l4 = l4;
  p->hdrs = hdrs;
  p->gso_size = gso_size;
  p->segments = n;
  p->max_seg = hdrs + first;
  p->min_seg = hdrs + (payload == 0 ? 0 : payload - (n - 1) * gso_size);
  return true;
}
}  // namespace

uint32_t SwitchMember::CutNormalized(SwitchMember* dst, const uint8_t* f, uint32_t len) {
  OffloadPlan p;
  if (!PlanOffload(f, len, len, &p)) return 0;  // cannot happen: Route planned it on the same bytes
  const uint8_t* e = f + kVnetHdrLen;
  const uint32_t flen = len - kVnetHdrLen;
  if (!p.segment) {
    // gso.ts completeChecksum: a copy with the sum of [csum_start, end) folded in (0 as 0xffff).
    static thread_local std::vector<uint8_t> copy;
    copy.assign(e, e + flen);
    const uint16_t c = Finish(SumBE(copy.data() + p.csum_start, flen - p.csum_start));
    PutBe16(copy.data() + p.csum_start + p.csum_offset, c == 0 ? 0xffff : c);
    iovec one = {copy.data(), flen};
    dst->CutWrite(&one, 1);
    return 1;
  }
  // gso.ts segmentTcp: the headers copied before each piece, lengths, IPv4 id and header
  // checksum fixed, sequence numbers advanced, FIN/PSH on the last only, CWR on the first only,
  // the TCP checksum computed from scratch over the pseudo-header.
  uint8_t hb[14 + 60 + 60];
  std::memcpy(hb, e, p.hdrs);
  const uint32_t ip = p.ip, l4 = p.l4, thl = p.hdrs - p.l4;
  const uint32_t seq0 = (static_cast<uint32_t>(e[l4 + 4]) << 24) | (e[l4 + 5] << 16) | (e[l4 + 6] << 8) | e[l4 + 7];
  const uint32_t id0 = p.v6 ? 0 : Be16(e + ip + 4);
  const uint8_t flags0 = e[l4 + 13];
  for (uint32_t i = 0; i < p.segments; i++) {
    const uint32_t from = p.hdrs + i * p.gso_size;
    const uint32_t seg = std::min(p.gso_size, flen - from);
    uint64_t pseudo;
    if (p.v6) {
      PutBe16(hb + ip + 4, p.hdrs - ip - 40 + seg);
      pseudo = static_cast<uint64_t>(SumBE(hb + ip + 8, 32)) + 6 + thl + seg;
    } else {
      const uint32_t ihl = l4 - ip;
      PutBe16(hb + ip + 2, p.hdrs - ip + seg);
      PutBe16(hb + ip + 4, (id0 + i) & 0xffff);
      hb[ip + 10] = hb[ip + 11] = 0;
      PutBe16(hb + ip + 10, Finish(SumBE(hb + ip, ihl)));
      pseudo = static_cast<uint64_t>(SumBE(hb + ip + 12, 8)) + 6 + thl + seg;
    }
    const uint32_t seq = seq0 + i * p.gso_size;
    hb[l4 + 4] = static_cast<uint8_t>(seq >> 24);
    hb[l4 + 5] = static_cast<uint8_t>(seq >> 16);
    hb[l4 + 6] = static_cast<uint8_t>(seq >> 8);
    hb[l4 + 7] = static_cast<uint8_t>(seq);
    uint8_t fl = flags0;
    if (i < p.segments - 1) fl &= static_cast<uint8_t>(~0x09);  // FIN, PSH
    if (i > 0) fl &= static_cast<uint8_t>(~0x80);               // CWR
    hb[l4 + 13] = fl;
    hb[l4 + 16] = hb[l4 + 17] = 0;
    // thl is a multiple of 4: the payload's sum starts at an even offset of the segment.
    PutBe16(hb + l4 + 16, Finish(pseudo + SumBE(hb + l4, thl) + SumBE(e + from, seg)));
    iovec two[2] = {{hb, p.hdrs}, {const_cast<uint8_t*>(e + from), seg}};
    dst->CutWriteV(two, 2, p.hdrs + seg);
  }
  return p.segments;
}

SwitchMember* SwitchMember::Route(const uint8_t* f, uint32_t len, uint32_t slot, uint64_t now, int* conv) {
  const uint32_t h = sw_h_;
  // DevicePort's receive checks (runt, oversize).
  if (sw_pass_) {
    if (len < kVnetHdrLen + sw_min_ || len > slot || (f[1] == 0 && len - kVnetHdrLen > sw_max_)) return nullptr;
  } else if (len < sw_min_ || len > sw_max_) {
    return nullptr;
  }
  // The switch's own checks, in Network.input's order.
  if (len < h + kMinFrame || (h == 0 && len > fib_->max_frame_)) return nullptr;
  const uint8_t* eth = f + h;
  if ((eth[6] & 1) != 0 || ReadMac(eth + 6) != sw_mac_) return nullptr;
  if (!IsPlainFrame(f, h, len)) return nullptr;  // the switch's guard judges it
  if ((eth[0] & 1) != 0) return nullptr;
  uint64_t dmac = ReadMac(eth);
  if (dmac == fib_->gateway_mac_) return nullptr;
  const FibEntry* e = Lookup(dmac);
  if (e == nullptr || now >= e->deadline) return nullptr;
  SwitchMember* dst = e->dev;
  if (dst == this || dst->fib_ != fib_ || dst->Closed()) return nullptr;
  if (dst->sw_h_ == h) {
    *conv = kCutSame;
    return dst->TxAccepts(f, len) ? dst : nullptr;
  }
  if (h == kVnetHdrLen && dst->sw_h_ == 0) {
    // Network.enqueue: normalizeOffload, which for a frame without GSO or a partial checksum
    // only leaves the header out; TCP super-frames and partial checksums are made plain here
    // the same way (OffloadPlan); anything else (UFO, a header normalizeOffload refuses) goes
    // to the switch.
    if (f[1] == 0 && (f[0] & 1) == 0) {
      *conv = kCutStrip;
      return dst->TxAccepts(f + kVnetHdrLen, len - kVnetHdrLen) ? dst : nullptr;
    }
    OffloadPlan plan;
    if (!PlanOffload(f, len, std::min(len, kRouteBytes), &plan)) return nullptr;
    *conv = kCutNormalize;
    return dst->TxAccepts(f + kVnetHdrLen, plan.max_seg) && dst->TxAccepts(f + kVnetHdrLen, plan.min_seg) ? dst : nullptr;
  }
  if (h == 0 && dst->sw_h_ == kVnetHdrLen) {
    // Network.enqueue: a zero header before it. TxAccepts reads only the header's bytes of `f`.
    *conv = kCutAdd;
    return dst->TxAccepts(kZeroVnetHdr, len + kVnetHdrLen) ? dst : nullptr;
  }
  return nullptr;
}

bool SwitchMember::CanCutThrough() const {
  return fib_ != nullptr && sw_rx_ && sw_mac_set_ && !fib_->entries_.empty();
}

void SwitchMember::NoteForwarded(double frames, double bytes) {
  fwd_frames_ += frames;
  fwd_bytes_ += bytes;
  ArmForwarded();
}

void SwitchMember::InitReport(uv_loop_t* loop) {
  uv_timer_init(loop, &report_);
  // Deferred reports of cut-through frames never keep the process alive.
  uv_unref(reinterpret_cast<uv_handle_t*>(&report_));
  report_.data = this;
}

// After uv_close no report runs: the handle's data may become what the owner's callback wants.
void SwitchMember::CloseReport(uv_close_cb cb, void* data) {
  uv_close(reinterpret_cast<uv_handle_t*>(&report_), cb);
  report_.data = data;
}

// The report goes out from the timers phase at least kReportMs later (never from the callback
// that read), so a reply the write provoked is forwarded before any JS runs, and a busy member
// makes one JS call per kReportMs rather than one per loop iteration.
void SwitchMember::ArmForwarded() {
  if (fwd_armed_ || Closed()) return;
  fwd_armed_ = true;
  uv_timer_start(&report_, OnReport, kReportMs, 0);
}

void SwitchMember::OnReport(uv_timer_t* handle) { static_cast<SwitchMember*>(handle->data)->RunForwarded(); }

// Reports the frames cut through since the last report: fwd_cb_(frames, bytes).
void SwitchMember::RunForwarded() {
  if (fwd_armed_) {
    fwd_armed_ = false;
    uv_timer_stop(&report_);
  }
  if (fwd_frames_ == 0) return;
  double frames = fwd_frames_, bytes = fwd_bytes_;
  fwd_frames_ = fwd_bytes_ = 0;
  if (fwd_cb_ == nullptr || Closed()) return;
  CallForwarded(fwd_cb_, frames, bytes);
}

void Fib::Unbind(SwitchMember* d) {
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (it->second.dev == d) {
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
  members_.erase(std::remove_if(members_.begin(), members_.end(), [d](const Member& m) { return m.m == d; }),
                 members_.end());
  Changed();
}

void SwitchMember::UnbindSwitch() {
  if (fib_ != nullptr) fib_->Unbind(this);
  fib_ = nullptr;
  sw_rx_ = false;
  sw_mac_set_ = false;
}

void SwitchMember::FibGone() {
  fib_ = nullptr;
  sw_rx_ = false;
  sw_mac_set_ = false;
}

// bindSwitch(fib, mode, minLen, maxFrame, mac, onForwarded): mode 0 = frames without vnet header,
// 1 = frames with one ('pass'), 2 = reads carry one that JS normalizes (only a destination);
// minLen/maxFrame: the port's limits; mac: the member's source MAC or -1 while unknown;
// onForwarded(frames, bytes): frames cut through from this member (bytes without vnet headers).
napi_value SwitchMember::JsBind(napi_env env, size_t argc, napi_value* argv, void* wrapped) {
  Fib* fib = argc >= 1 ? Fib::Unwrap(env, argv[0]) : nullptr;
  uint32_t mode = 0, min_len = 0, max_frame = 0;
  double mac = -1;
  napi_valuetype cb_type = napi_undefined;
  if (argc < 6 || fib == nullptr || napi_get_value_uint32(env, argv[1], &mode) != napi_ok || mode > 2 ||
      napi_get_value_uint32(env, argv[2], &min_len) != napi_ok ||
      napi_get_value_uint32(env, argv[3], &max_frame) != napi_ok ||
      napi_get_value_double(env, argv[4], &mac) != napi_ok || napi_typeof(env, argv[5], &cb_type) != napi_ok ||
      cb_type != napi_function) {
    if (!IsExceptionPending(env)) ThrowType(env, "bindSwitch(fib, mode, minLen, maxFrame, mac, onForwarded)");
    return nullptr;
  }
  if (Closed()) return nullptr;
  UnbindSwitch();
  if (fwd_cb_ != nullptr) napi_delete_reference(env, fwd_cb_);
  fwd_cb_ = nullptr;
  MVNET_CALL(env, napi_create_reference(env, argv[5], 1, &fwd_cb_));
  fib_ = fib;
  fib->Bind(wrapped, this);
  sw_rx_ = mode != 2;
  sw_pass_ = mode == 1;
  sw_h_ = mode == 1 ? kVnetHdrLen : 0;
  sw_min_ = min_len;
  sw_max_ = max_frame;
  sw_mac_set_ = mac >= 0 && mac <= 281474976710655.0;
  sw_mac_ = sw_mac_set_ ? static_cast<uint64_t>(mac) : 0;
  return nullptr;
}

napi_value SwitchMember::JsSetMac(napi_env env, size_t argc, napi_value* argv) {
  double mac = -1;
  if (argc < 1 || napi_get_value_double(env, argv[0], &mac) != napi_ok) {
    ThrowType(env, "setSwitchMac(mac: number)");
    return nullptr;
  }
  sw_mac_set_ = fib_ != nullptr && mac >= 0 && mac <= 281474976710655.0;
  sw_mac_ = sw_mac_set_ ? static_cast<uint64_t>(mac) : 0;
  return nullptr;
}

// Leaves the switch: what was cut through and not yet reported is reported now (synchronously).
napi_value SwitchMember::JsUnbind(napi_env env) {
  napi_ref cb = fwd_cb_;
  fwd_cb_ = nullptr;
  double frames = fwd_frames_, bytes = fwd_bytes_;
  fwd_frames_ = fwd_bytes_ = 0;
  if (fwd_armed_) {
    fwd_armed_ = false;
    uv_timer_stop(&report_);
  }
  napi_value fn = nullptr;
  if (cb != nullptr && frames > 0 && napi_get_reference_value(env, cb, &fn) == napi_ok && fn != nullptr) {
    napi_value self, argv[2], result;
    napi_get_undefined(env, &self);
    napi_create_double(env, frames, &argv[0]);
    napi_create_double(env, bytes, &argv[1]);
    napi_call_function(env, self, fn, 2, argv, &result);  // an exception propagates
  }
  if (cb != nullptr) napi_delete_reference(env, cb);
  UnbindSwitch();
  return nullptr;
}

// Reports what was cut through and not yet reported now (synchronously), e.g. before counters
// are read.
napi_value SwitchMember::JsFlush(napi_env env) {
  if (fwd_armed_) {
    fwd_armed_ = false;
    uv_timer_stop(&report_);
  }
  double frames = fwd_frames_, bytes = fwd_bytes_;
  if (fwd_cb_ == nullptr || Closed() || frames == 0) return nullptr;
  fwd_frames_ = fwd_bytes_ = 0;
  napi_value fn = nullptr;
  if (napi_get_reference_value(env, fwd_cb_, &fn) == napi_ok && fn != nullptr) {
    napi_value self, argv[2], result;
    napi_get_undefined(env, &self);
    napi_create_double(env, frames, &argv[0]);
    napi_create_double(env, bytes, &argv[1]);
    napi_call_function(env, self, fn, 2, argv, &result);  // an exception propagates
  }
  return nullptr;
}

namespace {
// Destinations with deferred completions (a vhost RX ring's used index and interrupt).
thread_local std::vector<SwitchMember*> cut_dirty;
}  // namespace

void MarkCutDirty(SwitchMember* m) {
  if (std::find(cut_dirty.begin(), cut_dirty.end(), m) == cut_dirty.end()) cut_dirty.push_back(m);
}

void PublishCutWrites() {
  if (cut_dirty.empty()) return;
  std::vector<SwitchMember*> now;
  now.swap(cut_dirty);
  for (SwitchMember* m : now) m->CutPublish();
}

void ForgetCutDirty(SwitchMember* m) {
  cut_dirty.erase(std::remove(cut_dirty.begin(), cut_dirty.end(), m), cut_dirty.end());
}

Fib* Fib::Unwrap(napi_env env, napi_value v) {
  napi_valuetype t = napi_undefined;
  bool tagged = false;
  void* p = nullptr;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_object ||
      napi_check_object_type_tag(env, v, &kFibTag, &tagged) != napi_ok || !tagged ||
      napi_unwrap(env, v, &p) != napi_ok || p == nullptr) {
    if (!IsExceptionPending(env)) ThrowType(env, "not a switch Fib");
    return nullptr;
  }
  return static_cast<Fib*>(p);
}

// new Fib(gatewayMac, maxFrame)
napi_value Fib::New(napi_env env, napi_callback_info info) {
  napi_value new_target;
  MVNET_CALL(env, napi_get_new_target(env, info, &new_target));
  if (new_target == nullptr) {
    ThrowType(env, "Fib must be called with new");
    return nullptr;
  }
  size_t argc = 2;
  napi_value argv[2], self;
  MVNET_CALL(env, napi_get_cb_info(env, info, &argc, argv, &self, nullptr));
  double gw = 0;
  uint32_t max_frame = 0;
  if (argc < 2 || napi_get_value_double(env, argv[0], &gw) != napi_ok ||
      napi_get_value_uint32(env, argv[1], &max_frame) != napi_ok) {
    ThrowType(env, "new Fib(gatewayMac: number, maxFrame: number)");
    return nullptr;
  }
  Fib* fib = new Fib();
  fib->gateway_mac_ = gw >= 0 && gw <= 281474976710655.0 ? static_cast<uint64_t>(gw) : 0;
  fib->max_frame_ = max_frame;
  if (napi_wrap(env, self, fib, Finalize, nullptr, nullptr) != napi_ok) {
    delete fib;
    ThrowLastError(env, "napi_wrap");
    return nullptr;
  }
  MVNET_CALL(env, napi_type_tag_object(env, self, &kFibTag));
  return self;
}

void Fib::Finalize(napi_env /*env*/, void* data, void* /*hint*/) {
  Fib* fib = static_cast<Fib*>(data);
  for (const Member& m : fib->members_) m.m->FibGone();
  delete fib;
}

// set(mac, device, validMs): frames to `mac` may be cut through to `device` (a Device or a
// VhostDevice bound to this Fib) for the next validMs milliseconds. Returns false (and sets
// nothing) for an unbound device. Members are recognised by the pointer their object wraps,
// so nothing unknown is ever cast.
napi_value Fib::JsSet(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], self;
  MVNET_CALL(env, napi_get_cb_info(env, info, &argc, argv, &self, nullptr));
  Fib* fib = Fib::Unwrap(env, self);
  if (!fib) return nullptr;
  double mac = -1, valid_ms = 0;
  void* p = nullptr;
  if (argc < 3 || napi_get_value_double(env, argv[0], &mac) != napi_ok ||
      napi_get_value_double(env, argv[2], &valid_ms) != napi_ok || napi_unwrap(env, argv[1], &p) != napi_ok ||
      p == nullptr) {
    if (IsExceptionPending(env)) {
      napi_value exc;
      napi_get_and_clear_last_exception(env, &exc);
    }
    ThrowType(env, "set(mac: number, device: Device, validMs: number)");
    return nullptr;
  }
  SwitchMember* d = nullptr;
  for (const Member& m : fib->members_) {
    if (m.wrapped == p) d = m.m;
  }
  bool ok = d != nullptr && mac >= 0 && mac <= 281474976710655.0 && valid_ms > 0;
  uint64_t key = ok ? static_cast<uint64_t>(mac) : 0;
  if (ok) {
    fib->entries_[key] = {d, uv_hrtime() + static_cast<uint64_t>(valid_ms * 1e6)};
  } else if (mac >= 0 && mac <= 281474976710655.0) {
    fib->entries_.erase(static_cast<uint64_t>(mac));
  }
  fib->Changed();
  napi_value result;
  MVNET_CALL(env, napi_get_boolean(env, ok, &result));
  return result;
}

napi_value Fib::JsDelete(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], self;
  MVNET_CALL(env, napi_get_cb_info(env, info, &argc, argv, &self, nullptr));
  Fib* fib = Fib::Unwrap(env, self);
  if (!fib) return nullptr;
  double mac = -1;
  if (argc < 1 || napi_get_value_double(env, argv[0], &mac) != napi_ok) {
    ThrowType(env, "delete(mac: number)");
    return nullptr;
  }
  if (mac >= 0 && mac <= 281474976710655.0) fib->entries_.erase(static_cast<uint64_t>(mac));
  fib->Changed();
  return nullptr;
}

napi_value Fib::JsClear(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  napi_value self;
  MVNET_CALL(env, napi_get_cb_info(env, info, &argc, nullptr, &self, nullptr));
  Fib* fib = Fib::Unwrap(env, self);
  if (!fib) return nullptr;
  fib->entries_.clear();
  fib->Changed();
  return nullptr;
}

napi_value DefineDeviceClass(napi_env env) {
  napi_property_descriptor methods[] = {
      {"start", nullptr, Device::JsStart, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"stop", nullptr, Device::JsStop, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"write", nullptr, Device::JsWrite, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"setPeer", nullptr, Device::JsSetPeer, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"stats", nullptr, Device::JsStats, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"close", nullptr, Device::JsClose, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"bindSwitch", nullptr, Device::JsBindSwitch, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"setSwitchMac", nullptr, Device::JsSetSwitchMac, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"unbindSwitch", nullptr, Device::JsUnbindSwitch, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"flushForwarded", nullptr, Device::JsFlushForwarded, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"setTee", nullptr, Device::JsSetTee, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"Fib", nullptr, nullptr, nullptr, nullptr, nullptr, napi_static, nullptr},
  };
  napi_property_descriptor fib_methods[] = {
      {"set", nullptr, Fib::JsSet, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"delete", nullptr, Fib::JsDelete, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"clear", nullptr, Fib::JsClear, nullptr, nullptr, nullptr, napi_default_method, nullptr},
  };
  napi_value fib_cls;
  MVNET_CALL(env, napi_define_class(env, "Fib", NAPI_AUTO_LENGTH, Fib::New, nullptr,
                                    sizeof(fib_methods) / sizeof(fib_methods[0]), fib_methods, &fib_cls));
  constexpr size_t kMethods = sizeof(methods) / sizeof(methods[0]);
  methods[kMethods - 1].value = fib_cls;
  napi_value cls;
  MVNET_CALL(env, napi_define_class(env, "Device", NAPI_AUTO_LENGTH, Device::New, nullptr, kMethods, methods, &cls));
  return cls;
}

}  // namespace mvnet
