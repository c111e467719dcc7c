// Passing a caller's descriptor to the daemon with SCM_RIGHTS (as QEMU's `getfd` and libvirt do),
// so `vm attach --fd N` can only ever use a descriptor the caller owned and sent, never one of the
// daemon's own.
//
// The daemon binds a unix datagram socket next to its control socket (same owner and mode). A
// caller sends one datagram: a 32-hex-digit token as the payload and exactly one descriptor as
// SCM_RIGHTS; it then names the token in `vm.attach`. sendmsg() on a unix datagram socket has
// queued the message on the daemon's socket when it returns, so the daemon can drain the queue
// when the request arrives and never races the poll.
//
// sendFd(path, token, fd)                      caller side; never blocks (EAGAIN when full)
// new FdInbox({ path, onReadable })            binds `path` (a dead socket there is replaced), polls it
//   inbox.receive(max) -> [{ token, fd, kind } | { token, fd: -1, refused }]
//   inbox.close()
// Every descriptor that is not handed to JS (bad payload, several descriptors, wrong type) is
// closed here; the ones handed over are JS's to close.
#include <fcntl.h>
#include <node_api.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "napi_util.h"

namespace mvnet {
namespace {

constexpr size_t kTokenLen = 32;
// Room for a few descriptors so a message carrying several is seen (and all of them closed)
// rather than truncated; beyond this the kernel discards the surplus itself (MSG_CTRUNC).
constexpr size_t kMaxFdsPerMsg = 8;

bool ValidToken(const char* p, size_t n) {
  if (n != kTokenLen) return false;
  for (size_t i = 0; i < n; i++) {
    char c = p[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool FillSockaddr(const std::string& path, sockaddr_un* sun, socklen_t* len) {
  if (path.empty() || path.size() >= sizeof(sun->sun_path) || path.find('\0') != std::string::npos) return false;
  std::memset(sun, 0, sizeof(*sun));
  sun->sun_family = AF_UNIX;
  std::memcpy(sun->sun_path, path.data(), path.size());
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  return true;
}

int GetIntOpt(int fd, int opt, int* out) {
  socklen_t len = sizeof(int);
  return getsockopt(fd, SOL_SOCKET, opt, out, &len);
}

// "" when `fd` is a connected unix stream socket or a FIFO (*kind says which); otherwise what it
// is, for the refusal message.
std::string Classify(int fd, std::string* kind) {
  struct stat st;
  if (fstat(fd, &st) != 0) return std::string("unreadable (fstat: ") + std::strerror(errno) + ")";
  if (S_ISFIFO(st.st_mode)) {
    *kind = "fifo";
    return "";
  }
  if (S_ISREG(st.st_mode)) return "a regular file";
  if (S_ISDIR(st.st_mode)) return "a directory";
  if (S_ISCHR(st.st_mode)) return "a character device (a TAP or TUN descriptor is one)";
  if (S_ISBLK(st.st_mode)) return "a block device";
  if (!S_ISSOCK(st.st_mode)) return "not a socket or FIFO (an eventfd, epoll or other special descriptor)";
  int domain = -1, type = -1, listening = 0;
  if (GetIntOpt(fd, SO_DOMAIN, &domain) != 0 || GetIntOpt(fd, SO_TYPE, &type) != 0) return "a socket of unknown type";
  if (domain != AF_UNIX) {
    if ((domain == AF_INET || domain == AF_INET6) && type == SOCK_DGRAM) return "a UDP socket";
    if ((domain == AF_INET || domain == AF_INET6) && type == SOCK_STREAM) return "a TCP socket";
    return "a socket of address family " + std::to_string(domain);
  }
  if (type == SOCK_DGRAM) return "a unix datagram socket";
  if (type == SOCK_SEQPACKET) return "a unix seqpacket socket";
  if (type != SOCK_STREAM) return "a unix socket of type " + std::to_string(type);
  if (GetIntOpt(fd, SO_ACCEPTCONN, &listening) == 0 && listening != 0) return "a listening unix socket";
  sockaddr_un peer;
  socklen_t plen = sizeof(peer);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen) != 0) return "an unconnected unix socket";
  *kind = "unix-stream";
  return "";
}

// sendFd(path: string, token: string, fd: number)
napi_value SendFd(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  MVNET_CALL(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  std::string path, token;
  napi_valuetype t = napi_undefined;
  if (argc < 3 || !GetStringArg(env, argv[0], "path", &path) || !GetStringArg(env, argv[1], "token", &token)) {
    if (!IsExceptionPending(env)) ThrowType(env, "sendFd(path: string, token: string, fd: number)");
    return nullptr;
  }
  MVNET_CALL(env, napi_typeof(env, argv[2], &t));
  int32_t fd = -1;
  if (t != napi_number) {
    ThrowType(env, "sendFd: fd must be a number");
    return nullptr;
  }
  MVNET_CALL(env, napi_get_value_int32(env, argv[2], &fd));
  if (!ValidToken(token.data(), token.size())) {
    ThrowType(env, "sendFd: token must be 32 lowercase hex digits");
    return nullptr;
  }
  sockaddr_un sun;
  socklen_t sun_len;
  if (!FillSockaddr(path, &sun, &sun_len)) {
    ThrowType(env, "socket path must be 1-107 bytes: '" + path + "'");
    return nullptr;
  }
  int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    ThrowErrno(env, errno, "socket(AF_UNIX)", "");
    return nullptr;
  }
  iovec iov{const_cast<char*>(token.data()), token.size()};
  union {
    cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int))];
  } ctl;
  std::memset(&ctl, 0, sizeof(ctl));
  msghdr msg;
  std::memset(&msg, 0, sizeof(msg));
  msg.msg_name = &sun;
  msg.msg_namelen = sun_len;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctl.buf;
  msg.msg_controllen = sizeof(ctl.buf);
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  ssize_t r;
  do {
    r = sendmsg(s, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (r < 0 && errno == EINTR);
  int err = r < 0 ? errno : 0;
  close(s);
  if (err != 0) {
    ThrowErrno(env, err, "sendmsg", path);
    return nullptr;
  }
  return nullptr;
}

class FdInbox {
 public:
  static napi_value New(napi_env env, napi_callback_info info);
  static napi_value JsReceive(napi_env env, napi_callback_info info);
  static napi_value JsClose(napi_env env, napi_callback_info info);
  static void Finalize(napi_env env, void* data, void* hint);

 private:
  static FdInbox* Unwrap(napi_env env, napi_callback_info info, size_t* argc, napi_value* argv);
  static void OnPoll(uv_poll_t* handle, int status, int events);
  static void OnHandleClosed(uv_handle_t* handle);
  void Close();

  napi_env env_ = nullptr;
  napi_ref wrapper_ = nullptr;  // strong while open: a listening inbox is not collected
  int fd_ = -1;
  uv_poll_t poll_;
  bool closed_ = false;
  bool finalized_ = false;
  bool handle_open_ = false;
};

napi_value FdInbox::New(napi_env env, napi_callback_info info) {
  napi_value self, opts;
  if (!ConstructorWithOptions(env, info, "FdInbox", &self, &opts)) return nullptr;
  std::string path;
  napi_value on_readable;
  if (!GetStringProp(env, opts, "path", true, &path) || !GetFunctionProp(env, opts, "onReadable", &on_readable)) {
    return nullptr;
  }
  sockaddr_un sun;
  socklen_t sun_len;
  if (!FillSockaddr(path, &sun, &sun_len)) {
    ThrowType(env, "socket path must be 1-107 bytes: '" + path + "'");
    return nullptr;
  }
  // A socket file left by an earlier run is replaced; a live one (anything but "connection
  // refused" to a datagram connect: a bound datagram socket, a listening stream socket) is not,
  // and nothing that is not a socket is ever removed.
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      ThrowErrno(env, EEXIST, "FdInbox", "'" + path + "' exists and is not a socket");
      return nullptr;
    }
    int probe = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (probe < 0) {
      ThrowErrno(env, errno, "socket(AF_UNIX)", "");
      return nullptr;
    }
    bool live = true;
    if (connect(probe, reinterpret_cast<sockaddr*>(&sun), sun_len) != 0) live = errno != ECONNREFUSED && errno != ENOENT;
    close(probe);
    if (live) {
      ThrowErrno(env, EADDRINUSE, "FdInbox", "'" + path + "' is a live socket");
      return nullptr;
    }
    if (unlink(path.c_str()) != 0 && errno != ENOENT) {
      ThrowErrno(env, errno, "unlink", path);
      return nullptr;
    }
  }
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ThrowErrno(env, errno, "socket(AF_UNIX)", "");
    return nullptr;
  }
  // The caller set the umask, so the socket is created with its final mode.
  if (bind(fd, reinterpret_cast<sockaddr*>(&sun), sun_len) != 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, "bind", path);
    return nullptr;
  }
  napi_property_descriptor props[] = {
      {"onReadable", nullptr, nullptr, nullptr, nullptr, on_readable, napi_default, nullptr},
  };
  MVNET_CALL(env, napi_define_properties(env, self, 1, props));
  uv_loop_t* loop = nullptr;
  MVNET_CALL(env, napi_get_uv_event_loop(env, &loop));
  FdInbox* p = new FdInbox();
  p->env_ = env;
  p->fd_ = fd;
  int r = uv_poll_init(loop, &p->poll_, fd);
  if (r != 0) {
    close(fd);
    unlink(path.c_str());
    delete p;
    ThrowPlain(env, std::string("uv_poll_init: ") + uv_strerror(r));
    return nullptr;
  }
  p->handle_open_ = true;
  p->poll_.data = p;
  if (napi_wrap(env, self, p, Finalize, nullptr, &p->wrapper_) != napi_ok) {
    ThrowLastError(env, "napi_wrap");
    unlink(path.c_str());
    p->finalized_ = true;
    p->Close();
    return nullptr;
  }
  uint32_t count = 0;
  napi_reference_ref(env, p->wrapper_, &count);
  uv_poll_start(&p->poll_, UV_READABLE, OnPoll);
  return self;
}

FdInbox* FdInbox::Unwrap(napi_env env, napi_callback_info info, size_t* argc, napi_value* argv) {
  return UnwrapThis<FdInbox>(env, info, argc, argv, "not an FdInbox");
}

void FdInbox::Close() {
  if (closed_) return;
  closed_ = true;
  if (wrapper_ != nullptr && !finalized_) {
    uint32_t count = 0;
    napi_reference_unref(env_, wrapper_, &count);
  }
  if (handle_open_) uv_close(reinterpret_cast<uv_handle_t*>(&poll_), OnHandleClosed);
  // uv_close() removes the fd from epoll synchronously, so it can be closed now. Messages still
  // queued are released by the kernel, their descriptors with them.
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!handle_open_ && finalized_) delete this;
}

void FdInbox::OnHandleClosed(uv_handle_t* handle) {
  FdInbox* p = static_cast<FdInbox*>(handle->data);
  p->handle_open_ = false;
  if (p->finalized_) delete p;
}

void FdInbox::Finalize(napi_env env, void* data, void* /*hint*/) {
  FdInbox* p = static_cast<FdInbox*>(data);
  p->finalized_ = true;
  if (p->wrapper_) {
    napi_delete_reference(env, p->wrapper_);
    p->wrapper_ = nullptr;
  }
  if (!p->closed_) {
    p->Close();
  } else if (!p->handle_open_) {
    delete p;
  }
}

void FdInbox::OnPoll(uv_poll_t* handle, int status, int /*events*/) {
  FdInbox* p = static_cast<FdInbox*>(handle->data);
  if (p->closed_ || p->finalized_ || p->wrapper_ == nullptr) return;
  napi_env env = p->env_;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value self = nullptr, fn = nullptr, arg = nullptr, result;
  if (napi_get_reference_value(env, p->wrapper_, &self) == napi_ok && self != nullptr &&
      napi_get_named_property(env, self, "onReadable", &fn) == napi_ok &&
      napi_get_boolean(env, status == 0, &arg) == napi_ok) {
    if (napi_make_callback(env, nullptr, self, fn, 1, &arg, &result) != napi_ok) {
      // The callback is the daemon's; an exception there must not leave a pending JS exception.
      bool pending = false;
      napi_is_exception_pending(env, &pending);
      if (pending) {
        napi_value exc;
        napi_get_and_clear_last_exception(env, &exc);
      }
    }
  }
  napi_close_handle_scope(env, scope);
}

bool PushEntry(napi_env env, napi_value arr, uint32_t idx, const std::string& token, int fd, const std::string& kind,
               const std::string& refused) {
  napi_value o;
  MVNET_CALL_B(env, napi_create_object(env, &o));
  if (!SetString(env, o, "token", token) || !SetNumber(env, o, "fd", fd)) return false;
  if (!kind.empty() && !SetString(env, o, "kind", kind)) return false;
  if (!refused.empty() && !SetString(env, o, "refused", refused)) return false;
  MVNET_CALL_B(env, napi_set_element(env, arr, idx, o));
  return true;
}

// receive(max) -> entries. Reads at most `max` messages without blocking.
napi_value FdInbox::JsReceive(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  FdInbox* p = Unwrap(env, info, &argc, argv);
  if (!p) return nullptr;
  uint32_t max = 64;
  if (argc >= 1) {
    napi_valuetype t;
    MVNET_CALL(env, napi_typeof(env, argv[0], &t));
    if (t == napi_number) MVNET_CALL(env, napi_get_value_uint32(env, argv[0], &max));
  }
  napi_value arr;
  MVNET_CALL(env, napi_create_array(env, &arr));
  uint32_t n = 0;
  for (uint32_t i = 0; i < max && !p->closed_; i++) {
    char data[kTokenLen + 1];
    iovec iov{data, sizeof(data)};
    union {
      cmsghdr align;
      char buf[CMSG_SPACE(sizeof(int) * kMaxFdsPerMsg)];
    } ctl;
    msghdr msg;
    std::memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.buf;
    msg.msg_controllen = sizeof(ctl.buf);
    ssize_t r = recvmsg(p->fd_, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      ThrowErrno(env, errno, "recvmsg", "fd inbox");
      return nullptr;
    }
    std::vector<int> fds;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t k = 0; k < count; k++) {
        int f;
        std::memcpy(&f, CMSG_DATA(c) + k * sizeof(int), sizeof(int));
        fds.push_back(f);
      }
    }
    bool token_ok = (msg.msg_flags & MSG_TRUNC) == 0 && ValidToken(data, static_cast<size_t>(r));
    std::string token = token_ok ? std::string(data, kTokenLen) : "";
    std::string refused, kind;
    if (fds.size() != 1 || (msg.msg_flags & MSG_CTRUNC) != 0) {
      refused = fds.empty() ? "no descriptor came with the token" : "more than one descriptor came with the token";
    } else {
      refused = Classify(fds[0], &kind);
    }
    if (!token_ok || !refused.empty()) {
      for (int f : fds) ::close(f);
      // Without a readable token nobody can be told; the message is dropped.
      if (!token_ok) continue;
      if (!PushEntry(env, arr, n++, token, -1, "", refused)) return nullptr;
      continue;
    }
    if (!PushEntry(env, arr, n++, token, fds[0], kind, "")) {
      ::close(fds[0]);
      return nullptr;
    }
  }
  return arr;
}

napi_value FdInbox::JsClose(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  FdInbox* p = Unwrap(env, info, &argc, nullptr);
  if (!p) return nullptr;
  p->Close();
  return nullptr;
}

}  // namespace

// Adds sendFd and the FdInbox class to `exports`. Returns nullptr with a pending exception.
napi_value DefineFdPassExports(napi_env env, napi_value exports) {
  napi_property_descriptor methods[] = {
      {"receive", nullptr, FdInbox::JsReceive, nullptr, nullptr, nullptr, napi_default_method, nullptr},
      {"close", nullptr, FdInbox::JsClose, nullptr, nullptr, nullptr, napi_default_method, nullptr},
  };
  napi_value cls;
  MVNET_CALL(env, napi_define_class(env, "FdInbox", NAPI_AUTO_LENGTH, FdInbox::New, nullptr,
                                    sizeof(methods) / sizeof(methods[0]), methods, &cls));
  napi_property_descriptor props[] = {
      {"sendFd", nullptr, SendFd, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"FdInbox", nullptr, nullptr, nullptr, nullptr, cls, napi_enumerable, nullptr},
  };
  MVNET_CALL(env, napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props));
  return exports;
}

}  // namespace mvnet
