// vhostTesting: what QEMU does with guest memory, eventfds and the vhost-user socket, done from
// a test (test/support/vhost-frontend.ts) or the fuzzer. Not used by the daemon.
//
// memfdMap(size, seals) -> { fd, mem, id }   a memfd mapped MAP_SHARED; `mem` views the mapping
// memfdUnmap(id)                               drops the memfd's mapping (see below)
// ftruncate(fd, size)
// eventfd() / eventfdWrite(fd, n) / eventfdRead(fd)
// unixConnect(path) -> fd                     blocking connect, then O_NONBLOCK
// sendWithFds(fd, data, fds) -> bytes         one sendmsg with SCM_RIGHTS
// recvExact(fd, n, timeoutMs) -> Buffer       poll + read until n bytes, or throws
//
// `mem` is an external Buffer over the mapping. JS may still hold it after memfdUnmap, so
// memfdUnmap never leaves a hole behind the view: it replaces the memfd's pages with anonymous
// zero pages at the same address (MAP_FIXED), which drops the memfd's mapping at once (the
// point: a test can then ftruncate the memfd without this process touching it) and keeps any
// later access through the stale view harmless. The address range itself is released when the
// Buffer is collected.
#include <fcntl.h>
#include <node_api.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "napi_util.h"

namespace mvnet {
namespace {

// Larger than any test needs, small enough that a typo cannot exhaust memory.
constexpr double kMaxMemfd = 1024.0 * 1024 * 1024;
// The kernel's SCM_MAX_FD: a test may send more than vhost-user allows, never more than this.
constexpr size_t kMaxSendFds = 253;
constexpr double kMaxRecv = 16.0 * 1024 * 1024;

struct Mapping {
  int id;
  void* addr;
  size_t size;
  bool detached;  // memfdUnmap ran: anonymous pages now
};

std::map<int, Mapping*>& Mappings() {
  static std::map<int, Mapping*> m;
  return m;
}
int next_id = 1;

bool Args(napi_env env, napi_callback_info info, size_t want, napi_value* argv, const char* usage) {
  size_t argc = want;
  MVNET_CALL_B(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  if (argc < want) {
    ThrowType(env, usage);
    return false;
  }
  return true;
}

// An integral number in [lo, hi], else a TypeError with `usage`.
bool IntArg(napi_env env, napi_value v, double lo, double hi, const char* usage, double* out) {
  napi_valuetype t;
  MVNET_CALL_B(env, napi_typeof(env, v, &t));
  double d = 0;
  if (t == napi_number) MVNET_CALL_B(env, napi_get_value_double(env, v, &d));
  if (t != napi_number || !(d >= lo && d <= hi) || d != static_cast<double>(static_cast<int64_t>(d))) {
    ThrowType(env, usage);
    return false;
  }
  *out = d;
  return true;
}

bool FdArg(napi_env env, napi_value v, const char* usage, int* fd) {
  double d;
  if (!IntArg(env, v, 0, 2147483647.0, usage, &d)) return false;
  *fd = static_cast<int>(d);
  return true;
}

void FinalizeMapping(napi_env, void*, void* hint) {
  Mapping* m = static_cast<Mapping*>(hint);
  munmap(m->addr, m->size);
  Mappings().erase(m->id);
  delete m;
}

// memfdMap(size, seals)
napi_value MemfdMap(napi_env env, napi_callback_info info) {
  static const char* usage = "memfdMap(size: 1..2^30, seals: boolean)";
  napi_value argv[2];
  if (!Args(env, info, 2, argv, usage)) return nullptr;
  double size_d;
  if (!IntArg(env, argv[0], 1, kMaxMemfd, usage, &size_d)) return nullptr;
  napi_valuetype t;
  MVNET_CALL(env, napi_typeof(env, argv[1], &t));
  if (t != napi_boolean) {
    ThrowType(env, usage);
    return nullptr;
  }
  bool seals = false;
  MVNET_CALL(env, napi_get_value_bool(env, argv[1], &seals));
  const size_t size = static_cast<size_t>(size_d);

  int fd = memfd_create("mvnet-vhost-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) {
    ThrowErrno(env, errno, "memfd_create", "");
    return nullptr;
  }
  auto fail = [&](const char* what) -> napi_value {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, what, "");
    return nullptr;
  };
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) return fail("ftruncate");
  // As QEMU's memory-backend-memfd (seal=on, its default).
  if (seals && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) return fail("F_ADD_SEALS");
  void* addr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (addr == MAP_FAILED) return fail("mmap");

  Mapping* m = new Mapping{next_id++, addr, size, false};
  napi_value mem;
  if (napi_create_external_buffer(env, size, addr, FinalizeMapping, m, &mem) != napi_ok) {
    munmap(addr, size);
    delete m;
    close(fd);
    ThrowLastError(env, "napi_create_external_buffer");
    return nullptr;
  }
  Mappings()[m->id] = m;
  napi_value obj;
  MVNET_CALL(env, napi_create_object(env, &obj));
  if (!SetNumber(env, obj, "fd", fd) || !SetNumber(env, obj, "id", m->id)) return nullptr;
  MVNET_CALL(env, napi_set_named_property(env, obj, "mem", mem));
  return obj;
}

// memfdUnmap(id): a no-op for a mapping already gone (unmapped, or its Buffer collected).
napi_value MemfdUnmap(napi_env env, napi_callback_info info) {
  static const char* usage = "memfdUnmap(id: number)";
  napi_value argv[1];
  if (!Args(env, info, 1, argv, usage)) return nullptr;
  double id;
  if (!IntArg(env, argv[0], 0, 2147483647.0, usage, &id)) return nullptr;
  auto it = Mappings().find(static_cast<int>(id));
  if (it == Mappings().end()) {
    // An id handed out before whose Buffer was collected is unmapped already.
    if (id >= 1 && id < next_id) return nullptr;
    ThrowType(env, "memfdUnmap: no mapping " + std::to_string(static_cast<int>(id)));
    return nullptr;
  }
  Mapping* m = it->second;
  if (m->detached) return nullptr;
  void* r = mmap(m->addr, m->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  if (r == MAP_FAILED) {
    ThrowErrno(env, errno, "mmap(MAP_FIXED)", "");
    return nullptr;
  }
  m->detached = true;
  return nullptr;
}

// ftruncate(fd, size)
napi_value Ftruncate(napi_env env, napi_callback_info info) {
  static const char* usage = "ftruncate(fd: number, size: number)";
  napi_value argv[2];
  if (!Args(env, info, 2, argv, usage)) return nullptr;
  int fd;
  double size;
  if (!FdArg(env, argv[0], usage, &fd) || !IntArg(env, argv[1], 0, kMaxMemfd, usage, &size)) return nullptr;
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    ThrowErrno(env, errno, "ftruncate", "");
    return nullptr;
  }
  return nullptr;
}

napi_value EventFd(napi_env env, napi_callback_info) {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) {
    ThrowErrno(env, errno, "eventfd", "");
    return nullptr;
  }
  napi_value r;
  MVNET_CALL(env, napi_create_int32(env, fd, &r));
  return r;
}

// eventfdWrite(fd, value)
napi_value EventFdWrite(napi_env env, napi_callback_info info) {
  static const char* usage = "eventfdWrite(fd: number, value: 1..2^53)";
  napi_value argv[2];
  if (!Args(env, info, 2, argv, usage)) return nullptr;
  int fd;
  double v;
  if (!FdArg(env, argv[0], usage, &fd) || !IntArg(env, argv[1], 1, 9007199254740991.0, usage, &v)) return nullptr;
  uint64_t value = static_cast<uint64_t>(v);
  ssize_t r;
  do {
    r = write(fd, &value, sizeof(value));
  } while (r < 0 && errno == EINTR);
  if (r != static_cast<ssize_t>(sizeof(value))) {
    ThrowErrno(env, r < 0 ? errno : EIO, "write(eventfd)", "");
    return nullptr;
  }
  return nullptr;
}

// eventfdRead(fd) -> count (0: nothing pending)
napi_value EventFdRead(napi_env env, napi_callback_info info) {
  static const char* usage = "eventfdRead(fd: number)";
  napi_value argv[1];
  if (!Args(env, info, 1, argv, usage)) return nullptr;
  int fd;
  if (!FdArg(env, argv[0], usage, &fd)) return nullptr;
  uint64_t value = 0;
  ssize_t r;
  do {
    r = read(fd, &value, sizeof(value));
  } while (r < 0 && errno == EINTR);
  if (r < 0 && errno != EAGAIN) {
    ThrowErrno(env, errno, "read(eventfd)", "");
    return nullptr;
  }
  napi_value out;
  MVNET_CALL(env, napi_create_double(env, r == static_cast<ssize_t>(sizeof(value)) ? static_cast<double>(value) : 0, &out));
  return out;
}

// unixConnect(path) -> fd
napi_value UnixConnect(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!Args(env, info, 1, argv, "unixConnect(path: string)")) return nullptr;
  std::string path;
  if (!GetStringArg(env, argv[0], "path", &path)) return nullptr;
  sockaddr_un sun;
  socklen_t sun_len;
  if (!UnixAddress(env, path, &sun, &sun_len)) return nullptr;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ThrowErrno(env, errno, "socket(AF_UNIX)", "");
    return nullptr;
  }
  int r;
  do {
    r = connect(fd, reinterpret_cast<sockaddr*>(&sun), sun_len);
  } while (r != 0 && errno == EINTR);
  if (r != 0 || fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, "connect", path);
    return nullptr;
  }
  napi_value out;
  MVNET_CALL(env, napi_create_int32(env, fd, &out));
  return out;
}

// sendWithFds(fd, data, fds) -> bytes sent
napi_value SendWithFds(napi_env env, napi_callback_info info) {
  static const char* usage = "sendWithFds(fd: number, data: Buffer, fds: number[])";
  napi_value argv[3];
  if (!Args(env, info, 3, argv, usage)) return nullptr;
  int fd;
  if (!FdArg(env, argv[0], usage, &fd)) return nullptr;
  bool is_buf = false, is_arr = false;
  MVNET_CALL(env, napi_is_buffer(env, argv[1], &is_buf));
  MVNET_CALL(env, napi_is_array(env, argv[2], &is_arr));
  if (!is_buf || !is_arr) {
    ThrowType(env, usage);
    return nullptr;
  }
  void* data = nullptr;
  size_t len = 0;
  MVNET_CALL(env, napi_get_buffer_info(env, argv[1], &data, &len));
  uint32_t nfds = 0;
  MVNET_CALL(env, napi_get_array_length(env, argv[2], &nfds));
  if (nfds > kMaxSendFds) {
    ThrowType(env, "sendWithFds: at most 253 descriptors");
    return nullptr;
  }
  std::vector<int> fds(nfds);
  for (uint32_t i = 0; i < nfds; i++) {
    napi_value v;
    MVNET_CALL(env, napi_get_element(env, argv[2], i, &v));
    if (!FdArg(env, v, usage, &fds[i])) return nullptr;
  }
  // Sent as given, even empty (a stream socket then carries no descriptors: a test may want that).
  iovec iov{data, len};
  msghdr msg;
  std::memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> ctl;
  if (nfds > 0) {
    ctl.assign(CMSG_SPACE(sizeof(int) * nfds), 0);
    msg.msg_control = ctl.data();
    msg.msg_controllen = ctl.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * nfds);
  }
  ssize_t r;
  do {
    r = sendmsg(fd, &msg, MSG_NOSIGNAL);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    ThrowErrno(env, errno, "sendmsg", "");
    return nullptr;
  }
  napi_value out;
  MVNET_CALL(env, napi_create_double(env, static_cast<double>(r), &out));
  return out;
}

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// recvExact(fd, n, timeoutMs) -> Buffer of n bytes
napi_value RecvExact(napi_env env, napi_callback_info info) {
  static const char* usage = "recvExact(fd: number, n: 0..16 MiB, timeoutMs: 0..600000)";
  napi_value argv[3];
  if (!Args(env, info, 3, argv, usage)) return nullptr;
  int fd;
  double n_d, timeout_d;
  if (!FdArg(env, argv[0], usage, &fd) || !IntArg(env, argv[1], 0, kMaxRecv, usage, &n_d) ||
      !IntArg(env, argv[2], 0, 600000, usage, &timeout_d)) {
    return nullptr;
  }
  const size_t n = static_cast<size_t>(n_d);
  std::vector<uint8_t> buf(n);
  size_t got = 0;
  const int64_t deadline = NowMs() + static_cast<int64_t>(timeout_d);
  while (got < n) {
    ssize_t r = recv(fd, buf.data() + got, n - got, MSG_DONTWAIT);
    if (r > 0) {
      got += static_cast<size_t>(r);
      continue;
    }
    if (r == 0) {
      ThrowErrno(env, EPIPE, "recv", "EOF after " + std::to_string(got) + " of " + std::to_string(n) + " bytes");
      return nullptr;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      ThrowErrno(env, errno, "recv", "");
      return nullptr;
    }
    int64_t left = deadline - NowMs();
    if (left <= 0) {
      ThrowErrno(env, ETIMEDOUT, "recv", std::to_string(got) + " of " + std::to_string(n) + " bytes");
      return nullptr;
    }
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) < 0 && errno != EINTR) {
      ThrowErrno(env, errno, "poll", "");
      return nullptr;
    }
  }
  napi_value out;
  void* dst = nullptr;
  MVNET_CALL(env, napi_create_buffer_copy(env, n, buf.data(), &dst, &out));
  return out;
}

}  // namespace

napi_value DefineVhostTestingExports(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"memfdMap", nullptr, MemfdMap, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"memfdUnmap", nullptr, MemfdUnmap, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"ftruncate", nullptr, Ftruncate, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"eventfd", nullptr, EventFd, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"eventfdWrite", nullptr, EventFdWrite, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"eventfdRead", nullptr, EventFdRead, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"unixConnect", nullptr, UnixConnect, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"sendWithFds", nullptr, SendWithFds, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"recvExact", nullptr, RecvExact, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
  };
  napi_value obj;
  MVNET_CALL(env, napi_create_object(env, &obj));
  MVNET_CALL(env, napi_define_properties(env, obj, sizeof(props) / sizeof(props[0]), props));
  MVNET_CALL(env, napi_set_named_property(env, exports, "vhostTesting", obj));
  return exports;
}

}  // namespace mvnet
