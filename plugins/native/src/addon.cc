// mvnet_native: device setup (tun/tap, AF_PACKET, unix datagram sockets, link configuration,
// network namespaces) and the Device class (device.cc) that moves frames in batches.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_arp.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <node_api.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "tee-filter.h"
#include "device.h"
#include "napi_util.h"
#include "netns.h"
#include "vhost.h"

// if_nametoindex lives in <net/if.h>, which clashes with <linux/if.h>.
extern "C" unsigned int if_nametoindex(const char* ifname);

namespace mvnet {

// ping.cc: openPing and the PingSocket class.
napi_value DefinePingExports(napi_env env, napi_value exports);
// fdpass.cc: sendFd and the FdInbox class.
napi_value DefineFdPassExports(napi_env env, napi_value exports);
// netlink.cc: the AddrWatch class (host address changes).
napi_value DefineNetlinkExports(napi_env env, napi_value exports);
// lock.cc: lockFile.
napi_value DefineLockExports(napi_env env, napi_value exports);
// aead.cc: the link transport's ChaCha20-Poly1305 (aeadImportKey, aeadSeal, aeadOpen, aeadFreeKey).
napi_value DefineAeadExports(napi_env env, napi_value exports);
// csum.cc: onesSum, the Internet checksum's sum over a byte range.
napi_value DefineCsumExports(napi_env env, napi_value exports);
// udp.cc: the UdpSocket class (the link UDP carrier).
napi_value DefineUdpExports(napi_env env, napi_value exports);
// process.cc: sdNotify, dropCaps.
napi_value DefineProcessExports(napi_env env, napi_value exports);
// vhost-testing.cc: vhostTesting, the vhost-user fake front-end's memfds, eventfds and fd passing.
napi_value DefineVhostTestingExports(napi_env env, napi_value exports);

namespace {

constexpr int kVnetHdrLen = 10;  // sizeof(struct virtio_net_hdr)
constexpr int kSocketBuf = 4 * 1024 * 1024;

// RAII for a file descriptor during setup.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

bool ValidIfName(const std::string& name) {
  if (name.empty() || name.size() >= IFNAMSIZ) return false;
  if (name == "." || name == "..") return false;
  for (unsigned char c : name) {
    if (c <= 0x20 || c == '/' || c == ':' || c >= 0x7f) return false;
  }
  return true;
}

bool CheckIfName(napi_env env, const std::string& name) {
  if (!ValidIfName(name)) {
    ThrowType(env, "invalid interface name '" + name + "' (1-15 characters, no '/', ':' or spaces)");
    return false;
  }
  return true;
}

std::string InNs(const std::string& netns) { return netns.empty() ? "" : " in " + netns; }

// Enters `netns` or throws.
bool EnterNs(napi_env env, NetnsScope* scope, const std::string& netns) {
  const char* what = "";
  std::string why;
  int err = scope->Enter(netns, &what, &why);
  if (err != 0) {
    if (!why.empty()) {
      ThrowPlain(env, why);
    } else {
      ThrowErrno(env, err, what, netns);
    }
    return false;
  }
  return true;
}

napi_value MakeFdResult(napi_env env, int fd) {
  napi_value obj;
  MVNET_CALL(env, napi_create_object(env, &obj));
  if (!SetNumber(env, obj, "fd", fd)) return nullptr;
  return obj;
}

void SetBufSize(int fd, int force_opt, int opt, int size) {
  if (setsockopt(fd, SOL_SOCKET, force_opt, &size, sizeof(size)) != 0) {
    setsockopt(fd, SOL_SOCKET, opt, &size, sizeof(size));
  }
}

bool GetArgs(napi_env env, napi_callback_info info, size_t want, napi_value* argv, size_t* argc) {
  *argc = want;
  MVNET_CALL_B(env, napi_get_cb_info(env, info, argc, argv, nullptr, nullptr));
  for (size_t i = *argc; i < want; i++) napi_get_undefined(env, &argv[i]);
  return true;
}

bool GetOptionsObject(napi_env env, napi_value v) {
  napi_valuetype t;
  MVNET_CALL_B(env, napi_typeof(env, v, &t));
  if (t != napi_object) {
    ThrowType(env, "options must be an object");
    return false;
  }
  return true;
}

// Attaches a /dev/net/tun fd to interface `name` (creating it if absent). Returns fd or -errno.
int TunAttach(const std::string& name, short flags, std::string* kernel_name) {
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return -errno;
  struct ifreq ifr;
  std::memset(&ifr, 0, sizeof(ifr));
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  ifr.ifr_flags = flags;
  if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
    int err = errno;
    close(fd);
    return -err;
  }
  if (kernel_name) *kernel_name = ifr.ifr_name;
  return fd;
}

std::string TunHint(int err) {
  switch (err) {
    case EBUSY:
      return " (the device is attached to another process)";
    case EINVAL:
      return " (an interface with this name exists but is not a tun/tap of this type and queue mode)";
    case EPERM:
      return " (needs CAP_NET_ADMIN or ownership of the persistent device)";
    default:
      return "";
  }
}

// openTun({ name, tap, vnetHdr?, multiQueue?, netns? }) -> { fd, name, created }
napi_value OpenTun(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  size_t argc;
  if (!GetArgs(env, info, 1, argv, &argc) || !GetOptionsObject(env, argv[0])) return nullptr;
  std::string name, netns;
  bool tap = false, vnet = false, mq = false;
  if (!GetStringProp(env, argv[0], "name", true, &name) || !CheckIfName(env, name)) return nullptr;
  bool has_tap = false;
  {
    napi_value v;
    MVNET_CALL(env, napi_get_named_property(env, argv[0], "tap", &v));
    has_tap = !IsNullish(env, v);
  }
  if (!has_tap) {
    ThrowType(env, "option 'tap' is required");
    return nullptr;
  }
  if (!GetBoolProp(env, argv[0], "tap", &tap) || !GetBoolProp(env, argv[0], "vnetHdr", &vnet) ||
      !GetBoolProp(env, argv[0], "multiQueue", &mq) || !GetStringProp(env, argv[0], "netns", false, &netns)) {
    return nullptr;
  }

  short flags = (tap ? IFF_TAP : IFF_TUN) | IFF_NO_PI;
  if (vnet) flags |= IFF_VNET_HDR;
  if (mq) flags |= IFF_MULTI_QUEUE;

  std::string kernel_name;
  bool created = false, persistent = false;
  int out_fd = -1;
  {
    NetnsScope ns;
    if (!EnterNs(env, &ns, netns)) return nullptr;
    created = if_nametoindex(name.c_str()) == 0;
    int r = TunAttach(name, flags, &kernel_name);
    if (r < 0) {
      ns.Leave();
      ThrowErrno(env, -r, "TUNSETIFF", name + InNs(netns) + TunHint(-r));
      return nullptr;
    }
    Fd attached(r);
    if (vnet) {
      int sz = kVnetHdrLen;
      if (ioctl(attached.get(), TUNSETVNETHDRSZ, &sz) != 0) {
        int err = errno;
        ns.Leave();
        ThrowErrno(env, err, "TUNSETVNETHDRSZ", name);
        return nullptr;
      }
      if (tap) {
        unsigned int offload = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
        if (ioctl(attached.get(), TUNSETOFFLOAD, offload) != 0) {
          int err = errno;
          ns.Leave();
          ThrowErrno(env, err, "TUNSETOFFLOAD", name);
          return nullptr;
        }
      }
    }
    // Whether someone made the device persistent before us: it is theirs to keep so.
    struct ifreq got;
    std::memset(&got, 0, sizeof(got));
    if (ioctl(attached.get(), TUNGETIFF, &got) != 0) {
      int err = errno;
      ns.Leave();
      ThrowErrno(env, err, "TUNGETIFF", name);
      return nullptr;
    }
    persistent = (got.ifr_flags & IFF_PERSIST) != 0;
    out_fd = attached.release();
  }
  Fd fd(out_fd);

  napi_value obj;
  MVNET_CALL(env, napi_create_object(env, &obj));
  if (!SetNumber(env, obj, "fd", fd.get()) || !SetString(env, obj, "name", kernel_name) ||
      !SetBool(env, obj, "created", created) || !SetBool(env, obj, "persistent", persistent)) {
    return nullptr;
  }
  fd.release();
  return obj;
}

// setPersist(fd, persist)
napi_value SetPersist(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  size_t argc;
  if (!GetArgs(env, info, 2, argv, &argc)) return nullptr;
  int32_t fd = -1;
  bool persist = false;
  napi_valuetype t0, t1;
  MVNET_CALL(env, napi_typeof(env, argv[0], &t0));
  MVNET_CALL(env, napi_typeof(env, argv[1], &t1));
  if (t0 != napi_number || t1 != napi_boolean) {
    ThrowType(env, "setPersist(fd: number, persist: boolean)");
    return nullptr;
  }
  MVNET_CALL(env, napi_get_value_int32(env, argv[0], &fd));
  MVNET_CALL(env, napi_get_value_bool(env, argv[1], &persist));
  if (ioctl(fd, TUNSETPERSIST, persist ? 1UL : 0UL) != 0) {
    ThrowErrno(env, errno, "TUNSETPERSIST", "");
    return nullptr;
  }
  return nullptr;
}

// configureLink({ name, netns?, mtu?, mac?, up? })
napi_value ConfigureLink(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  size_t argc;
  if (!GetArgs(env, info, 1, argv, &argc) || !GetOptionsObject(env, argv[0])) return nullptr;
  std::string name, netns;
  uint32_t mtu = 0;
  bool has_up = false, up = false;
  if (!GetStringProp(env, argv[0], "name", true, &name) || !CheckIfName(env, name) ||
      !GetStringProp(env, argv[0], "netns", false, &netns) || !GetUint32Prop(env, argv[0], "mtu", false, &mtu)) {
    return nullptr;
  }
  napi_value v;
  MVNET_CALL(env, napi_get_named_property(env, argv[0], "up", &v));
  if (!IsNullish(env, v)) {
    has_up = true;
    if (!GetBoolProp(env, argv[0], "up", &up)) return nullptr;
  }
  unsigned char mac[6];
  bool has_mac = false;
  MVNET_CALL(env, napi_get_named_property(env, argv[0], "mac", &v));
  if (!IsNullish(env, v)) {
    bool is_buf = false;
    MVNET_CALL(env, napi_is_buffer(env, v, &is_buf));
    void* data = nullptr;
    size_t len = 0;
    if (is_buf) MVNET_CALL(env, napi_get_buffer_info(env, v, &data, &len));
    if (!is_buf || len != 6) {
      ThrowType(env, "option 'mac' must be a 6-byte Buffer");
      return nullptr;
    }
    std::memcpy(mac, data, 6);
    has_mac = true;
  }

  NetnsScope ns;
  if (!EnterNs(env, &ns, netns)) return nullptr;
  Fd sock(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (sock.get() < 0) {
    int err = errno;
    ns.Leave();
    ThrowErrno(env, err, "socket", "");
    return nullptr;
  }
  struct ifreq ifr;
  auto reset = [&]() {
    std::memset(&ifr, 0, sizeof(ifr));
    std::memcpy(ifr.ifr_name, name.data(), name.size());
  };
  auto fail = [&](const char* what) {
    int err = errno;
    ns.Leave();
    ThrowErrno(env, err, what, name + InNs(netns));
    return nullptr;
  };
  if (mtu != 0) {
    reset();
    ifr.ifr_mtu = static_cast<int>(mtu);
    if (ioctl(sock.get(), SIOCSIFMTU, &ifr) != 0) return fail("SIOCSIFMTU");
  }
  if (has_mac) {
    reset();
    ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    std::memcpy(ifr.ifr_hwaddr.sa_data, mac, 6);
    if (ioctl(sock.get(), SIOCSIFHWADDR, &ifr) != 0) return fail("SIOCSIFHWADDR");
  }
  if (has_up) {
    reset();
    if (ioctl(sock.get(), SIOCGIFFLAGS, &ifr) != 0) return fail("SIOCGIFFLAGS");
    short want = up ? (ifr.ifr_flags | IFF_UP) : (ifr.ifr_flags & ~IFF_UP);
    if (want != ifr.ifr_flags) {
      ifr.ifr_flags = want;
      if (ioctl(sock.get(), SIOCSIFFLAGS, &ifr) != 0) return fail("SIOCSIFFLAGS");
    }
  }
  return nullptr;
}

// linkInfo(name, netns?) -> { mtu, mac, up, loopback }: what configureLink would change, read
// first so that a device mvnet did not create can be given back as it was.
napi_value LinkInfo(napi_env env, napi_callback_info info);

bool GetNameAndNs(napi_env env, napi_value* argv, size_t name_idx, size_t ns_idx, std::string* name,
                  std::string* netns) {
  if (!GetStringArg(env, argv[name_idx], "name", name) || !CheckIfName(env, *name)) return false;
  if (!IsNullish(env, argv[ns_idx]) && !GetStringArg(env, argv[ns_idx], "netns", netns)) return false;
  return true;
}

// ifIndex(name, netns?) -> number (0 when absent)
napi_value IfIndex(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  size_t argc;
  std::string name, netns;
  if (!GetArgs(env, info, 2, argv, &argc) || !GetNameAndNs(env, argv, 0, 1, &name, &netns)) return nullptr;
  unsigned int idx;
  {
    NetnsScope ns;
    if (!EnterNs(env, &ns, netns)) return nullptr;
    idx = if_nametoindex(name.c_str());
  }
  napi_value r;
  MVNET_CALL(env, napi_create_uint32(env, idx, &r));
  return r;
}

napi_value LinkInfo(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  size_t argc;
  std::string name, netns;
  if (!GetArgs(env, info, 2, argv, &argc) || !GetNameAndNs(env, argv, 0, 1, &name, &netns)) return nullptr;
  int mtu = 0;
  short flags = 0;
  unsigned char mac[6] = {0, 0, 0, 0, 0, 0};
  {
    NetnsScope ns;
    if (!EnterNs(env, &ns, netns)) return nullptr;
    Fd sock(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    struct ifreq ifr;
    auto reset = [&]() {
      std::memset(&ifr, 0, sizeof(ifr));
      std::memcpy(ifr.ifr_name, name.data(), name.size());
    };
    auto fail = [&](int err, const char* what) {
      ns.Leave();
      ThrowErrno(env, err, what, name + InNs(netns));
      return nullptr;
    };
    if (sock.get() < 0) return fail(errno, "socket");
    reset();
    if (ioctl(sock.get(), SIOCGIFMTU, &ifr) != 0) return fail(errno, "SIOCGIFMTU");
    mtu = ifr.ifr_mtu;
    reset();
    if (ioctl(sock.get(), SIOCGIFFLAGS, &ifr) != 0) return fail(errno, "SIOCGIFFLAGS");
    flags = ifr.ifr_flags;
    reset();
    if (ioctl(sock.get(), SIOCGIFHWADDR, &ifr) != 0) return fail(errno, "SIOCGIFHWADDR");
    std::memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
  }
  napi_value obj, buf;
  void* data = nullptr;
  MVNET_CALL(env, napi_create_object(env, &obj));
  MVNET_CALL(env, napi_create_buffer_copy(env, 6, mac, &data, &buf));
  MVNET_CALL(env, napi_set_named_property(env, obj, "mac", buf));
  if (!SetNumber(env, obj, "mtu", mtu) || !SetBool(env, obj, "up", (flags & IFF_UP) != 0) ||
      !SetBool(env, obj, "loopback", (flags & IFF_LOOPBACK) != 0)) {
    return nullptr;
  }
  return obj;
}

// removeTun(name, tap, netns?)
napi_value RemoveTun(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  size_t argc;
  std::string name, netns;
  if (!GetArgs(env, info, 3, argv, &argc) || !GetNameAndNs(env, argv, 0, 2, &name, &netns)) return nullptr;
  bool tap = false;
  napi_valuetype t;
  MVNET_CALL(env, napi_typeof(env, argv[1], &t));
  if (t != napi_boolean) {
    ThrowType(env, "removeTun(name: string, tap: boolean, netns?: string)");
    return nullptr;
  }
  MVNET_CALL(env, napi_get_value_bool(env, argv[1], &tap));

  NetnsScope ns;
  if (!EnterNs(env, &ns, netns)) return nullptr;
  if (if_nametoindex(name.c_str()) == 0) return nullptr;
  short flags = (tap ? IFF_TAP : IFF_TUN) | IFF_NO_PI;
  int r = TunAttach(name, flags, nullptr);
  if (r == -EINVAL) r = TunAttach(name, flags | IFF_MULTI_QUEUE, nullptr);
  if (r < 0) {
    ns.Leave();
    ThrowErrno(env, -r, "TUNSETIFF", name + InNs(netns) + TunHint(-r));
    return nullptr;
  }
  Fd fd(r);
  if (ioctl(fd.get(), TUNSETPERSIST, 0UL) != 0) {
    int err = errno;
    ns.Leave();
    ThrowErrno(env, err, "TUNSETPERSIST", name + InNs(netns));
    return nullptr;
  }
  return nullptr;
}

// openPacket({ ifname, netns?, vnetHdr? }) -> { fd }
napi_value OpenPacket(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  size_t argc;
  if (!GetArgs(env, info, 1, argv, &argc) || !GetOptionsObject(env, argv[0])) return nullptr;
  std::string name, netns;
  bool vnet = false;
  if (!GetStringProp(env, argv[0], "ifname", true, &name) || !CheckIfName(env, name) ||
      !GetStringProp(env, argv[0], "netns", false, &netns) || !GetBoolProp(env, argv[0], "vnetHdr", &vnet)) {
    return nullptr;
  }
  NetnsScope ns;
  if (!EnterNs(env, &ns, netns)) return nullptr;
  auto fail = [&](int err, const char* what) {
    ns.Leave();
    ThrowErrno(env, err, what, name + InNs(netns));
    return nullptr;
  };
  int idx = static_cast<int>(if_nametoindex(name.c_str()));
  if (idx == 0) {
    ns.Leave();
    ThrowErrno(env, ENODEV, "openPacket", "interface '" + name + "' does not exist" + InNs(netns));
    return nullptr;
  }
  // Protocol 0 until bind: the socket receives nothing (from any interface) before it is bound.
  Fd fd(socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return fail(errno, "socket(AF_PACKET)");
  int one = 1;
  if (vnet && setsockopt(fd.get(), SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one)) != 0) {
    return fail(errno, "setsockopt(PACKET_VNET_HDR)");
  }
  if (setsockopt(fd.get(), SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one)) != 0) {
    return fail(errno, "setsockopt(PACKET_IGNORE_OUTGOING)");
  }
  SetBufSize(fd.get(), SO_RCVBUFFORCE, SO_RCVBUF, kSocketBuf);
  SetBufSize(fd.get(), SO_SNDBUFFORCE, SO_SNDBUF, kSocketBuf);
  struct packet_mreq mr;
  std::memset(&mr, 0, sizeof(mr));
  mr.mr_ifindex = idx;
  mr.mr_type = PACKET_MR_PROMISC;
  if (setsockopt(fd.get(), SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr)) != 0) {
    return fail(errno, "setsockopt(PACKET_ADD_MEMBERSHIP)");
  }
  struct sockaddr_ll sll;
  std::memset(&sll, 0, sizeof(sll));
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_ALL);
  sll.sll_ifindex = idx;
  if (bind(fd.get(), reinterpret_cast<struct sockaddr*>(&sll), sizeof(sll)) != 0) return fail(errno, "bind");
  ns.Leave();
  napi_value r = MakeFdResult(env, fd.get());
  if (r) fd.release();
  return r;
}

// The `{ path }` option of the unix socket openers, as a bound address. False with a TypeError
// pending when it is missing or does not fit sun_path.
bool UnixPathOption(napi_env env, napi_callback_info info, std::string* path, struct sockaddr_un* sun, socklen_t* len) {
  napi_value argv[1];
  size_t argc;
  if (!GetArgs(env, info, 1, argv, &argc) || !GetOptionsObject(env, argv[0])) return false;
  return GetStringProp(env, argv[0], "path", true, path) && UnixAddress(env, *path, sun, len);
}

// openUnixDgram({ path }) -> { fd }
napi_value OpenUnixDgram(napi_env env, napi_callback_info info) {
  std::string path;
  struct sockaddr_un sun;
  socklen_t sun_len;
  if (!UnixPathOption(env, info, &path, &sun, &sun_len)) return nullptr;

  // A socket file left by an earlier run is replaced; a live one (someone answers) is not.
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      ThrowErrno(env, EEXIST, "openUnixDgram", "'" + path + "' exists and is not a socket");
      return nullptr;
    }
    // Only "connection refused" means nobody is bound there any more; a live socket answers
    // (or refuses with EPERM when it is connected elsewhere, EPROTOTYPE when it is a stream).
    Fd probe(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (probe.get() < 0) {
      ThrowErrno(env, errno, "socket(AF_UNIX)", "");
      return nullptr;
    }
    bool live = true;
    if (connect(probe.get(), reinterpret_cast<struct sockaddr*>(&sun), sun_len) != 0) {
      live = errno != ECONNREFUSED && errno != ENOENT;
    }
    if (live) {
      ThrowErrno(env, EADDRINUSE, "openUnixDgram", "'" + path + "' is bound by a live socket");
      return nullptr;
    }
    if (unlink(path.c_str()) != 0 && errno != ENOENT) {
      ThrowErrno(env, errno, "unlink", path);
      return nullptr;
    }
  }
  Fd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) {
    ThrowErrno(env, errno, "socket(AF_UNIX)", "");
    return nullptr;
  }
  SetBufSize(fd.get(), SO_SNDBUFFORCE, SO_SNDBUF, kSocketBuf);
  SetBufSize(fd.get(), SO_RCVBUFFORCE, SO_RCVBUF, kSocketBuf);
  if (bind(fd.get(), reinterpret_cast<struct sockaddr*>(&sun), sun_len) != 0) {
    ThrowErrno(env, errno, "bind", path);
    return nullptr;
  }
  // No chmod here: chmod(path) would follow a symlink swapped in after bind. The caller sets the
  // mode through a descriptor that pins the file (plugins/common/socket-path.ts).
  napi_value r = MakeFdResult(env, fd.get());
  if (r) fd.release();
  return r;
}

// openUnixListener({ path }) -> { fd }: a non-blocking listening unix stream socket bound at
// path (which must not exist). Node adopts it with server.listen({ fd }); unlike a socket Node
// binds itself, closing it never unlinks a path (which may by then name someone else's file).
napi_value OpenUnixListener(napi_env env, napi_callback_info info) {
  std::string path;
  struct sockaddr_un sun;
  socklen_t sun_len;
  if (!UnixPathOption(env, info, &path, &sun, &sun_len)) return nullptr;
  Fd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) {
    ThrowErrno(env, errno, "socket(AF_UNIX)", "");
    return nullptr;
  }
  if (bind(fd.get(), reinterpret_cast<struct sockaddr*>(&sun), sun_len) != 0) {
    ThrowErrno(env, errno, "bind", path);
    return nullptr;
  }
  if (listen(fd.get(), 128) != 0) {
    ThrowErrno(env, errno, "listen", path);
    return nullptr;
  }
  napi_value r = MakeFdResult(env, fd.get());
  if (r) fd.release();
  return r;
}

// isPlainFrame(frame: Buffer, vnetHdrLen: number): boolean — cut-through's classification.
napi_value IsPlainFrameJs(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  size_t argc;
  if (!GetArgs(env, info, 2, argv, &argc)) return nullptr;
  bool is_buf = false;
  MVNET_CALL(env, napi_is_buffer(env, argv[0], &is_buf));
  uint32_t h = 0;
  if (!is_buf || napi_get_value_uint32(env, argv[1], &h) != napi_ok || h > 64) {
    ThrowType(env, "isPlainFrame(frame: Buffer, vnetHdrLen: 0..64)");
    return nullptr;
  }
  void* data = nullptr;
  size_t len = 0;
  MVNET_CALL(env, napi_get_buffer_info(env, argv[0], &data, &len));
  bool plain = len <= UINT32_MAX && IsPlainFrame(static_cast<const uint8_t*>(data), h, static_cast<uint32_t>(len));
  napi_value r;
  MVNET_CALL(env, napi_get_boolean(env, plain, &r));
  return r;
}

napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"openTun", nullptr, OpenTun, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"setPersist", nullptr, SetPersist, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"configureLink", nullptr, ConfigureLink, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"ifIndex", nullptr, IfIndex, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"removeTun", nullptr, RemoveTun, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"linkInfo", nullptr, LinkInfo, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"openPacket", nullptr, OpenPacket, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"openUnixDgram", nullptr, OpenUnixDgram, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"openUnixListener", nullptr, OpenUnixListener, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"isPlainFrame", nullptr, IsPlainFrameJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"teeFilterMatch", nullptr, TeeFilterMatchJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
  };
  MVNET_CALL(env, napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props));
  napi_value device_class = DefineDeviceClass(env);
  if (!device_class) return nullptr;
  MVNET_CALL(env, napi_set_named_property(env, exports, "Device", device_class));
  napi_value vhost_class = DefineVhostDeviceClass(env);
  if (!vhost_class) return nullptr;
  MVNET_CALL(env, napi_set_named_property(env, exports, "VhostDevice", vhost_class));
  if (!DefinePingExports(env, exports)) return nullptr;
  if (!DefineFdPassExports(env, exports)) return nullptr;
  if (!DefineNetlinkExports(env, exports)) return nullptr;
  if (!DefineLockExports(env, exports)) return nullptr;
  if (!DefineAeadExports(env, exports)) return nullptr;
  if (!DefineCsumExports(env, exports)) return nullptr;
  if (!DefineUdpExports(env, exports)) return nullptr;
  if (!DefineProcessExports(env, exports)) return nullptr;
  if (!DefineVhostTestingExports(env, exports)) return nullptr;
  return exports;
}

}  // namespace
}  // namespace mvnet

NAPI_MODULE_INIT() { return mvnet::Init(env, exports); }
