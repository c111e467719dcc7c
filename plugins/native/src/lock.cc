// lockFile(path) -> { fd } | { holder }: an exclusive flock(2) on a file, so two daemons never
// share a state directory. flock locks belong to the open file description: the kernel drops
// the lock when the process dies however it dies (SIGKILL included), so a stale lock file is
// harmless and there is nothing to clean up. The fd is O_CLOEXEC so a child (tor) never
// inherits, and so never prolongs, the lock.
#include <fcntl.h>
#include <node_api.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "napi_util.h"

namespace mvnet {
namespace {

napi_value LockFile(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  MVNET_CALL(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  std::string path;
  if (argc < 1 || !GetStringArg(env, argv[0], "path", &path)) return nullptr;
  if (path.empty() || path.find('\0') != std::string::npos) {
    ThrowType(env, "lockFile(path: string): path must be non-empty");
    return nullptr;
  }
  // O_NOFOLLOW: a symlink planted at the path cannot make us create or truncate another file.
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
  if (fd < 0) {
    ThrowErrno(env, errno, "open", path);
    return nullptr;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err != 0 ? err : EINVAL, "lockFile", "'" + path + "' is not a regular file");
    return nullptr;
  }
  napi_value obj;
  MVNET_CALL(env, napi_create_object(env, &obj));
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    if (err != EWOULDBLOCK) {
      close(fd);
      ThrowErrno(env, err, "flock", path);
      return nullptr;
    }
    // The holder wrote its pid there once it had the lock.
    char buf[64];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    close(fd);
    std::string holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    if (!SetString(env, obj, "holder", holder)) return nullptr;
    return obj;
  }
  std::string pid = std::to_string(getpid()) + "\n";
  if (ftruncate(fd, 0) != 0 || pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, "write", path);
    return nullptr;
  }
  if (!SetNumber(env, obj, "fd", fd)) {
    close(fd);
    return nullptr;
  }
  return obj;
}

}  // namespace

napi_value DefineLockExports(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"lockFile", nullptr, LockFile, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
  };
  MVNET_CALL(env, napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props));
  return exports;
}

}  // namespace mvnet
