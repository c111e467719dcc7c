#include "vhost.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "device.h"
#include "napi_util.h"
#include "vhost-mem.h"
#include "vhost-msg.h"
#include "vhost-ring.h"

namespace mvnet {
namespace {

using vhost::Chain;
using vhost::MemTable;
using vhost::Msg;
using vhost::MsgReader;
using vhost::PopResult;
using vhost::Ring;
using vhost::Seg;

constexpr uint32_t kMaxBatch = 1024;
constexpr uint32_t kVnetHdrLen = 10;      // struct virtio_net_hdr: what JS sees
constexpr uint32_t kMrgHdrLen = 12;       // with num_buffers: the guest's with VERSION_1 or MRG_RXBUF
constexpr uint32_t kGsoMaxFrame = 65550;  // largest GSO super-frame without the vnet header
constexpr uint32_t kRxQ = 0;              // the guest's RX ring: we write into it
constexpr uint32_t kTxQ = 1;              // the guest's TX ring: we read from it
constexpr int kMaxMessagesPerEvent = 64;
constexpr size_t kMaxCutPieces = 64;  // a cut-through frame in more pieces is copied into one
constexpr uint64_t kCutWorkPerChain = 4;  // frames a turn may write per chain of its batch (ProcessTx)
constexpr uint64_t kProtocolOffered = vhost::kPReplyAck | vhost::kPNetMtu;
// virtio_net_hdr
constexpr uint8_t kHdrNeedsCsum = 1;
constexpr uint8_t kGsoTcpv4 = 1;
constexpr uint8_t kGsoTcpv6 = 4;
constexpr uint8_t kGsoEcn = 0x80;

enum State { kListening, kConnected, kRunning, kBroken };
const char* StateName(State s) {
  switch (s) {
    case kListening: return "listening";
    case kConnected: return "connected";
    case kRunning: return "running";
    default: return "broken";
  }
}

std::string Hex(uint64_t v) {
  char buf[24];
  snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

// Kick and call fds must be eventfds: a FIFO or socket that hung up stays readable for ever (a
// kick watch that spins the loop), and a write to a regular file on FUSE or NFS can block it
// (O_NONBLOCK does nothing there).
bool IsEventfd(int fd) {
  char path[48], link[32];
  snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
  const ssize_t n = readlink(path, link, sizeof(link) - 1);
  if (n < 0) return false;
  link[n] = '\0';
  return std::strcmp(link, "anon_inode:[eventfd]") == 0;
}

// A kick eventfd in semaphore mode gives 1 per read, so one written with 2^64 - 2 stays
// readable for ever. The kernel says which it is in /proc/self/fdinfo (`eventfd-semaphore:`,
// Linux 6.x); older kernels do not, and then a probe: a counter gives back all it holds, so add
// 2, read, and a semaphore shows as 1 (or as a counter too full to take 2). The front-end holds
// the same fd and may read it between our write and read (review-14b C): any failure of the
// probe counts as a semaphore (refused). The guest's pending kicks read here are not lost: the
// rings (re)start with a turn that looks at the ring anyway.
int FdinfoSemaphore(int fd) {
  char path[48];
  snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
  const int info = open(path, O_RDONLY | O_CLOEXEC);
  if (info < 0) return -1;
  char text[512];
  ssize_t n;
  do {
    n = read(info, text, sizeof(text) - 1);
  } while (n < 0 && errno == EINTR);
  ::close(info);
  if (n <= 0) return -1;
  text[n] = '\0';
  const char* k = std::strstr(text, "eventfd-semaphore:");
  if (k == nullptr) return -1;
  k += std::strlen("eventfd-semaphore:");
  while (*k == ' ' || *k == '\t') k++;
  if (*k == '0') return 0;
  if (*k == '1') return 1;
  return -1;
}

bool ProbeSemaphore(int fd) {
  uint64_t v;
  ssize_t r;
  do {
    r = read(fd, &v, sizeof(v));
  } while (r < 0 && errno == EINTR);
  v = 2;
  do {
    r = write(fd, &v, sizeof(v));
  } while (r < 0 && errno == EINTR);
  if (r != static_cast<ssize_t>(sizeof(v))) return true;
  do {
    r = read(fd, &v, sizeof(v));
  } while (r < 0 && errno == EINTR);
  return r != static_cast<ssize_t>(sizeof(v)) || v == 1;  // EAGAIN: taken by a racing reader
}

bool IsSemaphore(int fd) {
  const int k = FdinfoSemaphore(fd);
  if (k >= 0) return k == 1;
  return ProbeSemaphore(fd);
}

class VhostDevice;

// A uv_poll on one fd (the listener, the connection, a kick eventfd). Heap-allocated: a new
// fd takes a new watch while the old one's close completes.
struct Watch {
  uv_poll_t poll;
  VhostDevice* dev;
  int kind;
};
enum WatchKind { kWatchListen, kWatchConn, kWatchKick };

class VhostDevice : public SwitchMember {
 public:
  static napi_value New(napi_env env, napi_callback_info info);
  static napi_value JsStart(napi_env env, napi_callback_info info);
  static napi_value JsWrite(napi_env env, napi_callback_info info);
  static napi_value JsStats(napi_env env, napi_callback_info info);
  static napi_value JsSetTee(napi_env env, napi_callback_info info);
  static napi_value JsBindSwitch(napi_env env, napi_callback_info info);
  static napi_value JsSetSwitchMac(napi_env env, napi_callback_info info);
  static napi_value JsUnbindSwitch(napi_env env, napi_callback_info info);
  static napi_value JsFlushForwarded(napi_env env, napi_callback_info info);
  static napi_value JsProcessQueues(napi_env env, napi_callback_info info);
  static napi_value JsClose(napi_env env, napi_callback_info info);
  static void Finalize(napi_env env, void* data, void* hint);

 private:
  VhostDevice() : msg_(new Msg()) {}

  static VhostDevice* Unwrap(napi_env env, napi_callback_info info, size_t* argc, napi_value* argv);
  static void OnWatch(uv_poll_t* handle, int status, int events);
  static void OnWatchClosed(uv_handle_t* handle);
  static void OnIdle(uv_idle_t* handle);
  static void OnHandleClosed(uv_handle_t* handle);

  Watch* OpenWatch(int fd, int kind);
  void CloseWatch(Watch** w);
  void SetActive(bool active);
  void Close();

  // Control.
  void OnListen();
  void OnConn();
  void Accept(int fd);
  void DropConnection();
  void StopRings();
  bool Handle(Msg* m);
  bool Reply(uint32_t request, const void* payload, uint32_t size);
  bool ReplyU64(uint32_t request, uint64_t v) { return Reply(request, &v, 8); }
  bool ProtocolError(const Msg& m, const std::string& why);
  bool SetMemTable(Msg* m);
  bool SetVringFd(Msg* m);
  bool RingIndex(const Msg& m, uint32_t* index, uint32_t* value);
  void ResetRings();
  void RemapRings();
  bool RingEnabled(const Ring& r) const { return (features_ & vhost::kFProtocolFeatures) == 0 || r.enable_msg; }
  void RingViolation(const std::string& why);
  void Update();
  void SetState(State s, const std::string& detail);
  void NotifyState();

  // Data.
  uint32_t ProcessTx();
  // Frames for the guest (10-byte header + Ethernet), each contiguous. Publishes the used ring
  // (and interrupts the guest) unless `defer` (cut-through: CutPublish does it after the batch).
  uint32_t WriteFrames(const iovec* frames, size_t n, bool defer);
  enum PutResult { kPut, kDropped, kStopped };
  PutResult PutFrame(const iovec* iov, int count, uint64_t len, TeeClock& clock);
  bool OffloadOk(const uint8_t* hdr) const;
  bool HostOffloadOk(const uint8_t* hdr) const;
  void Gather(const Chain& c, uint64_t off, uint8_t* dst, uint64_t len) const;
  void CallOnRead(uint32_t count, uint32_t start);
  void CallJs(napi_ref fn_ref, size_t argc, const napi_value* argv);

  // SwitchMember: as a cut-through destination (frames into the guest's RX ring) and source.
  bool Closed() const override { return closed_; }
  bool TxAccepts(const uint8_t* f, uint32_t len) const override {
    return running_ && SwitchMember::TxAccepts(f, len) && OffloadOk(f);
  }
  uint32_t CutWrite(const iovec* frames, size_t n) override { return WriteFrames(frames, n, true); }
  void CutWriteV(const iovec* iov, int count, uint32_t len) override;
  void CutPublish() override {
    if (running_) rings_[kRxQ].Publish();
  }
  void CallForwarded(napi_ref cb, double frames, double bytes) override;

  napi_env env_ = nullptr;
  napi_ref wrapper_ = nullptr;
  bool active_ref_ = false;
  napi_ref on_read_ = nullptr;
  napi_ref on_state_ = nullptr;
  uv_loop_t* loop_ = nullptr;

  int listen_fd_ = -1;
  int conn_fd_ = -1;
  Watch* listen_w_ = nullptr;
  Watch* conn_w_ = nullptr;
  Watch* kick_w_ = nullptr;
  int kick_watched_fd_ = -1;
  uv_idle_t idle_;
  bool idle_on_ = false;
  int pending_closes_ = 0;
  bool started_ = false;
  bool closed_ = false;
  bool finalized_ = false;
  bool processing_ = false;

  std::unique_ptr<Msg> msg_;
  std::unique_ptr<MsgReader> reader_;
  MemTable mem_;
  Ring rings_[2];
  uint64_t descriptors_read_ = 0;  // by rings since reset (ResetRings)
  uint64_t offered_ = 0;
  uint64_t features_ = 0;
  uint64_t protocol_ = 0;
  uint32_t guest_hdr_ = kMrgHdrLen;
  bool mrg_ = false;
  bool running_ = false;
  bool ring_broken_ = false;   // a ring violation: rings stopped until the front-end reconnects
  bool proto_broken_ = false;  // a protocol violation: the connection was closed

  State state_ = kListening;
  std::string detail_ = "waiting for QEMU";
  bool state_dirty_ = false;
  State notified_ = kListening;

  uint32_t max_frame_ = 0;
  uint32_t mtu_ = 0;  // NET_SET_MTU (0: none said)
  uint32_t slot_ = 0;
  uint32_t batch_ = 0;
  uint8_t* buf_ = nullptr;
  uint32_t* lens_ = nullptr;
  std::vector<Seg> segs_;
  std::vector<Chain> chains_;
  std::vector<iovec> cut_iov_;
  std::vector<iovec> write_iov_;  // write()'s frames, reused between calls
  std::vector<uint8_t> scratch_;  // a frame in pieces gathered for the tee
  // TAPs this turn's cut-through wrote to (DrainTaps after it).
  static constexpr int kMaxTaps = 4;
  SwitchMember* taps_[kMaxTaps];
  int ntaps_ = 0;
  void NoteTap(SwitchMember* m) {
    if (m->IsTap() && ntaps_ < kMaxTaps && std::find(taps_, taps_ + ntaps_, m) == taps_ + ntaps_) taps_[ntaps_++] = m;
  }
  Tee tee_;

  double rx_frames_ = 0, rx_bytes_ = 0, tx_frames_ = 0, tx_bytes_ = 0;
  double drop_nobuf_ = 0, drop_notrunning_ = 0, drop_oversize_ = 0, drop_badoffload_ = 0;
  double cb_errors_ = 0, connections_ = 0, violations_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Handles and lifetime.

Watch* VhostDevice::OpenWatch(int fd, int kind) {
  Watch* w = new Watch();
  w->dev = this;
  w->kind = kind;
  if (uv_poll_init(loop_, &w->poll, fd) != 0) {
    delete w;
    return nullptr;
  }
  w->poll.data = w;
  pending_closes_++;
  uv_poll_start(&w->poll, UV_READABLE, OnWatch);
  return w;
}

// uv_close stops the watch at once (the fd may be closed right after); the memory goes later.
void VhostDevice::CloseWatch(Watch** w) {
  if (*w == nullptr) return;
  uv_close(reinterpret_cast<uv_handle_t*>(&(*w)->poll), OnWatchClosed);
  *w = nullptr;
}

void VhostDevice::OnWatchClosed(uv_handle_t* handle) {
  Watch* w = static_cast<Watch*>(handle->data);
  VhostDevice* d = w->dev;
  delete w;
  if (--d->pending_closes_ == 0 && d->finalized_ && d->closed_) delete d;
}

void VhostDevice::OnHandleClosed(uv_handle_t* handle) {
  VhostDevice* d = static_cast<VhostDevice*>(handle->data);
  if (--d->pending_closes_ == 0 && d->finalized_) delete d;
}

void VhostDevice::OnWatch(uv_poll_t* handle, int status, int events) {
  Watch* w = static_cast<Watch*>(handle->data);
  VhostDevice* d = w->dev;
  if (d->closed_) return;
  switch (w->kind) {
    case kWatchListen:
      d->OnListen();
      break;
    case kWatchConn:
      d->OnConn();
      break;
    default: {
      // A kick: take the eventfd's count (non-blocking), then serve the TX ring.
      uint64_t v;
      ssize_t r;
      do {
        r = read(d->kick_watched_fd_, &v, sizeof(v));
      } while (r < 0 && errno == EINTR);
      // An eventfd (SetVringFd checked) reads its count or EAGAIN; anything else would keep
      // the level-triggered watch firing: stop it.
      if (status < 0 || r == 0 || (r < 0 && errno != EAGAIN) || (events & UV_DISCONNECT) != 0) {
        d->RingViolation("kick fd failed");
      } else {
        d->ProcessTx();
      }
      break;
    }
  }
  d->NotifyState();
}

void VhostDevice::OnIdle(uv_idle_t* handle) {
  VhostDevice* d = static_cast<VhostDevice*>(handle->data);
  if (d->closed_) return;
  d->ProcessTx();
  d->NotifyState();
}

void VhostDevice::SetActive(bool active) {
  if (active == active_ref_ || wrapper_ == nullptr || finalized_) return;
  uint32_t count = 0;
  if (active) {
    napi_reference_ref(env_, wrapper_, &count);
  } else {
    napi_reference_unref(env_, wrapper_, &count);
  }
  active_ref_ = active;
}

void VhostDevice::Close() {
  if (closed_) return;
  closed_ = true;
  ForgetCutDirty(this);
  UnbindSwitch();
  tee_.Clear(env_);
  DropConnection();
  CloseWatch(&listen_w_);
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
  SetActive(false);
  uv_close(reinterpret_cast<uv_handle_t*>(&idle_), OnHandleClosed);
  CloseReport(OnHandleClosed, this);
  pending_closes_ += 2;
}

void VhostDevice::Finalize(napi_env env, void* data, void* /*hint*/) {
  VhostDevice* d = static_cast<VhostDevice*>(data);
  d->finalized_ = true;
  if (d->wrapper_) napi_delete_reference(env, d->wrapper_);
  d->wrapper_ = nullptr;
  d->tee_.Clear(env);
  for (napi_ref* r : {&d->on_read_, &d->on_state_, &d->fwd_cb_}) {
    if (*r) napi_delete_reference(env, *r);
    *r = nullptr;
  }
  d->active_ref_ = false;
  if (!d->closed_) {
    d->Close();
  } else if (d->pending_closes_ == 0) {
    delete d;
  }
}

// ---------------------------------------------------------------------------------------------
// Control protocol.

void VhostDevice::OnListen() {
  for (int i = 0; i < 8; i++) {
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      return;  // EAGAIN, or a transient failure (EMFILE…): tried again on the next event
    }
    Accept(fd);
  }
}

// A new front-end replaces the old one (QEMU restarted or reconnected): everything the old one
// set up goes.
void VhostDevice::Accept(int fd) {
  DropConnection();
  conn_fd_ = fd;
  conn_w_ = OpenWatch(fd, kWatchConn);
  if (conn_w_ == nullptr) {
    ::close(fd);
    conn_fd_ = -1;
    return;
  }
  reader_.reset(new MsgReader(fd));
  connections_++;
  ring_broken_ = proto_broken_ = false;
  SetState(kConnected, "QEMU connected");
  Update();
}

// The rings stop being served: no kick watch, no idle turn.
void VhostDevice::StopRings() {
  running_ = false;
  CloseWatch(&kick_w_);
  kick_watched_fd_ = -1;
  if (idle_on_) uv_idle_stop(&idle_);
  idle_on_ = false;
}

void VhostDevice::DropConnection() {
  StopRings();
  CloseWatch(&conn_w_);
  reader_.reset();
  if (conn_fd_ >= 0) ::close(conn_fd_);
  conn_fd_ = -1;
  ResetRings();
  mem_.Clear();
  features_ = protocol_ = 0;
  mtu_ = 0;
  guest_hdr_ = kMrgHdrLen;
  mrg_ = false;
}

void VhostDevice::ResetRings() {
  for (Ring& r : rings_) {
    if (r.kick_fd >= 0) ::close(r.kick_fd);
    if (r.call_fd >= 0) ::close(r.call_fd);
    descriptors_read_ += r.descriptors_read();  // a running total across connections
    r = Ring();
  }
}

void VhostDevice::OnConn() {
  for (int i = 0; i < kMaxMessagesPerEvent && conn_fd_ >= 0 && !closed_; i++) {
    std::string why;
    MsgReader::Result r = reader_->Read(msg_.get(), &why);
    if (r == MsgReader::kAgain) return;
    if (r == MsgReader::kClosed) {
      DropConnection();
      SetState(proto_broken_ || ring_broken_ ? kBroken : kListening, proto_broken_ || ring_broken_ ? detail_ : "QEMU disconnected");
      if (ring_broken_) ring_broken_ = false;
      Update();
      return;
    }
    if (r == MsgReader::kBad) {
      violations_++;
      proto_broken_ = true;
      DropConnection();
      SetState(kBroken, "protocol violation: " + why);
      return;
    }
    if (!Handle(msg_.get())) return;  // the connection was dropped
  }
}

bool VhostDevice::ProtocolError(const Msg& m, const std::string& why) {
  const char* name = vhost::RequestName(m.request);
  std::string what = name != nullptr ? name : "message " + std::to_string(m.request);
  violations_++;
  proto_broken_ = true;
  DropConnection();
  SetState(kBroken, "protocol violation: " + what + ": " + why);
  return false;
}

bool VhostDevice::Reply(uint32_t request, const void* payload, uint32_t size) {
  if (vhost::SendReply(conn_fd_, request, payload, size)) return true;
  violations_++;
  proto_broken_ = true;
  DropConnection();
  SetState(kBroken, "protocol violation: the front-end does not read its replies");
  return false;
}

// SET_VRING_NUM/BASE/ENABLE and GET_VRING_BASE: struct vhost_vring_state { index, num }.
bool VhostDevice::RingIndex(const Msg& m, uint32_t* index, uint32_t* value) {
  if (m.size != 8) return ProtocolError(m, "payload of " + std::to_string(m.size) + " bytes, not 8");
  std::memcpy(index, m.payload, 4);
  std::memcpy(value, m.payload + 4, 4);
  if (*index > 1) return ProtocolError(m, "ring " + std::to_string(*index) + " (this device has 2)");
  return true;
}

// Returns false when the connection was dropped (a protocol violation). Closes the message's
// fds unless kept.
bool VhostDevice::Handle(Msg* m) {
  const uint32_t req = m->request;
  const bool takes_fds = req == vhost::kSetMemTable || req == vhost::kSetVringKick || req == vhost::kSetVringCall ||
                         req == vhost::kSetVringErr;
  if ((m->flags & 3) != vhost::kFlagVersion || (m->flags & vhost::kFlagReply) != 0) {
    m->CloseFds();
    return ProtocolError(*m, "flags " + Hex(m->flags));
  }
  if (!takes_fds && m->nfds > 0) {
    m->CloseFds();
    return ProtocolError(*m, "file descriptors on a message that takes none");
  }
  bool has_reply = false;
  uint32_t index = 0, value = 0;
  uint64_t v = 0;
  switch (req) {
    case vhost::kGetFeatures:
    case vhost::kGetProtocolFeatures:
    case vhost::kGetQueueNum:
      if (m->size != 0) return ProtocolError(*m, "unexpected payload");
      has_reply = true;
      v = req == vhost::kGetFeatures ? offered_ : req == vhost::kGetProtocolFeatures ? kProtocolOffered : 1;
      if (!ReplyU64(req, v)) return false;
      break;
    case vhost::kSetFeatures:
      if (m->size != 8) return ProtocolError(*m, "payload of " + std::to_string(m->size) + " bytes, not 8");
      std::memcpy(&v, m->payload, 8);
      if ((v & ~offered_) != 0) return ProtocolError(*m, "features " + Hex(v & ~offered_) + " were not offered");
      if (running_ && v != features_) return ProtocolError(*m, "features changed while the rings run");
      features_ = v;
      // The rings' length depends on EVENT_IDX: translated again if they were already.
      if (((v & vhost::kFEventIdx) != 0) != rings_[kRxQ].event_idx) RemapRings();
      mrg_ = (v & vhost::kFMrgRxbuf) != 0;
      guest_hdr_ = (v & (vhost::kFMrgRxbuf | vhost::kFVersion1)) != 0 ? kMrgHdrLen : kVnetHdrLen;
      break;
    case vhost::kSetProtocolFeatures:
      if (m->size != 8) return ProtocolError(*m, "payload of " + std::to_string(m->size) + " bytes, not 8");
      std::memcpy(&v, m->payload, 8);
      if ((v & ~kProtocolOffered) != 0) return ProtocolError(*m, "protocol features " + Hex(v) + " were not offered");
      protocol_ = v;
      break;
    case vhost::kSetOwner:
      if (m->size != 0) return ProtocolError(*m, "unexpected payload");
      break;
    case vhost::kResetOwner:
    case vhost::kResetDevice:
      if (m->size != 0) return ProtocolError(*m, "unexpected payload");
      StopRings();
      ResetRings();
      features_ = 0;
      break;
    case vhost::kSetMemTable:
      if (!SetMemTable(m)) return false;
      break;
    case vhost::kSetVringNum:
      if (!RingIndex(*m, &index, &value)) return false;
      if (value == 0 || value > vhost::kMaxRingNum || (value & (value - 1)) != 0) {
        return ProtocolError(*m, "ring size " + std::to_string(value) + " (a power of two up to 32768)");
      }
      if (running_ && value == rings_[index].num) break;  // the same again: nothing changes
      if (running_) return ProtocolError(*m, "ring size changed while the rings run");
      rings_[index].num = value;
      rings_[index].Unmap();
      RemapRings();
      break;
    case vhost::kSetVringBase:
      if (!RingIndex(*m, &index, &value)) return false;
      if (value > 0xffff) return ProtocolError(*m, "base " + std::to_string(value));
      if (running_) return ProtocolError(*m, "ring base set while the rings run");
      rings_[index].base = static_cast<uint16_t>(value);
      rings_[index].sync = true;
      RemapRings();
      break;
    case vhost::kGetVringBase: {
      if (!RingIndex(*m, &index, &value)) return false;
      // The ring stops (QEMU stops the device): answer where the guest's next chain is.
      Ring& r = rings_[index];
      StopRings();
      const uint32_t state[2] = {index, r.mapped() ? r.last_avail() : r.base};
      if (r.kick_fd >= 0) ::close(r.kick_fd);
      r.kick_fd = -1;
      r.base = static_cast<uint16_t>(state[1]);
      r.sync = true;
      has_reply = true;
      if (!Reply(req, state, 8)) return false;
      break;
    }
    case vhost::kSetVringAddr: {
      if (m->size != 40) return ProtocolError(*m, "payload of " + std::to_string(m->size) + " bytes, not 40");
      std::memcpy(&index, m->payload, 4);
      if (index > 1) return ProtocolError(*m, "ring " + std::to_string(index) + " (this device has 2)");
      Ring& r = rings_[index];
      uint64_t desc, used, avail;
      std::memcpy(&desc, m->payload + 8, 8);
      std::memcpy(&used, m->payload + 16, 8);
      std::memcpy(&avail, m->payload + 24, 8);
      if (running_ && r.have_addr && desc == r.desc_uva && used == r.used_uva && avail == r.avail_uva) break;
      if (running_) return ProtocolError(*m, "ring addresses changed while the rings run");
      r.desc_uva = desc;
      r.used_uva = used;
      r.avail_uva = avail;
      r.have_addr = true;
      r.sync = true;
      r.Unmap();
      RemapRings();
      break;
    }
    case vhost::kSetVringKick:
    case vhost::kSetVringCall:
    case vhost::kSetVringErr:
      if (!SetVringFd(m)) return false;
      break;
    case vhost::kNetSetMtu:
      // QEMU's host_mtu= (the guest learns it from QEMU's config space, VIRTIO_NET_F_MTU): noted;
      // the port's maxFrame is what limits frames here.
      if (m->size != 8) return ProtocolError(*m, "payload of " + std::to_string(m->size) + " bytes, not 8");
      if ((protocol_ & vhost::kPNetMtu) == 0) return ProtocolError(*m, "NET_MTU was not negotiated");
      std::memcpy(&v, m->payload, 8);
      if (v < 68 || v > 65535) return ProtocolError(*m, "MTU " + std::to_string(v));
      mtu_ = static_cast<uint32_t>(v);
      break;
    case vhost::kSetVringEnable:
      if (!RingIndex(*m, &index, &value)) return false;
      if (value > 1) return ProtocolError(*m, "enable " + std::to_string(value));
      rings_[index].enable_msg = value == 1;
      break;
    default:
      m->CloseFds();
      return ProtocolError(*m, "not supported");
  }
  if (conn_fd_ < 0) return false;
  // REPLY_ACK: a message that has no reply of its own is acknowledged when asked (0: success;
  // failures drop the connection instead).
  if (!has_reply && (protocol_ & vhost::kPReplyAck) != 0 && (m->flags & vhost::kFlagNeedReply) != 0) {
    if (!ReplyU64(req, 0)) return false;
  }
  Update();
  return conn_fd_ >= 0;
}

bool VhostDevice::SetMemTable(Msg* m) {
  uint32_t n = 0;
  if (m->size >= 8) std::memcpy(&n, m->payload, 4);
  if (m->size < 8 || n == 0 || n > vhost::kMaxRegions || m->size != 8 + 32 * n) {
    m->CloseFds();
    return ProtocolError(*m, std::to_string(n) + " regions in " + std::to_string(m->size) + " bytes");
  }
  if (m->nfds != n) {
    m->CloseFds();
    return ProtocolError(*m, std::to_string(m->nfds) + " file descriptors for " + std::to_string(n) + " regions");
  }
  vhost::RegionDesc regions[vhost::kMaxRegions];
  for (uint32_t i = 0; i < n; i++) {
    const uint8_t* p = m->payload + 8 + 32 * i;
    std::memcpy(&regions[i].gpa, p, 8);
    std::memcpy(&regions[i].size, p + 8, 8);
    std::memcpy(&regions[i].uva, p + 16, 8);
    std::memcpy(&regions[i].mmap_offset, p + 24, 8);
  }
  // The rings' old pointers die with the old table: stop them while it is replaced (a new
  // table while running, as memory hotplug does, is re-translated below).
  StopRings();
  for (Ring& r : rings_) r.Unmap();
  std::string why;
  const bool ok = mem_.Set(regions, m->fds, n, &why);
  m->nfds = 0;  // Set took them
  if (!ok) return ProtocolError(*m, why);
  RemapRings();
  return conn_fd_ >= 0;
}

// Re-translates the rings' addresses (a new table, size or address). An address the table does
// not hold is a violation once the ring is complete.
void VhostDevice::RemapRings() {
  if (mem_.count() == 0) return;
  for (Ring& r : rings_) {
    r.event_idx = (features_ & vhost::kFEventIdx) != 0;
    if (r.num == 0 || !r.have_addr) continue;
    std::string why;
    if (!r.Map(mem_, &why) && !why.empty()) {
      RingViolation(why);
      return;
    }
  }
}

bool VhostDevice::SetVringFd(Msg* m) {
  uint64_t v = 0;
  if (m->size != 8) {
    m->CloseFds();
    return ProtocolError(*m, "payload of " + std::to_string(m->size) + " bytes, not 8");
  }
  std::memcpy(&v, m->payload, 8);
  const uint32_t index = static_cast<uint32_t>(v & vhost::kVringIndexMask);
  const bool nofd = (v & vhost::kVringNoFd) != 0;
  if ((v & ~(vhost::kVringIndexMask | vhost::kVringNoFd)) != 0 || index > 1) {
    m->CloseFds();
    return ProtocolError(*m, "ring " + Hex(v));
  }
  if (m->nfds != (nofd ? 0u : 1u)) {
    m->CloseFds();
    return ProtocolError(*m, std::to_string(m->nfds) + " file descriptors" + (nofd ? " with NOFD" : ""));
  }
  const int fd = nofd ? -1 : m->fds[0];
  m->nfds = 0;
  // Whatever the front-end gave, our reads and writes of it never block.
  if (fd >= 0) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
      ::close(fd);
      return ProtocolError(*m, "unusable file descriptor");
    }
    if (m->request != vhost::kSetVringErr && !IsEventfd(fd)) {
      ::close(fd);
      return ProtocolError(*m, "not an eventfd");
    }
    if (m->request == vhost::kSetVringKick && IsSemaphore(fd)) {
      ::close(fd);
      return ProtocolError(*m, "a semaphore-mode eventfd (EFD_SEMAPHORE)");
    }
  }
  Ring& r = rings_[index];
  if (m->request == vhost::kSetVringErr) {
    if (fd >= 0) ::close(fd);  // errors are reported through onState, not to the front-end
  } else if (m->request == vhost::kSetVringCall) {
    if (r.call_fd >= 0) ::close(r.call_fd);
    r.call_fd = fd;
  } else {
    StopRings();  // Update() starts them again with the new fd
    if (r.kick_fd >= 0) ::close(r.kick_fd);
    r.kick_fd = fd;
  }
  return true;
}

void VhostDevice::RingViolation(const std::string& why) {
  violations_++;
  if (ring_broken_) return;
  ring_broken_ = true;
  StopRings();
  SetState(kBroken, "guest ring violation: " + why);
  // onState runs from the next idle turn (NotifyState) when this came from another device's
  // cut-through, not from one of ours.
  uv_idle_start(&idle_, OnIdle);
  idle_on_ = true;
}

// Recomputes whether the rings run (memory, addresses, kick fds, enabled; not broken) and the state.
void VhostDevice::Update() {
  if (closed_) return;
  if (conn_fd_ < 0) {
    running_ = false;
    return;
  }
  if (ring_broken_) return;
  bool run = true;
  for (const Ring& r : rings_) {
    if (!r.mapped() || r.kick_fd < 0 || !RingEnabled(r)) run = false;
  }
  if (run && !running_) {
    Ring& tx = rings_[kTxQ];
    kick_w_ = OpenWatch(tx.kick_fd, kWatchKick);
    if (kick_w_ == nullptr) {
      RingViolation("the TX kick fd cannot be polled");
      return;
    }
    kick_watched_fd_ = tx.kick_fd;
    // We never wait for RX buffers (frames are dropped when there is no room): no RX kicks.
    rings_[kRxQ].SetNoNotify(true);
    running_ = true;
    // Chains the guest made available while we were not running wait for no kick.
    if (!idle_on_) uv_idle_start(&idle_, OnIdle);
    idle_on_ = true;
  } else if (!run && running_) {
    StopRings();
  }
  if (running_) {
    SetState(kRunning, "rings running");
  } else {
    SetState(kConnected, "QEMU connected");
  }
}

void VhostDevice::SetState(State s, const std::string& detail) {
  if (s == state_ && detail == detail_) return;
  if (s == state_ && s != kBroken) return;
  state_ = s;
  detail_ = detail;
  state_dirty_ = true;
}

// onState runs only here, at the end of each entry from the loop or JS (never with guest
// memory in use: the callback may close the device).
void VhostDevice::NotifyState() {
  if (!state_dirty_ || closed_) return;
  state_dirty_ = false;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env_, &scope) != napi_ok) return;
  napi_value argv[2];
  const char* name = StateName(state_);
  napi_create_string_utf8(env_, name, NAPI_AUTO_LENGTH, &argv[0]);
  napi_create_string_utf8(env_, detail_.data(), detail_.size(), &argv[1]);
  CallJs(on_state_, 2, argv);
  napi_close_handle_scope(env_, scope);
}

// ---------------------------------------------------------------------------------------------
// Data path.

// Copies `len` bytes from offset `off` of the chain's buffers.
void VhostDevice::Gather(const Chain& c, uint64_t off, uint8_t* dst, uint64_t len) const {
  for (uint32_t k = 0; k < c.count && len > 0; k++) {
    const Seg& s = segs_[c.first + k];
    if (off >= s.len) {
      off -= s.len;
      continue;
    }
    const uint64_t n = std::min<uint64_t>(s.len - off, len);
    std::memcpy(dst, s.p + off, n);
    dst += n;
    len -= n;
    off = 0;
  }
}

// The guest's TX ring: up to batch_ chains, one frame each. While cut-through goes (bindSwitch),
// each frame the switch would forward unchanged goes straight out of guest memory: its first
// bytes (all the switch decisions read) from a local copy, so what was checked is what is sent,
// the rest from the guest's buffers; from the first frame that is not, frames are copied into
// slots (the 12-byte header made the 10-byte one JS knows) for one onRead. More waiting: the
// idle handle takes the next batch on the next loop turn. Returns chains taken.
uint32_t VhostDevice::ProcessTx() {
  if (!running_ || processing_ || closed_) {
    if (idle_on_ && !running_) {
      uv_idle_stop(&idle_);
      idle_on_ = false;
    }
    return 0;
  }
  processing_ = true;
  Ring& r = rings_[kTxQ];
  uint32_t n = 0, taken = 0;
  // Frames written by cut-through segmentation count against the turn too: one guest chain can
  // become up to kMaxGsoSegments frames (review-14b B). The turn ends once they reach
  // kCutWorkPerChain times the batch, and the idle handle continues as after a full batch.
  uint64_t written = 0;
  const uint64_t work = static_cast<uint64_t>(batch_) * kCutWorkPerChain;
  bool more = false;
  bool cut = CanCutThrough();
  const uint64_t now = cut ? uv_hrtime() : 0;
  double fwd = 0, fwd_bytes = 0;
  TeeClock clock;
  while (taken < batch_ && written < work) {
    segs_.clear();
    Chain c;
    std::string why;
    PopResult pr = r.Pop(mem_, false, &segs_, &c, &why);
    if (pr == PopResult::kEmpty) break;
    if (pr == PopResult::kViolation) {
      RingViolation(why);
      break;
    }
    taken++;
    r.Use(c.head, 0);  // published below, after the last read of the buffers
    if (c.bytes < guest_hdr_) {
      drop_oversize_++;  // a runt without even its header
      continue;
    }
    const uint64_t len = c.bytes - guest_hdr_ + kVnetHdrLen;
    if (len > slot_) {
      drop_oversize_++;
      continue;
    }
    // The guest's header, read once and used from this copy: what it asks of us (checksum,
    // segmentation) must have been negotiated, else a port without offloads would pass them on.
    uint8_t vh[kVnetHdrLen];
    Gather(c, 0, vh, kVnetHdrLen);
    if (!HostOffloadOk(vh)) {
      drop_badoffload_++;
      continue;
    }
    rx_frames_++;
    rx_bytes_ += static_cast<double>(len - kVnetHdrLen);
    if (cut) {
      uint8_t pre[kRouteBytes];
      const uint32_t plen = static_cast<uint32_t>(std::min<uint64_t>(len, kRouteBytes));
      std::memcpy(pre, vh, kVnetHdrLen);
      Gather(c, guest_hdr_, pre + kVnetHdrLen, plen - kVnetHdrLen);
      int conv = kCutSame;
      SwitchMember* dst = Route(pre, static_cast<uint32_t>(len), slot_, now, &conv);
      if (dst != nullptr) {
        if (conv == kCutNormalize) {
          // Segmented or checksummed for a port without the header: read more than once, so
          // from a copy of the whole frame, never from guest memory.
          scratch_.resize(len);
          std::memcpy(scratch_.data(), pre, plen);
          Gather(c, guest_hdr_ + (plen - kVnetHdrLen), scratch_.data() + plen, len - plen);
          if (tee_.in) tee_.Write(scratch_.data(), static_cast<uint32_t>(len), static_cast<uint32_t>(len), tee_.rx_skip, kTeeIn, clock);
          written += CutNormalized(dst, scratch_.data(), static_cast<uint32_t>(len));
          NoteTap(dst);
          fwd++;
          fwd_bytes += static_cast<double>(len - kVnetHdrLen);
          continue;
        }
        // kCutStrip: to a port without the header (a plain TAP, a socket), which the frame
        // (no offload) does without. kCutAdd cannot happen: this port has the header.
        const uint32_t skip_hdr = conv == kCutStrip ? kVnetHdrLen : 0;
        cut_iov_.clear();
        cut_iov_.push_back({pre + skip_hdr, plen - skip_hdr});
        uint64_t skip = guest_hdr_ + (plen - kVnetHdrLen);
        for (uint32_t k = 0; k < c.count; k++) {
          const Seg& sg = segs_[c.first + k];
          if (skip >= sg.len) {
            skip -= sg.len;
            continue;
          }
          cut_iov_.push_back({sg.p + skip, sg.len - skip});
          skip = 0;
        }
        if (tee_.in) {
          scratch_.resize(len);
          std::memcpy(scratch_.data(), pre, plen);
          Gather(c, guest_hdr_ + (plen - kVnetHdrLen), scratch_.data() + plen, len - plen);
          tee_.Write(scratch_.data(), static_cast<uint32_t>(len), static_cast<uint32_t>(len), tee_.rx_skip, kTeeIn, clock);
        }
        if (cut_iov_.size() > kMaxCutPieces) {
          // writev takes at most IOV_MAX pieces (more: EINVAL, charged to the TAP), and legitimate
          // guests use about 20: a frame in more pieces goes on as one copy.
          scratch_.resize(len - skip_hdr);
          uint64_t off = 0;
          for (const iovec& v : cut_iov_) {
            const uint64_t m = std::min<uint64_t>(v.iov_len, scratch_.size() - off);
            std::memcpy(scratch_.data() + off, v.iov_base, m);
            off += m;
          }
          cut_iov_.assign(1, {scratch_.data(), static_cast<size_t>(off)});
        }
        dst->CutWriteV(cut_iov_.data(), static_cast<int>(cut_iov_.size()), static_cast<uint32_t>(len - skip_hdr));
        NoteTap(dst);
        fwd++;
        fwd_bytes += static_cast<double>(len - kVnetHdrLen);
        continue;
      }
      cut = false;  // this frame and the rest go to JS, so per-destination order is kept
    }
    uint8_t* dst = buf_ + static_cast<size_t>(n) * slot_;
    std::memcpy(dst, vh, kVnetHdrLen);
    Gather(c, guest_hdr_, dst + kVnetHdrLen, len - kVnetHdrLen);
    lens_[n++] = static_cast<uint32_t>(len);
    if (tee_.in) tee_.Write(dst, static_cast<uint32_t>(len), static_cast<uint32_t>(len), tee_.rx_skip, kTeeIn, clock);
  }
  if (running_) {
    r.Publish();
    std::string why;
    more = (taken == batch_ || written >= work) && r.Pending(&why) != 0;
    // While more waits, the next idle turn takes it: the guest need not kick (a kick costs it an
    // exit). Once drained, kicks are wanted again, and what came in meanwhile is looked at after
    // a full barrier, so nothing is left waiting for a kick the guest skipped.
    r.SetNoNotify(more);
    if (!more) {
      __atomic_thread_fence(__ATOMIC_SEQ_CST);
      more = r.Pending(&why) != 0;
    }
  }
  PublishCutWrites();  // the guests cut-through wrote to, before any JS runs
  if (fwd > 0) NoteForwarded(fwd, fwd_bytes);
  if (n > 0) CallOnRead(n, 0);
  processing_ = false;
  // The TAPs written to answer now rather than one loop turn later (as a Device's peers).
  SwitchMember* taps[kMaxTaps];
  const int ntaps = ntaps_;
  std::copy(taps_, taps_ + ntaps, taps);
  ntaps_ = 0;
  DrainTaps(taps, ntaps);
  if (closed_) return taken;
  if (more && running_) {
    if (!idle_on_) uv_idle_start(&idle_, OnIdle);
    idle_on_ = true;
  } else if (idle_on_) {
    uv_idle_stop(&idle_);
    idle_on_ = false;
  }
  return taken;
}

// What a frame from the guest (its 10-byte header) asks of us that it negotiated: NEEDS_CSUM
// with CSUM, TCP segmentation with HOST_TSO4/6; UDP, ECN and the rest were never offered.
bool VhostDevice::HostOffloadOk(const uint8_t* hdr) const {
  if ((hdr[0] & kHdrNeedsCsum) != 0 && (features_ & vhost::kFCsum) == 0) return false;
  const uint8_t gso = hdr[1];
  if (gso == 0) return true;
  if (gso == kGsoTcpv4) return (features_ & vhost::kFHostTso4) != 0;
  if (gso == kGsoTcpv6) return (features_ & vhost::kFHostTso6) != 0;
  return false;
}

// What a frame for the guest (its 10-byte header) needs that the guest negotiated.
bool VhostDevice::OffloadOk(const uint8_t* hdr) const {
  if ((hdr[1] & kGsoEcn) != 0) return false;  // GUEST_ECN is not offered
  const uint8_t gso = hdr[1];
  if ((hdr[0] & kHdrNeedsCsum) != 0 && (features_ & vhost::kFGuestCsum) == 0) return false;
  if (gso == 0) return true;
  if (gso == kGsoTcpv4) return (features_ & vhost::kFGuestTso4) != 0;
  if (gso == kGsoTcpv6) return (features_ & vhost::kFGuestTso6) != 0;
  return false;
}

// One frame (10-byte header + Ethernet, `len` bytes in `iov` pieces) into the guest's RX
// buffers, merged over several (MRG_RXBUF, num_buffers set) when one is too small. No room:
// dropped and counted, never queued. Not published here.
VhostDevice::PutResult VhostDevice::PutFrame(const iovec* iov, int count, uint64_t len, TeeClock& clock) {
  Ring& r = rings_[kRxQ];
  uint8_t hdr[kMrgHdrLen];
  if (len < kVnetHdrLen) {
    drop_oversize_++;
    return kDropped;
  }
  {
    uint64_t got = 0;
    for (int i = 0; i < count && got < kVnetHdrLen; i++) {
      const uint64_t m = std::min<uint64_t>(iov[i].iov_len, kVnetHdrLen - got);
      std::memcpy(hdr + got, iov[i].iov_base, m);
      got += m;
    }
    if (got < kVnetHdrLen) {
      drop_oversize_++;
      return kDropped;
    }
  }
  if (!OffloadOk(hdr)) {
    drop_badoffload_++;
    return kDropped;
  }
  const uint64_t eth = len - kVnetHdrLen;
  if (eth > kGsoMaxFrame || (hdr[1] == 0 && eth > max_frame_)) {
    drop_oversize_++;
    return kDropped;
  }
  const uint64_t need = guest_hdr_ + eth;
  bool short_oversize = false;
  if (r.KnownShort(need, &short_oversize)) {  // the same chains already failed a frame this big
    if (short_oversize) {
      drop_oversize_++;
    } else {
      drop_nobuf_++;
    }
    return kDropped;
  }
  const Ring::Mark mark = r.mark();
  segs_.clear();
  chains_.clear();
  uint64_t cap = 0;
  while (cap < need && (mrg_ || chains_.empty())) {
    Chain c;
    std::string why;
    PopResult pr = r.Pop(mem_, true, &segs_, &c, &why);
    if (pr == PopResult::kEmpty) break;
    if (pr == PopResult::kViolation) {
      RingViolation(why);
      return kStopped;
    }
    chains_.push_back(c);
    cap += c.bytes;
  }
  if (cap < need) {
    r.Rewind(mark);  // taken again for a later frame
    r.NoteShort(cap, !mrg_ && !chains_.empty());
    if (!mrg_ && !chains_.empty()) {
      drop_oversize_++;  // one buffer per frame, and it is too small
    } else {
      drop_nobuf_++;
    }
    return kDropped;
  }
  // The guest's header: ours plus num_buffers (the buffers this frame spans).
  const uint16_t nb = static_cast<uint16_t>(chains_.size());
  std::memcpy(hdr + kVnetHdrLen, &nb, 2);
  // Source cursor: the header from `hdr`, then iov from byte 10 on.
  int si = 0;
  uint64_t soff = kVnetHdrLen;
  while (si < count && soff >= iov[si].iov_len) soff -= iov[si++].iov_len;
  uint64_t done = 0;  // bytes of [guest header][frame] written
  for (const Chain& c : chains_) {
    uint32_t in_chain = 0;
    for (uint32_t k = 0; k < c.count && done < need; k++) {
      const Seg& sg = segs_[c.first + k];
      uint64_t off = 0;
      while (off < sg.len && done < need) {
        uint64_t m;
        if (done < guest_hdr_) {
          m = std::min<uint64_t>(sg.len - off, guest_hdr_ - done);
          std::memcpy(sg.p + off, hdr + done, m);
        } else {
          if (si >= count) break;  // the pieces held less than `len` (not from us)
          m = std::min<uint64_t>({sg.len - off, need - done, iov[si].iov_len - soff});
          std::memcpy(sg.p + off, static_cast<const uint8_t*>(iov[si].iov_base) + soff, m);
          soff += m;
          if (soff == iov[si].iov_len) {
            si++;
            soff = 0;
          }
        }
        off += m;
        done += m;
        in_chain += static_cast<uint32_t>(m);
      }
    }
    r.Use(c.head, in_chain);
  }
  tx_frames_++;
  tx_bytes_ += static_cast<double>(eth);
  if (tee_.out) {
    if (count == 1) {
      tee_.Write(static_cast<const uint8_t*>(iov[0].iov_base), static_cast<uint32_t>(len), static_cast<uint32_t>(len),
                 tee_.tx_skip, kTeeOut, clock);
    } else {
      scratch_.resize(len);
      uint64_t off = 0;
      for (int i = 0; i < count && off < len; i++) {
        const uint64_t m = std::min<uint64_t>(iov[i].iov_len, len - off);
        std::memcpy(scratch_.data() + off, iov[i].iov_base, m);
        off += m;
      }
      tee_.Write(scratch_.data(), static_cast<uint32_t>(len), static_cast<uint32_t>(off), tee_.tx_skip, kTeeOut, clock);
    }
  }
  return kPut;
}

// Frames into the guest's RX ring, in order. Signals the guest once (or, deferred, after the
// cut-through batch).
uint32_t VhostDevice::WriteFrames(const iovec* frames, size_t n, bool defer) {
  if (!running_) {
    drop_notrunning_ += static_cast<double>(n);
    return 0;
  }
  uint32_t delivered = 0;
  TeeClock clock;
  size_t i = 0;
  for (; i < n && running_; i++) {
    PutResult res = PutFrame(&frames[i], 1, frames[i].iov_len, clock);
    if (res == kStopped) break;
    if (res == kPut) delivered++;
  }
  if (i < n) drop_notrunning_ += static_cast<double>(n - i);
  if (running_) {
    if (defer) {
      MarkCutDirty(this);
    } else {
      rings_[kRxQ].Publish();
    }
  }
  return delivered;
}

void VhostDevice::CutWriteV(const iovec* iov, int count, uint32_t len) {
  if (!running_) {
    drop_notrunning_++;
    return;
  }
  TeeClock clock;
  if (PutFrame(iov, count, len, clock) == kPut) MarkCutDirty(this);
}

void VhostDevice::CallForwarded(napi_ref cb, double frames, double bytes) {
  napi_handle_scope scope;
  if (napi_open_handle_scope(env_, &scope) != napi_ok) return;
  napi_value argv[2];
  napi_create_double(env_, frames, &argv[0]);
  napi_create_double(env_, bytes, &argv[1]);
  CallJs(cb, 2, argv);
  napi_close_handle_scope(env_, scope);
}

void VhostDevice::CallOnRead(uint32_t count, uint32_t start) {
  napi_handle_scope scope;
  if (napi_open_handle_scope(env_, &scope) != napi_ok) return;
  napi_value argv[2];
  napi_create_uint32(env_, count, &argv[0]);
  napi_create_uint32(env_, start, &argv[1]);
  CallJs(on_read_, 2, argv);
  napi_close_handle_scope(env_, scope);
}

// fn_ref(...argv) with the device as `this`, as a callback from the event loop; an exception is
// counted and dropped (the daemon survives it).
void VhostDevice::CallJs(napi_ref fn_ref, size_t argc, const napi_value* argv) {
  if (wrapper_ == nullptr || finalized_ || fn_ref == nullptr) return;
  napi_value self = nullptr, fn = nullptr;
  if (napi_get_reference_value(env_, wrapper_, &self) != napi_ok || self == nullptr ||
      napi_get_reference_value(env_, fn_ref, &fn) != napi_ok || fn == nullptr) {
    return;
  }
  napi_value result;
  if (napi_make_callback(env_, nullptr, self, fn, argc, argv, &result) != napi_ok) {
    bool pending = false;
    napi_is_exception_pending(env_, &pending);
    if (pending) {
      napi_value exc;
      napi_get_and_clear_last_exception(env_, &exc);
      cb_errors_++;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// N-API.

napi_value VhostDevice::New(napi_env env, napi_callback_info info) {
  napi_value self, opts;
  if (!ConstructorWithOptions(env, info, "VhostDevice", &self, &opts)) return nullptr;
  int32_t fd = -1;
  uint32_t max_frame = 0, batch = 0;
  bool offloads = false;
  napi_value on_read, on_state;
  if (!GetInt32Prop(env, opts, "listenFd", true, &fd) || !GetUint32Prop(env, opts, "maxFrame", true, &max_frame) ||
      !GetUint32Prop(env, opts, "batch", true, &batch) || !GetBoolProp(env, opts, "offloads", &offloads) ||
      !GetFunctionProp(env, opts, "onRead", &on_read) || !GetFunctionProp(env, opts, "onState", &on_state)) {
    return nullptr;
  }
  if (max_frame < 14 || max_frame > kGsoMaxFrame) {
    ThrowType(env, "option 'maxFrame' must be 14.." + std::to_string(kGsoMaxFrame));
    return nullptr;
  }
  if (batch < 1 || batch > kMaxBatch) {
    ThrowType(env, "option 'batch' must be 1.." + std::to_string(kMaxBatch));
    return nullptr;
  }
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    ThrowErrno(env, fd < 0 ? EBADF : errno, "new VhostDevice", "listenFd " + std::to_string(fd));
    return nullptr;
  }
  if (!S_ISSOCK(st.st_mode)) {
    ThrowType(env, "option 'listenFd' must be a listening unix stream socket");
    return nullptr;
  }
  // Whatever the slot must hold: a GSO super-frame from a guest that negotiated TSO.
  const uint32_t slot = kVnetHdrLen + std::max(max_frame, kGsoMaxFrame);
  void* data = nullptr;
  napi_value buffer, lengths_ab, lengths, slot_v;
  MVNET_CALL(env, napi_create_buffer(env, static_cast<size_t>(slot) * batch, &data, &buffer));
  void* lens_data = nullptr;
  MVNET_CALL(env, napi_create_arraybuffer(env, batch * sizeof(uint32_t), &lens_data, &lengths_ab));
  MVNET_CALL(env, napi_create_typedarray(env, napi_uint32_array, batch, lengths_ab, 0, &lengths));
  std::memset(lens_data, 0, batch * sizeof(uint32_t));
  MVNET_CALL(env, napi_create_uint32(env, slot, &slot_v));
  napi_property_descriptor props[] = {
      {"buffer", nullptr, nullptr, nullptr, nullptr, buffer, napi_enumerable, nullptr},
      {"lengths", nullptr, nullptr, nullptr, nullptr, lengths, napi_enumerable, nullptr},
      {"slotSize", nullptr, nullptr, nullptr, nullptr, slot_v, napi_enumerable, nullptr},
      {"onRead", nullptr, nullptr, nullptr, nullptr, on_read, napi_default, nullptr},
      {"onState", nullptr, nullptr, nullptr, nullptr, on_state, napi_default, nullptr},
  };
  MVNET_CALL(env, napi_define_properties(env, self, sizeof(props) / sizeof(props[0]), props));
  uv_loop_t* loop = nullptr;
  MVNET_CALL(env, napi_get_uv_event_loop(env, &loop));

  VhostDevice* d = new VhostDevice();
  d->env_ = env;
  d->loop_ = loop;
  d->listen_fd_ = fd;
  d->max_frame_ = max_frame;
  d->slot_ = slot;
  d->batch_ = batch;
  d->buf_ = static_cast<uint8_t*>(data);
  d->lens_ = static_cast<uint32_t*>(lens_data);
  d->offered_ = vhost::kFVersion1 | vhost::kFMrgRxbuf | vhost::kFProtocolFeatures | vhost::kFMtu | vhost::kFEventIdx;
  if (offloads) {
    d->offered_ |= vhost::kFCsum | vhost::kFGuestCsum | vhost::kFGuestTso4 | vhost::kFGuestTso6 | vhost::kFHostTso4 |
                   vhost::kFHostTso6;
  }
  d->segs_.reserve(256);
  d->chains_.reserve(64);
  uv_idle_init(loop, &d->idle_);
  d->idle_.data = d;
  d->InitReport(loop);
  // The listener never blocks accept.
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  if (napi_wrap(env, self, d, Finalize, nullptr, &d->wrapper_) != napi_ok) {
    ThrowLastError(env, "napi_wrap");
    d->finalized_ = true;
    d->listen_fd_ = -1;  // not ours: the constructor failed
    d->Close();
    return nullptr;
  }
  if (napi_create_reference(env, on_read, 0, &d->on_read_) != napi_ok ||
      napi_create_reference(env, on_state, 0, &d->on_state_) != napi_ok) {
    ThrowLastError(env, "napi_create_reference");
    d->Close();
    return nullptr;
  }
  return self;
}

VhostDevice* VhostDevice::Unwrap(napi_env env, napi_callback_info info, size_t* argc, napi_value* argv) {
  return UnwrapThis<VhostDevice>(env, info, argc, argv, "not a VhostDevice");
}

napi_value VhostDevice::JsStart(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  VhostDevice* d = Unwrap(env, info, &argc, nullptr);
  if (!d || d->closed_ || d->started_) return nullptr;
  d->listen_w_ = d->OpenWatch(d->listen_fd_, kWatchListen);
  if (d->listen_w_ == nullptr) {
    ThrowType(env, "the listening socket cannot be polled");
    return nullptr;
  }
  d->started_ = true;
  d->SetActive(true);
  d->OnListen();  // a front-end already waiting
  d->NotifyState();
  return nullptr;
}

napi_value VhostDevice::JsWrite(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  VhostDevice* d = Unwrap(env, info, &argc, argv);
  if (!d) return nullptr;
  uint32_t n = 0;
  if (!GetWriteCount(env, argc, argv, &n) || !GetWriteFrames(env, argv[0], n, &d->write_iov_)) return nullptr;
  uint32_t done = 0;
  if (d->closed_) {
    d->drop_notrunning_ += n;
  } else {
    done = d->WriteFrames(d->write_iov_.data(), n, false);
  }
  d->NotifyState();
  napi_value result;
  MVNET_CALL(env, napi_create_uint32(env, done, &result));
  return result;
}

napi_value VhostDevice::JsProcessQueues(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  VhostDevice* d = Unwrap(env, info, &argc, nullptr);
  if (!d) return nullptr;
  uint32_t taken = d->closed_ ? 0 : d->ProcessTx();
  d->NotifyState();
  napi_value result;
  MVNET_CALL(env, napi_create_uint32(env, taken, &result));
  return result;
}

napi_value VhostDevice::JsStats(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  VhostDevice* d = Unwrap(env, info, &argc, nullptr);
  if (!d) return nullptr;
  napi_value o;
  MVNET_CALL(env, napi_create_object(env, &o));
  const uint64_t f = d->features_;
  if (!SetString(env, o, "state", StateName(d->state_)) || !SetString(env, o, "detail", d->detail_) ||
      !SetNumber(env, o, "rxFrames", d->rx_frames_) || !SetNumber(env, o, "rxBytes", d->rx_bytes_) ||
      !SetNumber(env, o, "txFrames", d->tx_frames_) || !SetNumber(env, o, "txBytes", d->tx_bytes_) ||
      !SetNumber(env, o, "dropNoBuffers", d->drop_nobuf_) || !SetNumber(env, o, "dropNotRunning", d->drop_notrunning_) ||
      !SetNumber(env, o, "dropOversize", d->drop_oversize_) || !SetNumber(env, o, "dropBadOffload", d->drop_badoffload_) ||
      !SetNumber(env, o, "callbackErrors", d->cb_errors_) || !SetNumber(env, o, "connections", d->connections_) ||
      !SetNumber(env, o, "violations", d->violations_) || !SetString(env, o, "features", Hex(f)) ||
      !SetBool(env, o, "guestCsum", (f & vhost::kFGuestCsum) != 0) ||
      !SetBool(env, o, "guestTso4", (f & vhost::kFGuestTso4) != 0) ||
      !SetBool(env, o, "guestTso6", (f & vhost::kFGuestTso6) != 0) ||
      !SetNumber(env, o, "regions", d->mem_.count()) ||
      !SetNumber(env, o, "memBytes", static_cast<double>(d->mem_.bytes())) ||
      !SetNumber(env, o, "descriptorsRead", static_cast<double>(d->descriptors_read_ + d->rings_[0].descriptors_read() + d->rings_[1].descriptors_read()))) {
    return nullptr;
  }
  return o;
}

// setTee and the switch methods: as the Device's (device.h Tee, SwitchMember).
napi_value VhostDevice::JsSetTee(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  VhostDevice* d = Unwrap(env, info, &argc, argv);
  if (!d) return nullptr;
  d->tee_.Set(env, argc, argv, d->closed_);
  return nullptr;
}

napi_value VhostDevice::JsBindSwitch(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  VhostDevice* d = Unwrap(env, info, &argc, argv);
  if (!d) return nullptr;
  uint32_t mode = 0;
  // Frames to and from this device always carry a virtio_net_hdr: 'pass' (1) only.
  if (argc >= 2 && napi_get_value_uint32(env, argv[1], &mode) == napi_ok && mode != 1) {
    ThrowType(env, "bindSwitch: a VhostDevice binds with mode 1 ('pass')");
    return nullptr;
  }
  return d->JsBind(env, argc, argv, d);
}

napi_value VhostDevice::JsSetSwitchMac(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  VhostDevice* d = Unwrap(env, info, &argc, argv);
  if (!d) return nullptr;
  return d->JsSetMac(env, argc, argv);
}

napi_value VhostDevice::JsUnbindSwitch(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  VhostDevice* d = Unwrap(env, info, &argc, nullptr);
  if (!d) return nullptr;
  return d->JsUnbind(env);
}

napi_value VhostDevice::JsFlushForwarded(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  VhostDevice* d = Unwrap(env, info, &argc, nullptr);
  if (!d) return nullptr;
  return d->JsFlush(env);
}

napi_value VhostDevice::JsClose(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  VhostDevice* d = Unwrap(env, info, &argc, nullptr);
  if (!d) return nullptr;
  d->Close();
  return nullptr;
}

}  // namespace

napi_value DefineVhostDeviceClass(napi_env env) {
  napi_property_descriptor methods[] = {
      {"start", nullptr, VhostDevice::JsStart, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"write", nullptr, VhostDevice::JsWrite, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"stats", nullptr, VhostDevice::JsStats, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"setTee", nullptr, VhostDevice::JsSetTee, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"bindSwitch", nullptr, VhostDevice::JsBindSwitch, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"setSwitchMac", nullptr, VhostDevice::JsSetSwitchMac, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"unbindSwitch", nullptr, VhostDevice::JsUnbindSwitch, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"flushForwarded", nullptr, VhostDevice::JsFlushForwarded, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"processQueues", nullptr, VhostDevice::JsProcessQueues, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"close", nullptr, VhostDevice::JsClose, nullptr, nullptr, nullptr, napi_default_method, nullptr},
  };
  napi_value cls;
  MVNET_CALL(env, napi_define_class(env, "VhostDevice", NAPI_AUTO_LENGTH, VhostDevice::New, nullptr,
                                    sizeof(methods) / sizeof(methods[0]), methods, &cls));
  return cls;
}

}  // namespace mvnet
