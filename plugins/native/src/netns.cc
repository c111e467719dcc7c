#include "netns.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace mvnet {

NetnsScope::~NetnsScope() { Leave(); }

int NetnsScope::Enter(const std::string& path, const char** what) {
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
  int target = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (target < 0) {
    int err = errno;
    *what = "open network namespace";
    close(saved_);
    saved_ = -1;
    return err;
  }
  if (setns(target, CLONE_NEWNET) != 0) {
    int err = errno;
    *what = "setns";
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
