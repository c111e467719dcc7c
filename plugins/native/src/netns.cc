#include "netns.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace mvnet {

namespace {

std::string FileKind(const struct stat& st) {
  if (S_ISFIFO(st.st_mode)) return "a FIFO";
  if (S_ISREG(st.st_mode)) return "a regular file";
  if (S_ISDIR(st.st_mode)) return "a directory";
  if (S_ISCHR(st.st_mode)) return "a character device";
  if (S_ISBLK(st.st_mode)) return "a block device";
  if (S_ISSOCK(st.st_mode)) return "a socket";
  return "not a namespace file";
}

}  // namespace

int OpenNetns(const std::string& path, int* err, std::string* why) {
  why->clear();
  // O_PATH opens nothing: no FIFO open that waits for a writer, no device open with side
  // effects. The file is checked through it and only then opened for real, via the same inode.
  int pfd = open(path.c_str(), O_PATH | O_CLOEXEC);
  if (pfd < 0) {
    *err = errno;
    return -1;
  }
  struct statfs sfs;
  if (fstatfs(pfd, &sfs) != 0) {
    *err = errno;
    close(pfd);
    return -1;
  }
  if (sfs.f_type != static_cast<decltype(sfs.f_type)>(NSFS_MAGIC)) {
    struct stat st;
    std::string kind = fstat(pfd, &st) == 0 ? FileKind(st) : "not a namespace file";
    close(pfd);
    *err = EINVAL;
    *why = path + " is not a network namespace (" + kind + ")";
    return -1;
  }
  std::string self = "/proc/self/fd/" + std::to_string(pfd);
  int fd = open(self.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  *err = errno;
  close(pfd);
  if (fd < 0) return -1;
  int type = ioctl(fd, NS_GET_NSTYPE);
  // Kernels before 4.11 lack NS_GET_NSTYPE (ENOTTY); setns(CLONE_NEWNET) then checks the type.
  if (type >= 0 && type != CLONE_NEWNET) {
    close(fd);
    *err = EINVAL;
    *why = path + " is a namespace, but not a network namespace";
    return -1;
  }
  return fd;
}

NetnsScope::~NetnsScope() { Leave(); }

int NetnsScope::Enter(const std::string& path, const char** what, std::string* why) {
  why->clear();
  if (path.empty()) return 0;
  if (entered_) {
    *what = "netns already entered";
    return EBUSY;
  }
  saved_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (saved_ < 0) {
    int err = errno;
    *what = "open /proc/thread-self/ns/net";
    return err;
  }
  int err = 0;
  int target = OpenNetns(path, &err, why);
  if (target < 0) {
    *what = "open network namespace";
    close(saved_);
    saved_ = -1;
    return err;
  }
  if (setns(target, CLONE_NEWNET) != 0) {
    err = errno;
    *what = "setns";
    if (err == EINVAL) *why = path + " is not a network namespace";
    close(target);
    close(saved_);
    saved_ = -1;
    return err;
  }
  close(target);
  entered_ = true;
  return 0;
}

void NetnsScope::Leave() {
  if (entered_) {
    if (setns(saved_, CLONE_NEWNET) != 0) {
      std::fprintf(stderr, "mvnet_native: cannot return to the original network namespace: %s\n",
                   std::strerror(errno));
      std::abort();
    }
    entered_ = false;
  }
  if (saved_ >= 0) {
    close(saved_);
    saved_ = -1;
  }
}

}  // namespace mvnet
