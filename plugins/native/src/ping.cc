// Unprivileged ICMP echo sockets: socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP) and
// socket(AF_INET6, SOCK_DGRAM, IPPROTO_ICMPV6), which the kernel allows when the process's group
// is inside net.ipv4.ping_group_range (of the socket's network namespace; the one range governs
// both families). The kernel sends echo requests with the identifier set to the socket's
// "port" (its ident, allocated at bind) and computes the checksum; it delivers only echo replies
// carrying that ident, as ICMP header + data (no IP header), with the sender's address.
//
// openPing({ v6 }) -> { fd, ident } creates and binds such a socket; PingSocket moves messages
// through it in the pattern of Device (device.cc): uv_poll, recvmmsg in batches into one reused
// buffer plus a per-slot source address buffer, one JS callback per batch, exceptions from the
// callback contained and counted. Sending never queues: an echo that would block is dropped
// (ping is lossy) and the errno is returned.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <node_api.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "napi_util.h"

namespace mvnet {
namespace {

constexpr uint32_t kPingMaxBatch = 256;
constexpr uint32_t kPingMaxSlot = 65536;
constexpr uint32_t kIcmpHeaderLen = 8;
constexpr uint32_t kMaxIcmpMessage = 65535;
constexpr uint32_t kAddrLen = 16;  // per-slot source address: IPv4 in the first 4 bytes, else IPv6
constexpr int kPingReadRounds = 4;
constexpr int kPingMaxPollErrors = 16;
constexpr int kPingReadTries = 8;

// Errors that end the socket; anything else reported by a read (an ICMP error queued on the
// socket, memory pressure) concerns one message and is counted.
bool IsFatalPingError(int err) {
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

napi_value OpenPing(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  MVNET_CALL(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  napi_valuetype t = napi_undefined;
  if (argc >= 1) MVNET_CALL(env, napi_typeof(env, argv[0], &t));
  if (t != napi_object) {
    ThrowType(env, "openPing(options): options must be an object");
    return nullptr;
  }
  bool v6 = false;
  if (!GetBoolProp(env, argv[0], "v6", &v6)) return nullptr;
  const char* what = v6 ? "socket(AF_INET6, SOCK_DGRAM, IPPROTO_ICMPV6)" : "socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)";
  int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                  v6 ? static_cast<int>(IPPROTO_ICMPV6) : static_cast<int>(IPPROTO_ICMP));
  if (fd < 0) {
    int err = errno;
    ThrowErrno(env, err, what,
               err == EACCES || err == EPERM
                   ? "(the process's group is outside net.ipv4.ping_group_range of its network namespace)"
                   : "");
    return nullptr;
  }
  // Binding to the wildcard address with port 0 allocates the ident now, so it is known before
  // the first echo (otherwise the kernel picks one at the first send).
  sockaddr_storage ss;
  std::memset(&ss, 0, sizeof(ss));
  socklen_t len;
  if (v6) {
    auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
    s6->sin6_family = AF_INET6;
    s6->sin6_addr = in6addr_any;
    len = sizeof(sockaddr_in6);
  } else {
    auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
    s4->sin_family = AF_INET;
    s4->sin_addr.s_addr = htonl(INADDR_ANY);
    len = sizeof(sockaddr_in);
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, "bind", v6 ? "(ICMPv6 echo socket)" : "(ICMP echo socket)");
    return nullptr;
  }
  std::memset(&ss, 0, sizeof(ss));
  len = sizeof(ss);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, "getsockname", "(ICMP echo socket)");
    return nullptr;
  }
  uint16_t ident = v6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                      : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  napi_value obj;
  if (napi_create_object(env, &obj) != napi_ok || !SetNumber(env, obj, "fd", fd) ||
      !SetNumber(env, obj, "ident", ident)) {
    close(fd);
    ThrowLastError(env, "openPing result");
    return nullptr;
  }
  return obj;
}

class PingSocket {
 public:
  static napi_value New(napi_env env, napi_callback_info info);
  static napi_value JsStart(napi_env env, napi_callback_info info);
  static napi_value JsStop(napi_env env, napi_callback_info info);
  static napi_value JsSend(napi_env env, napi_callback_info info);
  static napi_value JsStats(napi_env env, napi_callback_info info);
  static napi_value JsClose(napi_env env, napi_callback_info info);
  static void Finalize(napi_env env, void* data, void* hint);

 private:
  PingSocket() = default;

  static PingSocket* Unwrap(napi_env env, napi_callback_info info, size_t* argc, napi_value* argv);
  static void OnPoll(uv_poll_t* handle, int status, int events);
  static void OnHandleClosed(uv_handle_t* handle);

  uint32_t ReadBatch();
  void UpdateIo();
  void SetActive(bool active);
  void Fail(int err, const char* what);
  void CallJs(const char* prop, napi_value arg);
  void Close();

  napi_env env_ = nullptr;
  napi_ref wrapper_ = nullptr;  // weak; strong while polling so a live socket isn't collected
  bool active_ref_ = false;

  int fd_ = -1;
  bool v6_ = false;
  uint32_t slot_ = 0;
  uint32_t batch_ = 0;
  uint8_t* buf_ = nullptr;
  uint32_t* lens_ = nullptr;
  uint8_t* addrs_ = nullptr;

  uv_poll_t poll_;
  bool polling_ = false;
  int pending_closes_ = 0;
  int poll_errors_ = 0;

  bool reading_ = false;
  bool closed_ = false;
  bool failed_ = false;
  bool finalized_ = false;

  std::vector<mmsghdr> rmsgs_;
  std::vector<iovec> riov_;
  std::vector<sockaddr_in6> raddrs_;  // large enough for sockaddr_in too

  double rx_msgs_ = 0, rx_bytes_ = 0, tx_msgs_ = 0, tx_bytes_ = 0;
  double tx_errors_ = 0, tx_would_block_ = 0, rx_errors_ = 0, cb_errors_ = 0;
  int last_rx_error_ = 0, last_tx_error_ = 0;
};

napi_value PingSocket::New(napi_env env, napi_callback_info info) {
  napi_value self, opts;
  if (!ConstructorWithOptions(env, info, "PingSocket", &self, &opts)) return nullptr;
  int32_t fd = -1;
  uint32_t slot = 0, batch = 0;
  napi_value on_read, on_error;
  if (!GetInt32Prop(env, opts, "fd", true, &fd) || !GetUint32Prop(env, opts, "maxMessage", true, &slot) ||
      !GetUint32Prop(env, opts, "batch", true, &batch) || !GetFunctionProp(env, opts, "onRead", &on_read) ||
      !GetFunctionProp(env, opts, "onError", &on_error)) {
    return nullptr;
  }
  if (slot < kIcmpHeaderLen || slot > kPingMaxSlot) {
    ThrowType(env, "option 'maxMessage' must be " + std::to_string(kIcmpHeaderLen) + ".." + std::to_string(kPingMaxSlot));
    return nullptr;
  }
  if (batch < 1 || batch > kPingMaxBatch) {
    ThrowType(env, "option 'batch' must be 1.." + std::to_string(kPingMaxBatch));
    return nullptr;
  }
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    ThrowErrno(env, fd < 0 ? EBADF : errno, "new PingSocket", "fd " + std::to_string(fd));
    return nullptr;
  }
  int domain = 0, proto = 0, type = 0;
  socklen_t ilen = sizeof(int);
  bool ok = S_ISSOCK(st.st_mode) && getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &ilen) == 0;
  ilen = sizeof(int);
  ok = ok && getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &ilen) == 0;
  ilen = sizeof(int);
  ok = ok && getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &ilen) == 0;
  if (!ok || type != SOCK_DGRAM ||
      !((domain == AF_INET && proto == IPPROTO_ICMP) || (domain == AF_INET6 && proto == IPPROTO_ICMPV6))) {
    ThrowType(env, "new PingSocket: fd " + std::to_string(fd) + " is not an ICMP datagram socket (see openPing)");
    return nullptr;
  }

  void* data = nullptr;
  void* addr_data = nullptr;
  void* lens_data = nullptr;
  napi_value buffer, addrs, lengths_ab, lengths, v6_value;
  MVNET_CALL(env, napi_create_buffer(env, static_cast<size_t>(slot) * batch, &data, &buffer));
  MVNET_CALL(env, napi_create_buffer(env, static_cast<size_t>(kAddrLen) * batch, &addr_data, &addrs));
  MVNET_CALL(env, napi_create_arraybuffer(env, batch * sizeof(uint32_t), &lens_data, &lengths_ab));
  MVNET_CALL(env, napi_create_typedarray(env, napi_uint32_array, batch, lengths_ab, 0, &lengths));
  MVNET_CALL(env, napi_get_boolean(env, domain == AF_INET6, &v6_value));
  std::memset(lens_data, 0, batch * sizeof(uint32_t));
  std::memset(addr_data, 0, static_cast<size_t>(kAddrLen) * batch);

  napi_property_descriptor props[] = {
      {"buffer", nullptr, nullptr, nullptr, nullptr, buffer, napi_enumerable, nullptr},
      {"lengths", nullptr, nullptr, nullptr, nullptr, lengths, napi_enumerable, nullptr},
      {"addrs", nullptr, nullptr, nullptr, nullptr, addrs, napi_enumerable, nullptr},
      {"v6", nullptr, nullptr, nullptr, nullptr, v6_value, napi_enumerable, nullptr},
      {"onRead", nullptr, nullptr, nullptr, nullptr, on_read, napi_default, nullptr},
      {"onError", nullptr, nullptr, nullptr, nullptr, on_error, napi_default, nullptr},
  };
  MVNET_CALL(env, napi_define_properties(env, self, sizeof(props) / sizeof(props[0]), props));

  uv_loop_t* loop = nullptr;
  MVNET_CALL(env, napi_get_uv_event_loop(env, &loop));

  PingSocket* p = new PingSocket();
  p->env_ = env;
  p->fd_ = fd;
  p->v6_ = domain == AF_INET6;
  p->slot_ = slot;
  p->batch_ = batch;
  p->buf_ = static_cast<uint8_t*>(data);
  p->lens_ = static_cast<uint32_t*>(lens_data);
  p->addrs_ = static_cast<uint8_t*>(addr_data);
  p->rmsgs_.resize(batch);
  p->riov_.resize(batch);
  p->raddrs_.resize(batch);
  for (uint32_t k = 0; k < batch; k++) {
    p->riov_[k].iov_base = p->buf_ + static_cast<size_t>(k) * slot;
    p->riov_[k].iov_len = slot;
    msghdr& h = p->rmsgs_[k].msg_hdr;
    std::memset(&h, 0, sizeof(h));
    h.msg_iov = &p->riov_[k];
    h.msg_iovlen = 1;
    h.msg_name = &p->raddrs_[k];
  }

  int r = uv_poll_init(loop, &p->poll_, fd);
  if (r != 0) {
    delete p;
    ThrowPlain(env, std::string("uv_poll_init: ") + uv_strerror(r));
    return nullptr;
  }
  p->poll_.data = p;

  if (napi_wrap(env, self, p, Finalize, nullptr, &p->wrapper_) != napi_ok) {
    ThrowLastError(env, "napi_wrap");
    p->finalized_ = true;
    p->fd_ = -1;  // not ours: the constructor failed
    p->Close();
    return nullptr;
  }
  return self;
}

PingSocket* PingSocket::Unwrap(napi_env env, napi_callback_info info, size_t* argc, napi_value* argv) {
  return UnwrapThis<PingSocket>(env, info, argc, argv, "not a PingSocket");
}

void PingSocket::Finalize(napi_env env, void* data, void* /*hint*/) {
  PingSocket* p = static_cast<PingSocket*>(data);
  p->finalized_ = true;
  if (p->wrapper_) {
    napi_delete_reference(env, p->wrapper_);
    p->wrapper_ = nullptr;
  }
  p->active_ref_ = false;
  if (!p->closed_) {
    p->Close();  // deleted in OnHandleClosed
  } else if (p->pending_closes_ == 0) {
    delete p;
  }
}

void PingSocket::Close() {
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
}

void PingSocket::OnHandleClosed(uv_handle_t* handle) {
  PingSocket* p = static_cast<PingSocket*>(handle->data);
  if (--p->pending_closes_ == 0 && p->finalized_) delete p;
}

void PingSocket::SetActive(bool active) {
  if (active == active_ref_ || wrapper_ == nullptr || finalized_) return;
  uint32_t count = 0;
  if (active) {
    napi_reference_ref(env_, wrapper_, &count);
  } else {
    napi_reference_unref(env_, wrapper_, &count);
  }
  active_ref_ = active;
}

void PingSocket::UpdateIo() {
  if (closed_) return;
  bool want = reading_ && !failed_;
  if (want != polling_) {
    if (want) {
      uv_poll_start(&poll_, UV_READABLE, OnPoll);
    } else {
      uv_poll_stop(&poll_);
    }
    polling_ = want;
  }
  SetActive(want);
}

void PingSocket::OnPoll(uv_poll_t* handle, int status, int /*events*/) {
  PingSocket* p = static_cast<PingSocket*>(handle->data);
  if (p->closed_) return;
  if (status < 0) {
    // libuv stopped the watcher on POLLERR: fetch (and so clear) the socket's pending error. An
    // ICMP error about one echo is counted; a socket that keeps failing is given up.
    p->polling_ = false;
    int err = 0;
    socklen_t len = sizeof(err);
    bool cleared = getsockopt(p->fd_, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0;
    if (cleared) {
      if (IsFatalPingError(err)) {
        p->Fail(err, "socket");
        return;
      }
      p->rx_errors_++;
      p->last_rx_error_ = err;
      p->poll_errors_ = 0;
    } else if (++p->poll_errors_ > kPingMaxPollErrors) {
      p->Fail(EIO, "poll");
      return;
    }
    if (p->reading_) p->ReadBatch();
    if (!p->closed_ && !p->failed_) p->UpdateIo();
    return;
  }
  p->poll_errors_ = 0;
  for (int round = 0; round < kPingReadRounds && p->reading_ && !p->closed_; round++) {
    if (p->ReadBatch() < p->batch_) break;
  }
}

uint32_t PingSocket::ReadBatch() {
  uint32_t n = 0;
  int fatal = 0;
  for (int tries = 0; tries < kPingReadTries; tries++) {
    for (uint32_t k = 0; k < batch_; k++) {
      rmsgs_[k].msg_hdr.msg_namelen = sizeof(sockaddr_in6);
      rmsgs_[k].msg_hdr.msg_flags = 0;
    }
    int r = recvmmsg(fd_, rmsgs_.data(), batch_, MSG_DONTWAIT | MSG_TRUNC, nullptr);
    if (r >= 0) {
      n = static_cast<uint32_t>(r);
      break;
    }
    int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) break;
    if (IsFatalPingError(err)) {
      fatal = err;
      break;
    }
    rx_errors_++;  // a queued ICMP error (reading it cleared it) or a passing shortage
    last_rx_error_ = err;
  }
  for (uint32_t k = 0; k < n; k++) {
    uint32_t len = rmsgs_[k].msg_len;
    if ((rmsgs_[k].msg_hdr.msg_flags & MSG_TRUNC) && len <= slot_) len = slot_ + 1;
    lens_[k] = len;
    rx_bytes_ += len;
    uint8_t* a = addrs_ + static_cast<size_t>(k) * kAddrLen;
    std::memset(a, 0, kAddrLen);
    const sockaddr_in6& sa = raddrs_[k];
    socklen_t alen = rmsgs_[k].msg_hdr.msg_namelen;
    if (v6_) {
      if (sa.sin6_family == AF_INET6 && alen >= sizeof(sockaddr_in6)) std::memcpy(a, &sa.sin6_addr, 16);
    } else {
      const sockaddr_in& s4 = reinterpret_cast<const sockaddr_in&>(sa);
      if (s4.sin_family == AF_INET && alen >= sizeof(sockaddr_in)) std::memcpy(a, &s4.sin_addr, 4);
    }
  }
  rx_msgs_ += n;
  if (n > 0) {
    napi_handle_scope scope;
    if (napi_open_handle_scope(env_, &scope) == napi_ok) {
      napi_value count = nullptr;
      if (napi_create_uint32(env_, n, &count) == napi_ok) CallJs("onRead", count);
      napi_close_handle_scope(env_, scope);
    }
  }
  if (fatal != 0 && !closed_) Fail(fatal, "recvmmsg");
  return n;
}

void PingSocket::CallJs(const char* prop, napi_value arg) {
  if (wrapper_ == nullptr || finalized_) return;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env_, &scope) != napi_ok) return;
  napi_value self = nullptr, fn = nullptr;
  if (napi_get_reference_value(env_, wrapper_, &self) == napi_ok && self != nullptr &&
      napi_get_named_property(env_, self, prop, &fn) == napi_ok) {
    napi_value result;
    if (napi_make_callback(env_, nullptr, self, fn, 1, &arg, &result) != napi_ok) {
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

void PingSocket::Fail(int err, const char* what) {
  if (failed_ || closed_) return;
  failed_ = true;
  reading_ = false;
  UpdateIo();
  std::string msg = std::string(what) + ": " + std::strerror(err) + " (" + ErrnoName(err) + ")";
  napi_handle_scope scope;
  if (napi_open_handle_scope(env_, &scope) != napi_ok) return;
  napi_value v = nullptr;
  if (napi_create_string_utf8(env_, msg.data(), msg.size(), &v) == napi_ok) CallJs("onError", v);
  napi_close_handle_scope(env_, scope);
}

napi_value PingSocket::JsStart(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  PingSocket* p = Unwrap(env, info, &argc, nullptr);
  if (!p) return nullptr;
  if (p->closed_ || p->failed_) return nullptr;
  p->reading_ = true;
  p->UpdateIo();
  return nullptr;
}

napi_value PingSocket::JsStop(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  PingSocket* p = Unwrap(env, info, &argc, nullptr);
  if (!p) return nullptr;
  p->reading_ = false;
  p->UpdateIo();
  return nullptr;
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

// send(dst, icmp) -> 0 when the kernel took the echo, else the errno (EAGAIN: would block,
// dropped; EHOSTUNREACH, ENETUNREACH, EACCES for a broadcast…; EBADF once closed).
napi_value PingSocket::JsSend(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  PingSocket* p = Unwrap(env, info, &argc, argv);
  if (!p) return nullptr;
  void* dst = nullptr;
  void* msg = nullptr;
  size_t dst_len = 0, msg_len = 0;
  size_t want = p->v6_ ? 16 : 4;
  if (argc < 2 || !GetBytes(env, argv[0], &dst, &dst_len) || dst_len != want || !GetBytes(env, argv[1], &msg, &msg_len)) {
    ThrowType(env, std::string("send(dst: Buffer, icmp: Buffer): dst must be ") + (p->v6_ ? "16" : "4") +
                       " bytes and icmp a Buffer");
    return nullptr;
  }
  if (msg_len < kIcmpHeaderLen || msg_len > kMaxIcmpMessage) {
    ThrowType(env, "send(dst, icmp): icmp must be 8..65535 bytes (an echo request header and its data)");
    return nullptr;
  }
  int err = 0;
  if (p->closed_ || p->failed_) {
    err = EBADF;
  } else {
    sockaddr_in6 s6;
    sockaddr_in s4;
    sockaddr* sa;
    socklen_t sa_len;
    if (p->v6_) {
      std::memset(&s6, 0, sizeof(s6));
      s6.sin6_family = AF_INET6;
      std::memcpy(&s6.sin6_addr, dst, 16);
      sa = reinterpret_cast<sockaddr*>(&s6);
      sa_len = sizeof(s6);
    } else {
      std::memset(&s4, 0, sizeof(s4));
      s4.sin_family = AF_INET;
      std::memcpy(&s4.sin_addr, dst, 4);
      sa = reinterpret_cast<sockaddr*>(&s4);
      sa_len = sizeof(s4);
    }
    for (;;) {
      ssize_t r = sendto(p->fd_, msg, msg_len, MSG_DONTWAIT | MSG_NOSIGNAL, sa, sa_len);
      if (r >= 0) break;
      err = errno;
      if (err != EINTR) break;
      err = 0;
    }
  }
  if (err == 0) {
    p->tx_msgs_++;
    p->tx_bytes_ += static_cast<double>(msg_len);
  } else if (err == EAGAIN || err == EWOULDBLOCK) {
    err = EAGAIN;
    p->tx_would_block_++;
  } else {
    p->tx_errors_++;
    p->last_tx_error_ = err;
  }
  napi_value result;
  MVNET_CALL(env, napi_create_uint32(env, static_cast<uint32_t>(err), &result));
  return result;
}

napi_value PingSocket::JsStats(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  PingSocket* p = Unwrap(env, info, &argc, nullptr);
  if (!p) return nullptr;
  napi_value o;
  MVNET_CALL(env, napi_create_object(env, &o));
  if (!SetNumber(env, o, "rxMessages", p->rx_msgs_) || !SetNumber(env, o, "rxBytes", p->rx_bytes_) ||
      !SetNumber(env, o, "txMessages", p->tx_msgs_) || !SetNumber(env, o, "txBytes", p->tx_bytes_) ||
      !SetNumber(env, o, "txErrors", p->tx_errors_) || !SetNumber(env, o, "txWouldBlock", p->tx_would_block_) ||
      !SetNumber(env, o, "rxErrors", p->rx_errors_) || !SetNumber(env, o, "callbackErrors", p->cb_errors_)) {
    return nullptr;
  }
  if (p->last_rx_error_ != 0 && !SetString(env, o, "lastRxError", ErrnoName(p->last_rx_error_))) return nullptr;
  if (p->last_tx_error_ != 0 && !SetString(env, o, "lastTxError", ErrnoName(p->last_tx_error_))) return nullptr;
  return o;
}

napi_value PingSocket::JsClose(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  PingSocket* p = Unwrap(env, info, &argc, nullptr);
  if (!p) return nullptr;
  p->Close();
  return nullptr;
}

}  // namespace

// Adds openPing and the PingSocket class to `exports`. Returns nullptr with a pending exception.
napi_value DefinePingExports(napi_env env, napi_value exports) {
  napi_property_descriptor methods[] = {
      {"start", nullptr, PingSocket::JsStart, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"stop", nullptr, PingSocket::JsStop, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"send", nullptr, PingSocket::JsSend, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"stats", nullptr, PingSocket::JsStats, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"close", nullptr, PingSocket::JsClose, nullptr, nullptr, nullptr, napi_default_method, nullptr},
  };
  napi_value cls;
  MVNET_CALL(env, napi_define_class(env, "PingSocket", NAPI_AUTO_LENGTH, PingSocket::New, nullptr,
                                    sizeof(methods) / sizeof(methods[0]), methods, &cls));
  napi_property_descriptor props[] = {
      {"openPing", nullptr, OpenPing, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"PingSocket", nullptr, nullptr, nullptr, nullptr, cls, napi_enumerable, nullptr},
  };
  MVNET_CALL(env, napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props));
  return exports;
}

}  // namespace mvnet
