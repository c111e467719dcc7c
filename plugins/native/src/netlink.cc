// AddrWatch: a NETLINK_ROUTE socket subscribed to address and link changes (RTMGRP_LINK,
// RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR) of the calling thread's network namespace, so the
// daemon learns of a new host address when the kernel makes it rather than on a timer.
//
// The messages are not parsed: any of them means "re-read the addresses" (JS does that with
// os.networkInterfaces()). ENOBUFS (the kernel dropped notifications because the socket buffer
// overflowed) counts as a change too, since what was lost is unknown.
//
// dumpAddrs() -> [{ family, address, prefixLen, broadcast? }] asks the kernel for every address
// (RTM_GETADDR dump) of the calling thread's namespace, on every interface whatever its state:
// os.networkInterfaces() (libuv) leaves out interfaces that are not UP and RUNNING, yet an
// address on an UP interface without carrier is still local to the host.
//
// new AddrWatch({ onChange }) opens the socket and polls it with uv_poll (the pattern of
// device.cc and ping.cc); each readable event drains the socket and calls onChange(count) once.
// drain() does the same synchronously and returns the count without calling back (it throws
// once the watch is closed, or given up after repeated poll errors): the kernel
// queues the notification before `ip addr add` returns, so a caller that drains before each
// decision never decides on a stale set. The poll handle is unref'd: the watch never keeps the
// process alive. close() is idempotent.
#include <arpa/inet.h>
#include <linux/if_addr.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <node_api.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "napi_util.h"

namespace mvnet {
namespace {

constexpr int kNetlinkRcvBuf = 1024 * 1024;
// Poll errors in a row with nothing to read: the socket is broken, give it up (drain() then
// throws, and the caller falls back to reading the addresses at every decision).
constexpr int kMaxPollErrors = 16;

class AddrWatch {
 public:
  static napi_value New(napi_env env, napi_callback_info info);
  static napi_value JsDrain(napi_env env, napi_callback_info info);
  static napi_value JsClose(napi_env env, napi_callback_info info);
  static napi_value JsStats(napi_env env, napi_callback_info info);
  static void Finalize(napi_env env, void* data, void* hint);

 private:
  static AddrWatch* Unwrap(napi_env env, napi_callback_info info);
  static void OnPoll(uv_poll_t* handle, int status, int events);
  static void OnHandleClosed(uv_handle_t* handle);

  uint32_t Drain();
  void Close();

  napi_env env_ = nullptr;
  napi_ref wrapper_ = nullptr;  // weak: the JS owner keeps the watch alive
  int fd_ = -1;
  uv_poll_t poll_;
  bool closed_ = false;
  bool finalized_ = false;
  bool handle_open_ = false;
  int poll_errors_ = 0;
  double events_ = 0, overruns_ = 0, cb_errors_ = 0;
};

napi_value AddrWatch::New(napi_env env, napi_callback_info info) {
  napi_value self, opts;
  if (!ConstructorWithOptions(env, info, "AddrWatch", &self, &opts)) return nullptr;
  napi_value on_change;
  if (!GetFunctionProp(env, opts, "onChange", &on_change)) return nullptr;

  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) {
    ThrowErrno(env, errno, "socket(AF_NETLINK, NETLINK_ROUTE)", "");
    return nullptr;
  }
  int buf = kNetlinkRcvBuf;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof(buf)) != 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
  }
  sockaddr_nl sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.nl_family = AF_NETLINK;
  sa.nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
  if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, "bind", "(NETLINK_ROUTE address and link groups)");
    return nullptr;
  }
  napi_property_descriptor props[] = {
      {"onChange", nullptr, nullptr, nullptr, nullptr, on_change, napi_default, nullptr},
  };
  if (napi_define_properties(env, self, 1, props) != napi_ok) {
    close(fd);
    ThrowLastError(env, "napi_define_properties");
    return nullptr;
  }
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
    close(fd);
    ThrowLastError(env, "napi_get_uv_event_loop");
    return nullptr;
  }
  AddrWatch* w = new AddrWatch();
  w->env_ = env;
  w->fd_ = fd;
  int r = uv_poll_init(loop, &w->poll_, fd);
  if (r != 0) {
    close(fd);
    delete w;
    ThrowPlain(env, std::string("uv_poll_init: ") + uv_strerror(r));
    return nullptr;
  }
  w->handle_open_ = true;
  w->poll_.data = w;
  uv_unref(reinterpret_cast<uv_handle_t*>(&w->poll_));
  if (napi_wrap(env, self, w, Finalize, nullptr, &w->wrapper_) != napi_ok) {
    ThrowLastError(env, "napi_wrap");
    w->finalized_ = true;
    w->Close();
    return nullptr;
  }
  uv_poll_start(&w->poll_, UV_READABLE, OnPoll);
  return self;
}

AddrWatch* AddrWatch::Unwrap(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  napi_value self;
  if (napi_get_cb_info(env, info, &argc, nullptr, &self, nullptr) != napi_ok) {
    ThrowLastError(env, "napi_get_cb_info");
    return nullptr;
  }
  void* p = nullptr;
  if (napi_unwrap(env, self, &p) != napi_ok || p == nullptr) {
    ThrowType(env, "not an AddrWatch");
    return nullptr;
  }
  return static_cast<AddrWatch*>(p);
}

// Reads every queued message; returns how many (an overrun counts as one).
uint32_t AddrWatch::Drain() {
  if (closed_) return 0;
  uint32_t n = 0;
  char buf[8192];
  for (;;) {
    ssize_t r = recv(fd_, buf, sizeof(buf), MSG_DONTWAIT);
    if (r > 0) {
      n++;
      continue;
    }
    if (r == 0) break;
    if (errno == EINTR) continue;
    if (errno == ENOBUFS) {
      overruns_++;
      n++;
      continue;
    }
    break;  // EAGAIN: drained
  }
  events_ += n;
  return n;
}

void AddrWatch::OnPoll(uv_poll_t* handle, int status, int /*events*/) {
  AddrWatch* w = static_cast<AddrWatch*>(handle->data);
  if (w->closed_) return;
  // An error on the socket (ENOBUFS is reported this way too) is a change of unknown content.
  uint32_t n = w->Drain();
  if (status < 0) {
    if (n == 0 && ++w->poll_errors_ > kMaxPollErrors) {
      w->Close();
      return;
    }
    n++;
    uv_poll_start(&w->poll_, UV_READABLE, OnPoll);
  } else {
    w->poll_errors_ = 0;
  }
  if (n == 0 || w->wrapper_ == nullptr || w->finalized_) return;
  napi_env env = w->env_;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value self = nullptr, fn = nullptr, arg = nullptr;
  if (napi_get_reference_value(env, w->wrapper_, &self) == napi_ok && self != nullptr &&
      napi_get_named_property(env, self, "onChange", &fn) == napi_ok && napi_create_uint32(env, n, &arg) == napi_ok) {
    napi_value result;
    if (napi_make_callback(env, nullptr, self, fn, 1, &arg, &result) != napi_ok) {
      // An exception from the callback must not take the daemon down: count it and go on.
      bool pending = false;
      napi_is_exception_pending(env, &pending);
      if (pending) {
        napi_value exc;
        napi_get_and_clear_last_exception(env, &exc);
        w->cb_errors_++;
      }
    }
  }
  napi_close_handle_scope(env, scope);
}

void AddrWatch::Close() {
  if (closed_) return;
  closed_ = true;
  if (handle_open_) {
    // uv_close() removes the fd from epoll synchronously, so the fd can be closed right away.
    uv_close(reinterpret_cast<uv_handle_t*>(&poll_), OnHandleClosed);
  }
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!handle_open_ && finalized_) delete this;
}

void AddrWatch::OnHandleClosed(uv_handle_t* handle) {
  AddrWatch* w = static_cast<AddrWatch*>(handle->data);
  w->handle_open_ = false;
  if (w->finalized_) delete w;
}

void AddrWatch::Finalize(napi_env env, void* data, void* /*hint*/) {
  AddrWatch* w = static_cast<AddrWatch*>(data);
  w->finalized_ = true;
  if (w->wrapper_) {
    napi_delete_reference(env, w->wrapper_);
    w->wrapper_ = nullptr;
  }
  if (!w->closed_) {
    w->Close();  // deleted in OnHandleClosed
  } else if (!w->handle_open_) {
    delete w;
  }
}

napi_value AddrWatch::JsDrain(napi_env env, napi_callback_info info) {
  AddrWatch* w = Unwrap(env, info);
  if (!w) return nullptr;
  if (w->closed_) {
    ThrowPlain(env, "AddrWatch is closed: address changes are no longer seen");
    return nullptr;
  }
  napi_value r;
  MVNET_CALL(env, napi_create_uint32(env, w->Drain(), &r));
  return r;
}

napi_value AddrWatch::JsClose(napi_env env, napi_callback_info info) {
  AddrWatch* w = Unwrap(env, info);
  if (!w) return nullptr;
  w->Close();
  return nullptr;
}

napi_value AddrWatch::JsStats(napi_env env, napi_callback_info info) {
  AddrWatch* w = Unwrap(env, info);
  if (!w) return nullptr;
  napi_value o;
  MVNET_CALL(env, napi_create_object(env, &o));
  if (!SetNumber(env, o, "events", w->events_) || !SetNumber(env, o, "overruns", w->overruns_) ||
      !SetNumber(env, o, "callbackErrors", w->cb_errors_) || !SetBool(env, o, "closed", w->closed_)) {
    return nullptr;
  }
  return o;
}

struct AddrEntry {
  int family;
  uint8_t addr[16];
  uint8_t prefix;
  bool has_bcast;
  uint8_t bcast[4];
};

// Returns 0 or an errno; fills `out`.
int DumpAddrs(std::vector<AddrEntry>* out) {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) return errno;
  struct {
    nlmsghdr nh;
    ifaddrmsg ifa;
  } req;
  std::memset(&req, 0, sizeof(req));
  req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(ifaddrmsg));
  req.nh.nlmsg_type = RTM_GETADDR;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.nh.nlmsg_seq = 1;
  req.ifa.ifa_family = AF_UNSPEC;
  sockaddr_nl sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.nl_family = AF_NETLINK;
  if (sendto(fd, &req, req.nh.nlmsg_len, 0, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) < 0) {
    int err = errno;
    close(fd);
    return err;
  }
  std::vector<char> buf(32768);
  for (;;) {
    ssize_t n = recv(fd, buf.data(), buf.size(), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      close(fd);
      return err;
    }
    int len = static_cast<int>(n);
    for (nlmsghdr* nh = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(nh, len); nh = NLMSG_NEXT(nh, len)) {
      if (nh->nlmsg_type == NLMSG_DONE) {
        close(fd);
        return 0;
      }
      if (nh->nlmsg_type == NLMSG_ERROR) {
        const nlmsgerr* e = static_cast<const nlmsgerr*>(NLMSG_DATA(nh));
        close(fd);
        return e->error != 0 ? -e->error : EIO;
      }
      if (nh->nlmsg_type != RTM_NEWADDR) continue;
      const ifaddrmsg* ifa = static_cast<const ifaddrmsg*>(NLMSG_DATA(nh));
      if (ifa->ifa_family != AF_INET && ifa->ifa_family != AF_INET6) continue;
      size_t alen = ifa->ifa_family == AF_INET ? 4 : 16;
      AddrEntry e;
      std::memset(&e, 0, sizeof(e));
      e.family = ifa->ifa_family == AF_INET ? 4 : 6;
      e.prefix = ifa->ifa_prefixlen;
      bool has_local = false, has_addr = false;
      uint8_t local[16], address[16];
      int rlen = static_cast<int>(IFA_PAYLOAD(nh));
      for (rtattr* rta = IFA_RTA(ifa); RTA_OK(rta, rlen); rta = RTA_NEXT(rta, rlen)) {
        if (RTA_PAYLOAD(rta) < alen) continue;
        // IFA_LOCAL is this host's end; IFA_ADDRESS is the peer on a point-to-point link.
        if (rta->rta_type == IFA_LOCAL) {
          std::memcpy(local, RTA_DATA(rta), alen);
          has_local = true;
        } else if (rta->rta_type == IFA_ADDRESS) {
          std::memcpy(address, RTA_DATA(rta), alen);
          has_addr = true;
        } else if (rta->rta_type == IFA_BROADCAST && alen == 4) {
          std::memcpy(e.bcast, RTA_DATA(rta), 4);
          e.has_bcast = true;
        }
      }
      if (!has_local && !has_addr) continue;
      std::memcpy(e.addr, has_local ? local : address, alen);
      out->push_back(e);
    }
  }
}

napi_value JsDumpAddrs(napi_env env, napi_callback_info /*info*/) {
  std::vector<AddrEntry> list;
  int err = DumpAddrs(&list);
  if (err != 0) {
    ThrowErrno(env, err, "RTM_GETADDR", "(address dump)");
    return nullptr;
  }
  napi_value arr;
  MVNET_CALL(env, napi_create_array_with_length(env, list.size(), &arr));
  for (size_t i = 0; i < list.size(); i++) {
    const AddrEntry& e = list[i];
    napi_value o, buf;
    void* data = nullptr;
    size_t alen = e.family == 4 ? 4 : 16;
    MVNET_CALL(env, napi_create_object(env, &o));
    MVNET_CALL(env, napi_create_buffer_copy(env, alen, e.addr, &data, &buf));
    MVNET_CALL(env, napi_set_named_property(env, o, "address", buf));
    if (!SetNumber(env, o, "family", e.family) || !SetNumber(env, o, "prefixLen", e.prefix)) return nullptr;
    if (e.has_bcast) {
      napi_value b;
      MVNET_CALL(env, napi_create_buffer_copy(env, 4, e.bcast, &data, &b));
      MVNET_CALL(env, napi_set_named_property(env, o, "broadcast", b));
    }
    MVNET_CALL(env, napi_set_element(env, arr, static_cast<uint32_t>(i), o));
  }
  return arr;
}

}  // namespace

// Adds the AddrWatch class to `exports`. Returns nullptr with a pending exception.
napi_value DefineNetlinkExports(napi_env env, napi_value exports) {
  napi_property_descriptor methods[] = {
      {"drain", nullptr, AddrWatch::JsDrain, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"stats", nullptr, AddrWatch::JsStats, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"close", nullptr, AddrWatch::JsClose, nullptr, nullptr, nullptr, napi_default_method, nullptr},
  };
  napi_value cls;
  MVNET_CALL(env, napi_define_class(env, "AddrWatch", NAPI_AUTO_LENGTH, AddrWatch::New, nullptr,
                                    sizeof(methods) / sizeof(methods[0]), methods, &cls));
  MVNET_CALL(env, napi_set_named_property(env, exports, "AddrWatch", cls));
  napi_value dump;
  MVNET_CALL(env, napi_create_function(env, "dumpAddrs", NAPI_AUTO_LENGTH, JsDumpAddrs, nullptr, &dump));
  MVNET_CALL(env, napi_set_named_property(env, exports, "dumpAddrs", dump));
  return exports;
}

}  // namespace mvnet
