// Process-level calls Node has no API for:
//
// sdNotify(socket, message)   one datagram to systemd's $NOTIFY_SOCKET (sd_notify(3)): a unix
//                             datagram socket, a path or an abstract address written '@name'.
//                             Node's dgram module has no AF_UNIX, so this is a plain sendto().
// dropCaps(keep: number[])    -> { dropped: number[], bounding: boolean, threads, blocked, failed }
//                             Keeps only the capabilities in `keep`: drops the others from the
//                             bounding set (PR_CAPBSET_DROP, needs CAP_SETPCAP; skipped when it is
//                             missing) and from the effective, permitted and inheritable sets
//                             (capset; the ambient set follows, as it must stay within permitted
//                             and inheritable). Credentials are per thread in Linux, and Node has
//                             threads (libuv's pool, V8's platform) that would keep everything,
//                             so the change is made in every thread of the process: this one
//                             directly, the others through a real-time signal whose handler makes
//                             the same two raw syscalls (the broadcast glibc does for setuid and
//                             libpsx for libcap). Threads started later inherit the reduced sets.
#include <dirent.h>
#include <linux/capability.h>
#include <node_api.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "napi_util.h"

namespace mvnet {
namespace {

napi_value SdNotify(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  MVNET_CALL(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  std::string path, message;
  if (argc < 2 || !GetStringArg(env, argv[0], "socket", &path) || !GetStringArg(env, argv[1], "message", &message)) {
    if (!IsExceptionPending(env)) ThrowType(env, "sdNotify(socket: string, message: string)");
    return nullptr;
  }
  sockaddr_un sun;
  std::memset(&sun, 0, sizeof(sun));
  sun.sun_family = AF_UNIX;
  if (path.size() < 2 || path.size() >= sizeof(sun.sun_path) || (path[0] != '/' && path[0] != '@')) {
    ThrowType(env, "sdNotify: socket must be an absolute path or '@abstract', at most 107 bytes: '" + path + "'");
    return nullptr;
  }
  std::memcpy(sun.sun_path, path.data(), path.size());
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  if (path[0] == '@') {
    sun.sun_path[0] = '\0';  // abstract: the name is the bytes after the NUL, no terminator
  } else {
    len += 1;
  }
  int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    ThrowErrno(env, errno, "socket(AF_UNIX)", "");
    return nullptr;
  }
  ssize_t r;
  // MSG_DONTWAIT: this runs on the event loop, and a full receive queue at systemd's end would
  // otherwise block routing until it drains. A full queue drops this one notification instead
  // (returned as false, logged by the caller).
  do {
    r = sendto(s, message.data(), message.size(), MSG_NOSIGNAL | MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&sun), len);
  } while (r < 0 && errno == EINTR);
  int err = errno;
  close(s);
  bool sent = true;
  if (r < 0) {
    if (err != EAGAIN && err != EWOULDBLOCK) {
      ThrowErrno(env, err, "sendto", path);
      return nullptr;
    }
    sent = false;
  }
  napi_value out;
  MVNET_CALL(env, napi_get_boolean(env, sent, &out));
  return out;
}

// What every thread applies, set before the signals go out.
__u32 g_keep[2];
int g_last_cap;
bool g_drop_bounding;
std::atomic<int> g_done{0};
std::atomic<int> g_failed{0};

// Async-signal-safe: raw syscalls only. Returns false when capset failed.
bool ApplyInThisThread() {
  if (g_drop_bounding) {
    for (int c = 0; c <= g_last_cap; c++) {
      if ((g_keep[c / 32] & (1u << (c % 32))) == 0) syscall(SYS_prctl, PR_CAPBSET_DROP, c, 0, 0, 0);
    }
  }
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2];
  if (syscall(SYS_capget, &hdr, data) != 0) return false;
  for (int i = 0; i < 2; i++) {
    data[i].effective &= g_keep[i];
    data[i].permitted &= g_keep[i];
    data[i].inheritable &= g_keep[i];
  }
  return syscall(SYS_capset, &hdr, data) == 0;
}

void OnSignal(int) {
  int saved = errno;
  if (!ApplyInThisThread()) g_failed.fetch_add(1);
  g_done.fetch_add(1);
  errno = saved;
}

int LastCap() {
  FILE* f = std::fopen("/proc/sys/kernel/cap_last_cap", "r");
  int n = CAP_LAST_CAP;
  if (f != nullptr) {
    if (std::fscanf(f, "%d", &n) != 1) n = CAP_LAST_CAP;
    std::fclose(f);
  }
  return n > 63 ? 63 : n;
}

// Whether thread `tid` blocks signal `sig` (its SigBlk in /proc): such a thread would never run
// the handler, so it is not waited for.
bool Blocks(pid_t tid, int sig) {
  std::string path = "/proc/self/task/" + std::to_string(tid) + "/status";
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return false;
  char line[256];
  unsigned long long mask = 0;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::sscanf(line, "SigBlk: %llx", &mask) == 1) break;
  }
  std::fclose(f);
  return (mask >> (sig - 1)) & 1;
}

std::vector<pid_t> OtherThreads() {
  std::vector<pid_t> out;
  DIR* d = opendir("/proc/self/task");
  if (d == nullptr) return out;
  pid_t self = static_cast<pid_t>(syscall(SYS_gettid));
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    pid_t tid = static_cast<pid_t>(std::atoi(e->d_name));
    if (tid != self) out.push_back(tid);
  }
  closedir(d);
  return out;
}

napi_value DropCaps(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  MVNET_CALL(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  bool is_array = false;
  if (argc >= 1) MVNET_CALL(env, napi_is_array(env, argv[0], &is_array));
  if (!is_array) {
    ThrowType(env, "dropCaps(keep: number[])");
    return nullptr;
  }
  uint32_t n = 0;
  MVNET_CALL(env, napi_get_array_length(env, argv[0], &n));
  g_keep[0] = g_keep[1] = 0;
  g_last_cap = LastCap();
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    uint32_t c = 0;
    MVNET_CALL(env, napi_get_element(env, argv[0], i, &v));
    if (napi_get_value_uint32(env, v, &c) != napi_ok || c > 63) {
      ThrowType(env, "dropCaps: capabilities are numbers 0-63");
      return nullptr;
    }
    g_keep[c / 32] |= 1u << (c % 32);
  }
  // Without CAP_SETPCAP the bounding set cannot shrink (a service manager may have done it).
  g_drop_bounding = prctl(PR_CAPBSET_READ, CAP_SETPCAP, 0, 0, 0) == 1;
  {
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &hdr, data) == 0 && (data[0].effective & (1u << CAP_SETPCAP)) == 0) g_drop_bounding = false;
  }
  std::vector<int> dropped;
  for (int c = 0; c <= g_last_cap; c++) {
    if ((g_keep[c / 32] & (1u << (c % 32))) == 0 && prctl(PR_CAPBSET_READ, c, 0, 0, 0) == 1) dropped.push_back(c);
  }

  g_done = 0;
  g_failed = 0;
  int sig = SIGRTMIN + 4;
  struct sigaction sa, old;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = OnSignal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (sigaction(sig, &sa, &old) != 0) {
    ThrowErrno(env, errno, "sigaction", "");
    return nullptr;
  }
  // Others first: the bounding-set drop needs CAP_SETPCAP in each thread's own effective set.
  std::vector<pid_t> others = OtherThreads();
  int sent = 0, blocked = 0, unsent = 0;
  for (pid_t tid : others) {
    if (Blocks(tid, sig)) {
      blocked++;
    } else if (syscall(SYS_tgkill, getpid(), tid, sig) == 0) {
      sent++;
    } else if (errno != ESRCH) {  // a thread that ended meanwhile is no failure
      unsent++;
    }
  }
  // Every signalled thread runs the handler as soon as it is scheduled; 2 s is far beyond that.
  timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    if (g_done.load() >= sent) break;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 > 2000) break;
    timespec ms{0, 1000000};
    nanosleep(&ms, nullptr);
  }
  int unfinished = sent - g_done.load();
  bool self_ok = ApplyInThisThread();
  // The handler stays installed: a thread that did not run it within the 2 s may still have the
  // signal pending, and restoring the old action (SIG_DFL, which terminates on a real-time
  // signal) would kill the daemon when it is delivered. Run late, the handler still applies the
  // drop in that thread, which is what we wanted anyway (g_keep is not changed afterwards).
  (void)old;
  if (!self_ok) {
    ThrowErrno(env, errno, "capset", "");
    return nullptr;
  }

  napi_value obj, arr;
  MVNET_CALL(env, napi_create_object(env, &obj));
  MVNET_CALL(env, napi_create_array_with_length(env, dropped.size(), &arr));
  for (size_t i = 0; i < dropped.size(); i++) {
    napi_value v;
    MVNET_CALL(env, napi_create_int32(env, dropped[i], &v));
    MVNET_CALL(env, napi_set_element(env, arr, static_cast<uint32_t>(i), v));
  }
  MVNET_CALL(env, napi_set_named_property(env, obj, "dropped", arr));
  if (!SetBool(env, obj, "bounding", g_drop_bounding) || !SetNumber(env, obj, "threads", static_cast<double>(others.size()) + 1) ||
      !SetNumber(env, obj, "blocked", blocked) || !SetNumber(env, obj, "failed", g_failed.load() + unfinished + unsent)) {
    return nullptr;
  }
  return obj;
}

}  // namespace

napi_value DefineProcessExports(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"sdNotify", nullptr, SdNotify, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"dropCaps", nullptr, DropCaps, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
  };
  MVNET_CALL(env, napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props));
  return exports;
}

}  // namespace mvnet
