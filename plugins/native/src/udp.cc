// A UDP socket for the link carrier (daemon/carriers/udp.ts) with batched I/O, in the pattern of
// PingSocket (ping.cc) and Device (device.cc): readiness from uv_poll, recvmmsg of up to
// kUdpBatch datagrams into one preallocated arena (slot i at i * kUdpSlot), one JS callback per
// batch with the lengths and, per datagram, an index into a table of source strings that the
// socket keeps (a string is made only when a source is new to the table). At most
// kUdpReadRounds batches per readable event, so a flooding peer cannot starve the loop.
// Sending: one sendmmsg per kUdpBatch datagrams to one destination (a sockaddr made once by
// target() and cached by the caller); a send that would block drops the unsent rest (never
// queues, never blocks); other errors drop the datagram they concern.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <node_api.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include "napi_util.h"

namespace mvnet {
namespace {

constexpr uint32_t kUdpBatch = 64;          // datagrams per recvmmsg / sendmmsg
constexpr uint32_t kUdpSlot = 65536;        // arena stride
constexpr uint32_t kUdpMaxDatagram = 65535;  // read into a slot at most; larger is truncated (flagged)
constexpr uint32_t kUdpSources = 64;        // source table: >= kUdpBatch (see SourceIndex)
constexpr int kUdpReadRounds = 4;
constexpr int kUdpReadTries = 8;
constexpr int kUdpMaxPollErrors = 16;
constexpr int kUdpSocketBuf = 4 << 20;
constexpr uint32_t kGsoMaxSegments = 64;   // the kernel's UDP_MAX_SEGMENTS
constexpr size_t kGsoMaxBytes = 65507;      // one IPv4 UDP payload at most
static_assert(kUdpSources >= kUdpBatch, "a batch must never evict a source it already uses");
static_assert(kUdpSources <= 256, "source indices are bytes");

bool IsFatalUdpError(int err) {
  switch (err) {
    case EBADF:
    case ENOTSOCK:
    case EFAULT:
    case EINVAL:
    case EOPNOTSUPP:
      return true;
    default:
      return false;
  }
}

// A source as compared: zeroed padding, so memcmp works.
struct SourceKey {
  uint8_t addr[16];
  uint32_t scope;
  uint16_t port;  // network order
  uint16_t family;
  bool operator==(const SourceKey& o) const { return std::memcmp(this, &o, sizeof(*this)) == 0; }
};
static_assert(sizeof(SourceKey) == 24, "SourceKey has no padding");

void SetBufSize(int fd, int force_opt, int opt, int size) {
  if (setsockopt(fd, SOL_SOCKET, force_opt, &size, sizeof(size)) != 0) {
    setsockopt(fd, SOL_SOCKET, opt, &size, sizeof(size));
  }
}

// "1.2.3.4:5", "[::1]:5", "[fe80::1%eth0]:5"; a v4-mapped address as plain IPv4.
std::string FormatSource(const SourceKey& k) {
  char ip[INET6_ADDRSTRLEN + 1 + UV_IF_NAMESIZE + 1];
  std::memset(ip, 0, sizeof(ip));
  uint16_t port = ntohs(k.port);
  if (k.family == AF_INET) {
    if (uv_inet_ntop(AF_INET, k.addr, ip, sizeof(ip)) != 0) return "?";
    return std::string(ip) + ":" + std::to_string(port);
  }
  in6_addr a;
  std::memcpy(&a, k.addr, 16);
  if (IN6_IS_ADDR_V4MAPPED(&a)) {
    if (uv_inet_ntop(AF_INET, k.addr + 12, ip, sizeof(ip)) != 0) return "?";
    return std::string(ip) + ":" + std::to_string(port);
  }
  if (uv_inet_ntop(AF_INET6, k.addr, ip, INET6_ADDRSTRLEN) != 0) return "?";
  std::string s = "[";
  s += ip;
  if (IN6_IS_ADDR_LINKLOCAL(&a) && k.scope > 0) {
    char name[UV_IF_NAMESIZE + 1];
    size_t n = sizeof(name);
    if (uv_if_indextoname(k.scope, name, &n) == 0 && n < sizeof(name)) {
      s += "%";
      s.append(name, n);
    } else {
      s += "%" + std::to_string(k.scope);
    }
  }
  s += "]:" + std::to_string(port);
  return s;
}

bool GetBytes(napi_env env, napi_value v, void** data, size_t* len) {
  bool is_ta = false;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta) return false;
  napi_typedarray_type type;
  napi_value ab;
  size_t offset;
  if (napi_get_typedarray_info(env, v, &type, len, data, &ab, &offset) != napi_ok) return false;
  return type == napi_uint8_array || type == napi_int8_array || type == napi_uint8_clamped_array;
}

class UdpSocket {
 public:
  static napi_value New(napi_env env, napi_callback_info info);
  static napi_value JsStart(napi_env env, napi_callback_info info);
  static napi_value JsTarget(napi_env env, napi_callback_info info);
  static napi_value JsSend(napi_env env, napi_callback_info info);
  static napi_value JsStats(napi_env env, napi_callback_info info);
  static napi_value JsClose(napi_env env, napi_callback_info info);
  static void Finalize(napi_env env, void* data, void* hint);

 private:
  UdpSocket() = default;

  static UdpSocket* Unwrap(napi_env env, napi_callback_info info, size_t* argc, napi_value* argv);
  static void OnPoll(uv_poll_t* handle, int status, int events);
  static void OnHandleClosed(uv_handle_t* handle);

  uint32_t ReadBatch();
  uint8_t SourceIndex(const SourceKey& k);
  void UpdateIo();
  void SetActive(bool active);
  void Fail(int err, const char* what);
  void CallJs(const char* prop, size_t argc, napi_value* argv);
  void Close();
  void DeleteRefs();
  bool Detached(napi_ref* refs, size_t n);
  void SendGathered(iovec* iov, uint32_t m, sockaddr_storage* to, socklen_t to_len, double* sent, double* sent_bytes,
                    double* queue_full, double* io_error, bool* blocked);

  napi_env env_ = nullptr;
  napi_ref wrapper_ = nullptr;  // weak; strong while polling so a live socket isn't collected
  napi_ref sources_ = nullptr;  // the JS array of source strings (strong until closed)
  bool active_ref_ = false;

  int fd_ = -1;
  bool v6_ = false;
  uint8_t* buf_ = nullptr;  // the arena, kUdpBatch * kUdpSlot (owned by the JS Buffer `buffer`)
  uint32_t* lens_ = nullptr;
  uint8_t* src_idx_ = nullptr;
  double* tx_info_ = nullptr;  // [sent, sentBytes, queueFull, ioError] of the last send()
  // The ArrayBuffers behind buf_, lens_, src_idx_ (until closed) and tx_info_ (until finalized):
  // JS can detach one (a transfer to structuredClone / postMessage), and the memory then belongs
  // to whoever received it, so each is checked before native code writes into it.
  napi_ref rx_abs_[3] = {nullptr, nullptr, nullptr};
  napi_ref tx_ab_ = nullptr;

  uv_poll_t poll_;
  bool polling_ = false;
  int pending_closes_ = 0;
  int poll_errors_ = 0;

  bool reading_ = false;
  bool closed_ = false;
  bool failed_ = false;
  bool finalized_ = false;

  mmsghdr rmsgs_[kUdpBatch];
  iovec riov_[kUdpBatch];
  sockaddr_in6 raddrs_[kUdpBatch];  // large enough for sockaddr_in too

  SourceKey table_[kUdpSources];
  uint32_t table_gen_[kUdpSources];  // batch generation that last used the entry
  bool table_valid_[kUdpSources];
  uint32_t gen_ = 0;
  uint32_t last_ = 0;
  uint32_t next_ = 0;

  // UDP GSO (UDP_SEGMENT): off for good after an error that says the path or kernel cannot do
  // it; segment sizes from gso_fail_size_ up are sent plainly (larger than the path's MTU).
  bool gso_off_ = false;
  uint32_t gso_fail_size_ = UINT32_MAX;
  double tx_gso_ = 0;

  double rx_errors_ = 0, cb_errors_ = 0, rx_truncated_ = 0;
  int last_rx_error_ = 0;
};

// new UdpSocket({ host, port, onRead, onError }): host '' (dual-stack any), an IPv6 literal
// (optionally %scope: a dual-stack udp6 socket) or an IPv4 literal (udp4). Throws an Error with
// .code (EADDRINUSE, EINVAL…) when the socket cannot be made or bound.
napi_value UdpSocket::New(napi_env env, napi_callback_info info) {
  napi_value self, opts;
  if (!ConstructorWithOptions(env, info, "UdpSocket", &self, &opts)) return nullptr;
  std::string host;
  uint32_t port = 0;
  napi_value on_read, on_error;
  if (!GetStringProp(env, opts, "host", true, &host) || !GetUint32Prop(env, opts, "port", true, &port) ||
      !GetFunctionProp(env, opts, "onRead", &on_read) || !GetFunctionProp(env, opts, "onError", &on_error)) {
    return nullptr;
  }
  if (port > 65535 || host.size() > 255 || host.find('\0') != std::string::npos) {
    ThrowType(env, "new UdpSocket: port must be 0..65535 and host an IP address");
    return nullptr;
  }
  const bool v6 = host.empty() || host.find(':') != std::string::npos;
  sockaddr_in6 s6;
  sockaddr_in s4;
  std::memset(&s6, 0, sizeof(s6));
  std::memset(&s4, 0, sizeof(s4));
  int perr = 0;
  if (v6) {
    perr = uv_ip6_addr(host.empty() ? "::" : host.c_str(), static_cast<int>(port), &s6);
  } else {
    perr = uv_ip4_addr(host.c_str(), static_cast<int>(port), &s4);
  }
  if (perr != 0) {
    ThrowErrno(env, EINVAL, "bind", "not an IP address: " + host);
    return nullptr;
  }
  int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ThrowErrno(env, errno, v6 ? "socket(AF_INET6, SOCK_DGRAM)" : "socket(AF_INET, SOCK_DGRAM)", "");
    return nullptr;
  }
  if (v6) {
    int off = 0;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));  // dual-stack, as libuv does
  }
  int rc = v6 ? bind(fd, reinterpret_cast<sockaddr*>(&s6), sizeof(s6)) : bind(fd, reinterpret_cast<sockaddr*>(&s4), sizeof(s4));
  if (rc != 0) {
    int err = errno;
    ::close(fd);
    ThrowErrno(env, err, "bind", host.empty() ? "::" : host);
    return nullptr;
  }
  SetBufSize(fd, SO_RCVBUFFORCE, SO_RCVBUF, kUdpSocketBuf);
  SetBufSize(fd, SO_SNDBUFFORCE, SO_SNDBUF, kUdpSocketBuf);
  sockaddr_in6 local;
  std::memset(&local, 0, sizeof(local));
  socklen_t llen = sizeof(local);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &llen) != 0) {
    int err = errno;
    ::close(fd);
    ThrowErrno(env, err, "getsockname", "");
    return nullptr;
  }
  SourceKey lk;
  std::memset(&lk, 0, sizeof(lk));
  if (v6) {
    lk.family = AF_INET6;
    std::memcpy(lk.addr, &local.sin6_addr, 16);
    lk.port = local.sin6_port;
    lk.scope = local.sin6_scope_id;
  } else {
    const sockaddr_in& l4 = reinterpret_cast<const sockaddr_in&>(local);
    lk.family = AF_INET;
    std::memcpy(lk.addr, &l4.sin_addr, 4);
    lk.port = l4.sin_port;
  }
  // The bound address as text, as the carrier's status shows it ("[::]:5", "127.0.0.1:5"): the
  // source formatting, except that an explicitly v4-mapped bind stays IPv6 text.
  std::string local_text = FormatSource(lk);

  auto fail = [&](const char* what) -> napi_value {
    ::close(fd);
    ThrowLastError(env, what);
    return nullptr;
  };
  void* data = nullptr;
  void* lens_data = nullptr;
  void* idx_data = nullptr;
  void* tx_data = nullptr;
  napi_value buffer, lengths_ab, lengths, idx_ab, idx, tx_ab, tx, sources, v6_value, port_value, addr_value;
  if (napi_create_buffer(env, static_cast<size_t>(kUdpSlot) * kUdpBatch, &data, &buffer) != napi_ok ||
      napi_create_arraybuffer(env, kUdpBatch * sizeof(uint32_t), &lens_data, &lengths_ab) != napi_ok ||
      napi_create_typedarray(env, napi_uint32_array, kUdpBatch, lengths_ab, 0, &lengths) != napi_ok ||
      napi_create_arraybuffer(env, kUdpBatch, &idx_data, &idx_ab) != napi_ok ||
      napi_create_typedarray(env, napi_uint8_array, kUdpBatch, idx_ab, 0, &idx) != napi_ok ||
      napi_create_arraybuffer(env, 4 * sizeof(double), &tx_data, &tx_ab) != napi_ok ||
      napi_create_typedarray(env, napi_float64_array, 4, tx_ab, 0, &tx) != napi_ok ||
      napi_create_array_with_length(env, kUdpSources, &sources) != napi_ok ||
      napi_get_boolean(env, v6, &v6_value) != napi_ok ||
      napi_create_uint32(env, ntohs(lk.port), &port_value) != napi_ok ||
      napi_create_string_utf8(env, local_text.data(), local_text.size(), &addr_value) != napi_ok) {
    return fail("new UdpSocket");
  }
  napi_value empty;
  if (napi_create_string_utf8(env, "", 0, &empty) != napi_ok) return fail("new UdpSocket");
  for (uint32_t k = 0; k < kUdpSources; k++) {
    if (napi_set_element(env, sources, k, empty) != napi_ok) return fail("new UdpSocket");
  }
  std::memset(lens_data, 0, kUdpBatch * sizeof(uint32_t));
  std::memset(idx_data, 0, kUdpBatch);
  std::memset(tx_data, 0, 4 * sizeof(double));

  napi_property_descriptor props[] = {
      {"buffer", nullptr, nullptr, nullptr, nullptr, buffer, napi_enumerable, nullptr},
      {"lengths", nullptr, nullptr, nullptr, nullptr, lengths, napi_enumerable, nullptr},
      {"sourceIndex", nullptr, nullptr, nullptr, nullptr, idx, napi_enumerable, nullptr},
      {"sources", nullptr, nullptr, nullptr, nullptr, sources, napi_enumerable, nullptr},
      {"txInfo", nullptr, nullptr, nullptr, nullptr, tx, napi_enumerable, nullptr},
      {"v6", nullptr, nullptr, nullptr, nullptr, v6_value, napi_enumerable, nullptr},
      {"port", nullptr, nullptr, nullptr, nullptr, port_value, napi_enumerable, nullptr},
      {"address", nullptr, nullptr, nullptr, nullptr, addr_value, napi_enumerable, nullptr},
      {"onRead", nullptr, nullptr, nullptr, nullptr, on_read, napi_default, nullptr},
      {"onError", nullptr, nullptr, nullptr, nullptr, on_error, napi_default, nullptr},
  };
  if (napi_define_properties(env, self, sizeof(props) / sizeof(props[0]), props) != napi_ok) return fail("new UdpSocket");

  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return fail("napi_get_uv_event_loop");

  UdpSocket* p = new UdpSocket();
  p->env_ = env;
  p->fd_ = fd;
  p->v6_ = v6;
  p->buf_ = static_cast<uint8_t*>(data);
  p->lens_ = static_cast<uint32_t*>(lens_data);
  p->src_idx_ = static_cast<uint8_t*>(idx_data);
  p->tx_info_ = static_cast<double*>(tx_data);
  std::memset(p->table_, 0, sizeof(p->table_));
  std::memset(p->table_gen_, 0, sizeof(p->table_gen_));
  std::memset(p->table_valid_, 0, sizeof(p->table_valid_));
  for (uint32_t k = 0; k < kUdpBatch; k++) {
    p->riov_[k].iov_base = p->buf_ + static_cast<size_t>(k) * kUdpSlot;
    p->riov_[k].iov_len = kUdpMaxDatagram;
    msghdr& h = p->rmsgs_[k].msg_hdr;
    std::memset(&h, 0, sizeof(h));
    h.msg_iov = &p->riov_[k];
    h.msg_iovlen = 1;
    h.msg_name = &p->raddrs_[k];
  }
  napi_value arena_ab = nullptr;
  {
    napi_typedarray_type t;
    size_t l = 0, off = 0;
    void* d = nullptr;
    if (napi_get_typedarray_info(env, buffer, &t, &l, &d, &arena_ab, &off) != napi_ok) {
      delete p;
      return fail("napi_get_typedarray_info");
    }
  }
  if (napi_create_reference(env, sources, 1, &p->sources_) != napi_ok ||
      napi_create_reference(env, arena_ab, 1, &p->rx_abs_[0]) != napi_ok ||
      napi_create_reference(env, lengths_ab, 1, &p->rx_abs_[1]) != napi_ok ||
      napi_create_reference(env, idx_ab, 1, &p->rx_abs_[2]) != napi_ok ||
      napi_create_reference(env, tx_ab, 1, &p->tx_ab_) != napi_ok) {
    p->DeleteRefs();
    delete p;
    return fail("napi_create_reference");
  }
  int r = uv_poll_init(loop, &p->poll_, fd);
  if (r != 0) {
    p->DeleteRefs();
    delete p;
    ::close(fd);
    ThrowPlain(env, std::string("uv_poll_init: ") + uv_strerror(r));
    return nullptr;
  }
  p->poll_.data = p;
  if (napi_wrap(env, self, p, Finalize, nullptr, &p->wrapper_) != napi_ok) {
    ThrowLastError(env, "napi_wrap");
    p->finalized_ = true;
    p->Close();  // closes the fd; deleted in OnHandleClosed
    p->DeleteRefs();
    return nullptr;
  }
  return self;
}

UdpSocket* UdpSocket::Unwrap(napi_env env, napi_callback_info info, size_t* argc, napi_value* argv) {
  return UnwrapThis<UdpSocket>(env, info, argc, argv, "not a UdpSocket");
}

void UdpSocket::Finalize(napi_env env, void* data, void* /*hint*/) {
  UdpSocket* p = static_cast<UdpSocket*>(data);
  p->finalized_ = true;
  if (p->wrapper_) {
    napi_delete_reference(env, p->wrapper_);
    p->wrapper_ = nullptr;
  }
  p->active_ref_ = false;
  if (p->tx_ab_ != nullptr) {
    napi_delete_reference(env, p->tx_ab_);
    p->tx_ab_ = nullptr;
  }
  p->tx_info_ = nullptr;
  if (!p->closed_) {
    p->Close();  // deleted in OnHandleClosed
  } else if (p->pending_closes_ == 0) {
    delete p;
  }
}

void UdpSocket::Close() {
  if (closed_) return;
  closed_ = true;
  reading_ = false;
  SetActive(false);
  // uv_close() removes the fd from epoll synchronously, so the fd can be closed right away.
  uv_close(reinterpret_cast<uv_handle_t*>(&poll_), OnHandleClosed);
  pending_closes_ = 1;
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (sources_ != nullptr) {
    napi_delete_reference(env_, sources_);
    sources_ = nullptr;
  }
  for (napi_ref& r : rx_abs_) {
    if (r != nullptr) napi_delete_reference(env_, r);
    r = nullptr;
  }
  // The arena and the arrays belong to the JS object (released with it); no native pointer
  // into them is used after this.
  buf_ = nullptr;
  lens_ = nullptr;
  src_idx_ = nullptr;
}

// Every reference (New's failure paths; otherwise Close and Finalize release them).
void UdpSocket::DeleteRefs() {
  napi_ref* all[] = {&sources_, &rx_abs_[0], &rx_abs_[1], &rx_abs_[2], &tx_ab_};
  for (napi_ref* r : all) {
    if (*r != nullptr) napi_delete_reference(env_, *r);
    *r = nullptr;
  }
}

// True when one of refs[0..n) is gone or its ArrayBuffer was detached (call in a handle scope).
bool UdpSocket::Detached(napi_ref* refs, size_t n) {
  for (size_t k = 0; k < n; k++) {
    napi_value ab = nullptr;
    bool detached = true;
    if (refs[k] == nullptr || napi_get_reference_value(env_, refs[k], &ab) != napi_ok || ab == nullptr ||
        napi_is_detached_arraybuffer(env_, ab, &detached) != napi_ok || detached) {
      return true;
    }
  }
  return false;
}

void UdpSocket::OnHandleClosed(uv_handle_t* handle) {
  UdpSocket* p = static_cast<UdpSocket*>(handle->data);
  if (--p->pending_closes_ == 0 && p->finalized_) delete p;
}

void UdpSocket::SetActive(bool active) {
  if (active == active_ref_ || wrapper_ == nullptr || finalized_) return;
  uint32_t count = 0;
  if (active) {
    napi_reference_ref(env_, wrapper_, &count);
  } else {
    napi_reference_unref(env_, wrapper_, &count);
  }
  active_ref_ = active;
}

void UdpSocket::UpdateIo() {
  if (closed_) return;
  bool want = reading_ && !failed_;
  if (want != polling_) {
    if (want) {
      if (uv_poll_start(&poll_, UV_READABLE, OnPoll) != 0) want = false;
    } else {
      uv_poll_stop(&poll_);
    }
    polling_ = want;
  }
  SetActive(want);
}

void UdpSocket::OnPoll(uv_poll_t* handle, int status, int /*events*/) {
  UdpSocket* p = static_cast<UdpSocket*>(handle->data);
  if (p->closed_) return;
  if (status < 0) {
    // libuv stopped the watcher on POLLERR: fetch (and so clear) the pending error; count it,
    // give up on a socket that keeps failing.
    p->polling_ = false;
    int err = 0;
    socklen_t len = sizeof(err);
    bool cleared = getsockopt(p->fd_, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0;
    if (cleared) {
      if (IsFatalUdpError(err)) {
        p->Fail(err, "socket");
        return;
      }
      p->rx_errors_++;
      p->last_rx_error_ = err;
      p->poll_errors_ = 0;
    } else if (++p->poll_errors_ > kUdpMaxPollErrors) {
      p->Fail(EIO, "poll");
      return;
    }
    if (p->reading_) p->ReadBatch();
    if (!p->closed_ && !p->failed_) p->UpdateIo();
    return;
  }
  p->poll_errors_ = 0;
  for (int round = 0; round < kUdpReadRounds && p->reading_ && !p->closed_; round++) {
    if (p->ReadBatch() < kUdpBatch) break;
  }
}

// The table index of source `k`, adding it (and its string) when new. Entries used by earlier
// datagrams of the current batch (generation gen_) are never evicted: there are at most
// kUdpBatch - 1 of them and kUdpSources >= kUdpBatch slots, so a free one always exists.
uint8_t UdpSocket::SourceIndex(const SourceKey& k) {
  if (table_valid_[last_] && table_[last_] == k) {
    table_gen_[last_] = gen_;
    return static_cast<uint8_t>(last_);
  }
  for (uint32_t i = 0; i < kUdpSources; i++) {
    if (table_valid_[i] && table_[i] == k) {
      table_gen_[i] = gen_;
      last_ = i;
      return static_cast<uint8_t>(i);
    }
  }
  uint32_t slot = next_ % kUdpSources;
  for (uint32_t tries = 0; tries < kUdpSources; tries++) {
    if (!table_valid_[slot] || table_gen_[slot] != gen_) break;
    slot = (slot + 1) % kUdpSources;
  }
  next_ = (slot + 1) % kUdpSources;
  table_[slot] = k;
  table_valid_[slot] = true;
  table_gen_[slot] = gen_;
  last_ = slot;
  std::string s = FormatSource(k);
  napi_value arr = nullptr, str = nullptr;
  if (sources_ != nullptr && napi_get_reference_value(env_, sources_, &arr) == napi_ok && arr != nullptr &&
      napi_create_string_utf8(env_, s.data(), s.size(), &str) == napi_ok) {
    napi_set_element(env_, arr, slot, str);
  }
  return static_cast<uint8_t>(slot);
}

uint32_t UdpSocket::ReadBatch() {
  if (closed_ || fd_ < 0) return 0;
  {
    napi_handle_scope scope;
    if (napi_open_handle_scope(env_, &scope) != napi_ok) return 0;
    bool detached = Detached(rx_abs_, 3);
    napi_close_handle_scope(env_, scope);
    if (detached) {
      Fail(EFAULT, "recvmmsg (the arena's ArrayBuffer was detached)");
      return 0;
    }
  }
  uint32_t n = 0;
  int fatal = 0;
  for (int tries = 0; tries < kUdpReadTries; tries++) {
    for (uint32_t k = 0; k < kUdpBatch; k++) {
      rmsgs_[k].msg_hdr.msg_namelen = sizeof(sockaddr_in6);
      rmsgs_[k].msg_hdr.msg_flags = 0;
      rmsgs_[k].msg_len = 0;
    }
    int r = recvmmsg(fd_, rmsgs_, kUdpBatch, MSG_DONTWAIT, nullptr);
    if (r >= 0) {
      n = static_cast<uint32_t>(r) <= kUdpBatch ? static_cast<uint32_t>(r) : kUdpBatch;
      break;
    }
    int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) break;
    if (IsFatalUdpError(err)) {
      fatal = err;
      break;
    }
    rx_errors_++;  // a queued ICMP error (reading it cleared it) or a passing shortage
    last_rx_error_ = err;
  }
  if (n > 0) {
    napi_handle_scope scope;
    if (napi_open_handle_scope(env_, &scope) == napi_ok) {
      gen_++;
      for (uint32_t k = 0; k < n; k++) {
        uint32_t len = rmsgs_[k].msg_len;
        if ((rmsgs_[k].msg_hdr.msg_flags & MSG_TRUNC) || len > kUdpMaxDatagram) {
          len = kUdpMaxDatagram + 1;  // the JS side drops it as oversize
          rx_truncated_++;
        }
        lens_[k] = len;
        SourceKey key;
        std::memset(&key, 0, sizeof(key));
        const sockaddr_in6& sa = raddrs_[k];
        socklen_t alen = rmsgs_[k].msg_hdr.msg_namelen;
        if (v6_ && sa.sin6_family == AF_INET6 && alen >= sizeof(sockaddr_in6)) {
          key.family = AF_INET6;
          std::memcpy(key.addr, &sa.sin6_addr, 16);
          key.port = sa.sin6_port;
          key.scope = sa.sin6_scope_id;
        } else if (!v6_ && sa.sin6_family == AF_INET && alen >= sizeof(sockaddr_in)) {
          const sockaddr_in& s4 = reinterpret_cast<const sockaddr_in&>(sa);
          key.family = AF_INET;
          std::memcpy(key.addr, &s4.sin_addr, 4);
          key.port = s4.sin_port;
        } else {
          key.family = AF_UNSPEC;  // no usable address: formatted as "?"; replies go nowhere
        }
        src_idx_[k] = SourceIndex(key);
      }
      napi_value count = nullptr;
      if (napi_create_uint32(env_, n, &count) == napi_ok) CallJs("onRead", 1, &count);
      napi_close_handle_scope(env_, scope);
    }
  }
  if (fatal != 0 && !closed_) Fail(fatal, "recvmmsg");
  return n;
}

void UdpSocket::CallJs(const char* prop, size_t argc, napi_value* argv) {
  if (wrapper_ == nullptr || finalized_) return;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env_, &scope) != napi_ok) return;
  napi_value self = nullptr, fn = nullptr;
  if (napi_get_reference_value(env_, wrapper_, &self) == napi_ok && self != nullptr &&
      napi_get_named_property(env_, self, prop, &fn) == napi_ok) {
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
  napi_close_handle_scope(env_, scope);
}

void UdpSocket::Fail(int err, const char* what) {
  if (failed_ || closed_) return;
  failed_ = true;
  reading_ = false;
  UpdateIo();
  std::string msg = std::string(what) + ": " + std::strerror(err) + " (" + ErrnoName(err) + ")";
  napi_handle_scope scope;
  if (napi_open_handle_scope(env_, &scope) != napi_ok) return;
  napi_value v = nullptr;
  if (napi_create_string_utf8(env_, msg.data(), msg.size(), &v) == napi_ok) CallJs("onError", 1, &v);
  napi_close_handle_scope(env_, scope);
}

napi_value UdpSocket::JsStart(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  UdpSocket* p = Unwrap(env, info, &argc, nullptr);
  if (!p) return nullptr;
  if (p->closed_ || p->failed_) return nullptr;
  p->reading_ = true;
  p->UpdateIo();
  return nullptr;
}

// target(address, port) -> Buffer (the sockaddr to pass to send) or null when `address` is not
// an IP literal of the socket's family (an IPv4 destination of a udp6 socket: "::ffff:a.b.c.d").
napi_value UdpSocket::JsTarget(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  UdpSocket* p = Unwrap(env, info, &argc, argv);
  if (!p) return nullptr;
  std::string addr;
  uint32_t port = 0;
  napi_value null_value;
  MVNET_CALL(env, napi_get_null(env, &null_value));
  if (argc < 2 || !GetStringArg(env, argv[0], "address", &addr)) return nullptr;
  if (napi_get_value_uint32(env, argv[1], &port) != napi_ok || port < 1 || port > 65535 || addr.size() > 255 ||
      addr.find('\0') != std::string::npos) {
    return null_value;
  }
  void* data = nullptr;
  napi_value out;
  if (p->v6_) {
    sockaddr_in6 s6;
    std::memset(&s6, 0, sizeof(s6));
    if (addr.find(':') == std::string::npos || uv_ip6_addr(addr.c_str(), static_cast<int>(port), &s6) != 0) return null_value;
    MVNET_CALL(env, napi_create_buffer_copy(env, sizeof(s6), &s6, &data, &out));
  } else {
    sockaddr_in s4;
    std::memset(&s4, 0, sizeof(s4));
    if (addr.find(':') != std::string::npos || uv_ip4_addr(addr.c_str(), static_cast<int>(port), &s4) != 0) return null_value;
    MVNET_CALL(env, napi_create_buffer_copy(env, sizeof(s4), &s4, &data, &out));
  }
  return out;
}

// send(sockaddr, msgs): sendmmsg of msgs (Uint8Arrays) to the sockaddr from target(), in chunks
// of kUdpBatch. Fills txInfo with [sent, sentBytes, queueFull, ioError]: a send that would block
// drops the unsent rest as queueFull; any other error drops the one datagram (or, for a
// malformed element or a closed socket, the element) as ioError. Never blocks, never queues.
// Throws TypeError only for a malformed `sockaddr` or a `msgs` that is not an array. `msgs` is
// meant to be a plain array of Buffers (the carrier's): one whose element getters detach an
// earlier element's ArrayBuffer while it is read is not defended against.
napi_value UdpSocket::JsSend(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  UdpSocket* p = Unwrap(env, info, &argc, argv);
  if (!p) return nullptr;
  void* sa = nullptr;
  size_t sa_len = 0;
  bool is_array = false;
  if (argc < 2 || !GetBytes(env, argv[0], &sa, &sa_len) || napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array) {
    ThrowType(env, "send(sockaddr: Buffer, msgs: Buffer[])");
    return nullptr;
  }
  size_t want = p->v6_ ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  sockaddr_storage ss;
  std::memset(&ss, 0, sizeof(ss));
  if (sa_len != want) {
    ThrowType(env, "send: sockaddr is not one from this socket's target()");
    return nullptr;
  }
  std::memcpy(&ss, sa, sa_len);
  if (ss.ss_family != (p->v6_ ? AF_INET6 : AF_INET)) {
    ThrowType(env, "send: sockaddr is not one from this socket's target()");
    return nullptr;
  }
  uint32_t total = 0;
  MVNET_CALL(env, napi_get_array_length(env, argv[1], &total));
  double sent = 0, sent_bytes = 0, queue_full = 0, io_error = 0;
  if (p->closed_ || p->failed_ || p->fd_ < 0) {
    io_error = total;
  } else {
    iovec iov[kUdpBatch];
    uint32_t i = 0;
    bool blocked = false;
    while (i < total && !blocked) {
      // Gather up to kUdpBatch well-formed datagrams.
      uint32_t m = 0;
      while (i < total && m < kUdpBatch) {
        napi_value el;
        void* d = nullptr;
        size_t len = 0;
        i++;
        if (napi_get_element(env, argv[1], i - 1, &el) != napi_ok || !GetBytes(env, el, &d, &len) || len > kUdpMaxDatagram) {
          bool pending = false;
          napi_is_exception_pending(env, &pending);
          if (pending) {
            napi_value exc;
            napi_get_and_clear_last_exception(env, &exc);
          }
          io_error++;
          continue;
        }
        iov[m].iov_base = d;
        iov[m].iov_len = len;
        m++;
      }
      // Reading an element may run JS (a getter, a Proxy) that closed the socket meanwhile.
      if (p->closed_ || p->failed_ || p->fd_ < 0) {
        io_error += m;
        continue;
      }
      p->SendGathered(iov, m, &ss, static_cast<socklen_t>(sa_len), &sent, &sent_bytes, &queue_full, &io_error, &blocked);
    }
    if (blocked) queue_full += total - i;  // the rest of the batch, never gathered
  }
  if (p->tx_info_ == nullptr || p->Detached(&p->tx_ab_, 1)) return nullptr;  // txInfo detached: nowhere to report
  p->tx_info_[0] = sent;
  p->tx_info_[1] = sent_bytes;
  p->tx_info_[2] = queue_full;
  p->tx_info_[3] = io_error;
  return nullptr;
}

// Sends iov[0..m) (one datagram each) to `to`: runs of equal-sized datagrams (the last of a run
// may be shorter) go as one UDP GSO message (UDP_SEGMENT: the kernel makes the datagrams, one
// pass through the stack), the rest one mmsghdr each, all in sendmmsg calls. Would block: the
// unsent rest is queue_full and *blocked set. Another error drops the datagram (or GSO run) it
// concerns, unless it says GSO cannot be used: then the run is resent one datagram at a time.
void UdpSocket::SendGathered(iovec* iov, uint32_t m, sockaddr_storage* to, socklen_t to_len, double* sent,
                             double* sent_bytes, double* queue_full, double* io_error, bool* blocked) {
  mmsghdr gm[kUdpBatch];
  uint32_t first[kUdpBatch], count[kUdpBatch];
  size_t bytes[kUdpBatch];
  uint16_t seg[kUdpBatch];
  alignas(cmsghdr) char ctrl[kUdpBatch][CMSG_SPACE(sizeof(uint16_t))];
  uint32_t ng = 0;
  for (uint32_t j = 0; j < m && ng < kUdpBatch;) {
    size_t len = iov[j].iov_len;
    uint32_t cnt = 1;
    size_t total = len;
    if (!gso_off_ && len > 0 && len < gso_fail_size_ && len <= 0xffff) {
      while (j + cnt < m && cnt < kGsoMaxSegments) {
        size_t lk = iov[j + cnt].iov_len;
        if (lk == 0 || lk > len || total + lk > kGsoMaxBytes) break;
        cnt++;
        total += lk;
        if (lk < len) break;
      }
    }
    mmsghdr& h = gm[ng];
    std::memset(&h, 0, sizeof(h));
    h.msg_hdr.msg_name = to;
    h.msg_hdr.msg_namelen = to_len;
    h.msg_hdr.msg_iov = &iov[j];
    h.msg_hdr.msg_iovlen = cnt;
    if (cnt > 1) {
      std::memset(ctrl[ng], 0, sizeof(ctrl[ng]));
      h.msg_hdr.msg_control = ctrl[ng];
      h.msg_hdr.msg_controllen = sizeof(ctrl[ng]);
      cmsghdr* c = CMSG_FIRSTHDR(&h.msg_hdr);
      c->cmsg_level = SOL_UDP;
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      uint16_t gso = static_cast<uint16_t>(len);
      std::memcpy(CMSG_DATA(c), &gso, sizeof(gso));
    }
    first[ng] = j;
    count[ng] = cnt;
    bytes[ng] = total;
    seg[ng] = static_cast<uint16_t>(len <= 0xffff ? len : 0);
    ng++;
    j += cnt;
  }
  auto rest = [&](uint32_t from_group) {
    double n = 0;
    for (uint32_t g = from_group; g < ng; g++) n += count[g];
    return n;
  };
  uint32_t done = 0;
  while (done < ng) {
    int r = sendmmsg(fd_, gm + done, ng - done, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r > 0) {
      uint32_t k = static_cast<uint32_t>(r) <= ng - done ? static_cast<uint32_t>(r) : ng - done;
      for (uint32_t g = done; g < done + k; g++) {
        *sent += count[g];
        *sent_bytes += static_cast<double>(bytes[g]);
        if (count[g] > 1) tx_gso_++;
      }
      done += k;
      continue;
    }
    int err = r == 0 ? EIO : errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS) {
      *blocked = true;
      *queue_full += rest(done);
      return;
    }
    if (count[done] == 1) {
      (*io_error)++;  // this datagram (EMSGSIZE, unreachable…): skip it, try the rest
      done++;
      continue;
    }
    // A GSO run refused. EIO (no checksum offload on the way, xfrm), ENOPROTOOPT/EOPNOTSUPP (no
    // UDP GSO): never again. EINVAL/EMSGSIZE (segments larger than the path MTU): not at this
    // size again. Anything else concerns the destination: drop the run.
    if (err == EIO || err == ENOPROTOOPT || err == EOPNOTSUPP) {
      gso_off_ = true;
    } else if (err == EINVAL || err == EMSGSIZE) {
      if (seg[done] < gso_fail_size_) gso_fail_size_ = seg[done];
    } else {
      *io_error += count[done];
      done++;
      continue;
    }
    for (uint32_t k = 0; k < count[done]; k++) {
      mmsghdr one;
      std::memset(&one, 0, sizeof(one));
      one.msg_hdr.msg_name = to;
      one.msg_hdr.msg_namelen = to_len;
      one.msg_hdr.msg_iov = &iov[first[done] + k];
      one.msg_hdr.msg_iovlen = 1;
      int r1;
      do {
        r1 = sendmmsg(fd_, &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
      } while (r1 < 0 && errno == EINTR);
      if (r1 == 1) {
        (*sent)++;
        *sent_bytes += static_cast<double>(iov[first[done] + k].iov_len);
        continue;
      }
      int e1 = r1 < 0 ? errno : EIO;
      if (e1 == EAGAIN || e1 == EWOULDBLOCK || e1 == ENOBUFS) {
        *blocked = true;
        *queue_full += (count[done] - k) + rest(done + 1);
        return;
      }
      (*io_error)++;
    }
    done++;
  }
}

napi_value UdpSocket::JsStats(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  UdpSocket* p = Unwrap(env, info, &argc, nullptr);
  if (!p) return nullptr;
  napi_value o;
  MVNET_CALL(env, napi_create_object(env, &o));
  if (!SetNumber(env, o, "rxErrors", p->rx_errors_) || !SetNumber(env, o, "rxTruncated", p->rx_truncated_) ||
      !SetNumber(env, o, "callbackErrors", p->cb_errors_) || !SetNumber(env, o, "txGso", p->tx_gso_) ||
      !SetBool(env, o, "gso", !p->gso_off_)) {
    return nullptr;
  }
  if (p->last_rx_error_ != 0 && !SetString(env, o, "lastRxError", ErrnoName(p->last_rx_error_))) return nullptr;
  return o;
}

napi_value UdpSocket::JsClose(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  UdpSocket* p = Unwrap(env, info, &argc, nullptr);
  if (!p) return nullptr;
  p->Close();
  return nullptr;
}

}  // namespace

// Adds the UdpSocket class to `exports`. Returns nullptr with a pending exception.
napi_value DefineUdpExports(napi_env env, napi_value exports) {
  napi_property_descriptor methods[] = {
      {"start", nullptr, UdpSocket::JsStart, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"target", nullptr, UdpSocket::JsTarget, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"send", nullptr, UdpSocket::JsSend, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"stats", nullptr, UdpSocket::JsStats, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"close", nullptr, UdpSocket::JsClose, nullptr, nullptr, nullptr, napi_default_method, nullptr},
  };
  napi_value cls;
  MVNET_CALL(env, napi_define_class(env, "UdpSocket", NAPI_AUTO_LENGTH, UdpSocket::New, nullptr,
                                    sizeof(methods) / sizeof(methods[0]), methods, &cls));
  MVNET_CALL(env, napi_set_named_property(env, exports, "UdpSocket", cls));
  return exports;
}

}  // namespace mvnet
