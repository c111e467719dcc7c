#include "device.h"

#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
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
#include <vector>

#include "napi_util.h"

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

class Device {
 public:
  static napi_value New(napi_env env, napi_callback_info info);
  static napi_value JsStart(napi_env env, napi_callback_info info);
  static napi_value JsStop(napi_env env, napi_callback_info info);
  static napi_value JsWrite(napi_env env, napi_callback_info info);
  static napi_value JsSetPeer(napi_env env, napi_callback_info info);
  static napi_value JsStats(napi_env env, napi_callback_info info);
  static napi_value JsClose(napi_env env, napi_callback_info info);
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
  void CallJs(const char* prop, napi_value (*make_arg)(napi_env, const void*), const void* ctx);
  uint32_t Submit(const iovec* frames, size_t n);
  SendResult TrySend(const iovec* frames, size_t n, uint32_t prefix, uint32_t exclude);
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
  uint8_t spare_[1];

  uv_poll_t poll_;
  uv_timer_t timer_;
  int events_ = 0;
  TimerMode timer_mode_ = kTimerOff;
  int pending_closes_ = 0;
  int poll_errors_ = 0;

  bool reading_ = false;
  bool closed_ = false;
  bool failed_ = false;
  bool finalized_ = false;
  bool error_reported_ = false;

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
};

napi_value Device::New(napi_env env, napi_callback_info info) {
  napi_value new_target;
  MVNET_CALL(env, napi_get_new_target(env, info, &new_target));
  if (new_target == nullptr) {
    ThrowType(env, "Device must be called with new");
    return nullptr;
  }
  size_t argc = 1;
  napi_value argv[1], self;
  MVNET_CALL(env, napi_get_cb_info(env, info, &argc, argv, &self, nullptr));
  napi_valuetype t = napi_undefined;
  if (argc >= 1) MVNET_CALL(env, napi_typeof(env, argv[0], &t));
  if (t != napi_object) {
    ThrowType(env, "new Device(options): options must be an object");
    return nullptr;
  }
  napi_value opts = argv[0];
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
  MVNET_CALL(env, napi_create_buffer(env, static_cast<size_t>(slot) * batch, &data, &buffer));
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
  d->poll_.data = d;
  d->timer_.data = d;

  if (napi_wrap(env, self, d, Finalize, nullptr, &d->wrapper_) != napi_ok) {
    ThrowLastError(env, "napi_wrap");
    d->finalized_ = true;
    d->fd_ = -1;  // not ours: the constructor failed
    d->Close();
    return nullptr;
  }
  return self;
}

Device* Device::Unwrap(napi_env env, napi_callback_info info, size_t* argc, napi_value* argv) {
  napi_value self;
  if (napi_get_cb_info(env, info, argc, argv, &self, nullptr) != napi_ok) {
    ThrowLastError(env, "napi_get_cb_info");
    return nullptr;
  }
  void* p = nullptr;
  if (napi_unwrap(env, self, &p) != napi_ok || p == nullptr) {
    ThrowType(env, "not a Device");
    return nullptr;
  }
  return static_cast<Device*>(p);
}

void Device::Finalize(napi_env env, void* data, void* /*hint*/) {
  Device* d = static_cast<Device*>(data);
  d->finalized_ = true;
  if (d->wrapper_) {
    napi_delete_reference(env, d->wrapper_);
    d->wrapper_ = nullptr;
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
  SetActive(false);
  // uv_close() stops the poll watcher and removes the fd from epoll synchronously, so the fd can
  // be closed right away (a persistent tun/tap or a socket file is released when close() returns).
  uv_close(reinterpret_cast<uv_handle_t*>(&poll_), OnHandleClosed);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), OnHandleClosed);
  pending_closes_ = 2;
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
}

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

uint32_t Device::ReadBatch() {
  uint32_t n = 0;
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
  } else {
    uint32_t empty = 0;
    while (n < batch_) {
      // tun silently truncates a packet longer than the read; one spare byte behind the slot
      // tells such a packet apart (its length is then reported as slot + 1: oversize).
      iovec v[2] = {{buf_ + static_cast<size_t>(n) * slot_, slot_}, {spare_, sizeof(spare_)}};
      ssize_t r = readv(fd_, v, 2);
      if (r > 0) {
        if (r > static_cast<ssize_t>(slot_)) r = slot_ + 1;
        lens_[n++] = static_cast<uint32_t>(r);
        rx_bytes_ += static_cast<double>(r);
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
    rx_frames_ += n;
  }
  if (n > 0) {
    uint32_t count = n;
    CallJs(
        "onRead",
        [](napi_env env, const void* ctx) -> napi_value {
          napi_value v = nullptr;
          napi_create_uint32(env, *static_cast<const uint32_t*>(ctx), &v);
          return v;
        },
        &count);
  }
  if (fatal != 0 && !closed_) Fail(fatal, "read");
  return n;
}

void Device::CallJs(const char* prop, napi_value (*make_arg)(napi_env, const void*), const void* ctx) {
  if (wrapper_ == nullptr || finalized_) return;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env_, &scope) != napi_ok) return;
  napi_value self = nullptr, fn = nullptr;
  if (napi_get_reference_value(env_, wrapper_, &self) == napi_ok && self != nullptr &&
      napi_get_named_property(env_, self, prop, &fn) == napi_ok) {
    napi_value arg = make_arg(env_, ctx);
    napi_value result;
    napi_status st = napi_make_callback(env_, nullptr, self, fn, 1, &arg, &result);
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
  napi_close_handle_scope(env_, scope);
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
  CallJs(
      "onError",
      [](napi_env env, const void* c) -> napi_value {
        const std::string* s = static_cast<const std::string*>(c);
        napi_value v = nullptr;
        napi_create_string_utf8(env, s->data(), s->size(), &v);
        return v;
      },
      &msg);
}

void Device::FreeQueue() {
  for (QueuedFrame& q : queue_) std::free(q.data);
  queue_.clear();
  queued_bytes_ = 0;
}

uint32_t Device::Submit(const iovec* frames, size_t n) {
  size_t i = 0;
  uint32_t accepted = 0;
  if (queue_.empty()) {
    SendResult r = TrySend(frames, n, tx_hdr_, 0);
    i = r.consumed;
    accepted += static_cast<uint32_t>(r.written);
  }
  bool queued = false;
  for (; i < n; i++) {
    if (Enqueue(frames[i])) {
      accepted++;
      queued = true;
    }
  }
  if (queued) UpdateIo();
  return accepted;
}

// Sends frames in order until one would block. `prefix` zero bytes are sent before each frame;
// `exclude` bytes of each frame are not counted in txBytes (a header already in the copy).
SendResult Device::TrySend(const iovec* f, size_t n, uint32_t prefix, uint32_t exclude) {
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
        tx_frames_ += r;
        written += r;
        i += r;
        continue;
      }
      int err = r < 0 ? errno : EIO;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) return {i, written};
      drop_io_++;
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
        tx_bytes_ += static_cast<double>(f[i].iov_len - exclude);
        tx_frames_++;
        written++;
        i++;
        continue;
      }
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) return {i, written};
      drop_io_++;
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
    SendResult r = TrySend(flush_iov_.data(), m, 0, tx_hdr_);
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
  bool is_array = false;
  if (argc >= 1) MVNET_CALL(env, napi_is_array(env, argv[0], &is_array));
  if (!is_array) {
    ThrowType(env, "write(frames: Buffer[], count: number): frames must be an array");
    return nullptr;
  }
  uint32_t length = 0;
  MVNET_CALL(env, napi_get_array_length(env, argv[0], &length));
  uint32_t n = length;
  if (argc >= 2 && !IsNullish(env, argv[1])) {
    double c = 0;
    if (napi_get_value_double(env, argv[1], &c) != napi_ok) {
      ThrowType(env, "write(frames, count): count must be a number");
      return nullptr;
    }
    if (c < n) n = c > 0 ? static_cast<uint32_t>(c) : 0;
  }
  napi_value result;
  if (n == 0) {
    MVNET_CALL(env, napi_create_uint32(env, 0, &result));
    return result;
  }
  if (d->closed_ || d->failed_) {
    d->drop_io_ += n;
    MVNET_CALL(env, napi_create_uint32(env, 0, &result));
    return result;
  }
  if (d->dgram_ && d->peer_len_ == 0) {
    d->drop_nopeer_ += n;
    MVNET_CALL(env, napi_create_uint32(env, 0, &result));
    return result;
  }
  d->frames_.resize(n);
  for (uint32_t i = 0; i < n; i++) {
    napi_handle_scope scope;
    MVNET_CALL(env, napi_open_handle_scope(env, &scope));
    napi_value el;
    bool ok = napi_get_element(env, argv[0], i, &el) == napi_ok;
    void* data = nullptr;
    size_t len = 0;
    napi_typedarray_type type = napi_int8_array;
    bool is_ta = false;
    if (ok) ok = napi_is_typedarray(env, el, &is_ta) == napi_ok && is_ta;
    if (ok) {
      napi_value ab;
      size_t offset;
      ok = napi_get_typedarray_info(env, el, &type, &len, &data, &ab, &offset) == napi_ok &&
           (type == napi_uint8_array || type == napi_int8_array || type == napi_uint8_clamped_array);
    }
    napi_close_handle_scope(env, scope);
    if (!ok) {
      ThrowType(env, "write(frames): frames[" + std::to_string(i) + "] is not a Buffer");
      return nullptr;
    }
    d->frames_[i].iov_base = data;
    d->frames_[i].iov_len = len;
  }
  uint32_t accepted = d->Submit(d->frames_.data(), n);
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
      !SetNumber(env, o, "dropNoPeer", d->drop_nopeer_) ||
      !SetNumber(env, o, "queued", static_cast<double>(d->queue_.size())) ||
      !SetNumber(env, o, "callbackErrors", d->cb_errors_)) {
    return nullptr;
  }
  if (d->dgram_ && d->peer_len_ > 0) {
    if (!SetString(env, o, "peer", d->PeerString())) return nullptr;
  }
  return o;
}

napi_value Device::JsClose(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  Device* d = Unwrap(env, info, &argc, nullptr);
  if (!d) return nullptr;
  d->Close();
  return nullptr;
}

}  // namespace

napi_value DefineDeviceClass(napi_env env) {
  napi_property_descriptor methods[] = {
      {"start", nullptr, Device::JsStart, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"stop", nullptr, Device::JsStop, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"write", nullptr, Device::JsWrite, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"setPeer", nullptr, Device::JsSetPeer, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"stats", nullptr, Device::JsStats, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"close", nullptr, Device::JsClose, nullptr, nullptr, nullptr, napi_default_method, nullptr},
  };
  napi_value cls;
  MVNET_CALL(env, napi_define_class(env, "Device", NAPI_AUTO_LENGTH, Device::New, nullptr,
                                    sizeof(methods) / sizeof(methods[0]), methods, &cls));
  return cls;
}

}  // namespace mvnet
