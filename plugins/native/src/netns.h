// Temporarily moving the calling thread into another network namespace.
#pragma once

#include <string>

namespace mvnet {

// Enters a network namespace for the lifetime of the object and always returns the thread to
// the namespace it was in (the destructor aborts the process if it cannot: continuing in the
// wrong namespace would silently misroute everything the daemon does afterwards).
// Opens `path` O_RDONLY | O_NONBLOCK | O_CLOEXEC if it is a network namespace file (nsfs, of type
// CLONE_NEWNET), without ever blocking or opening anything else. Returns the fd, or -1 with *err
// an errno value and, when the file is of the wrong kind, *why a one-line reason.
int OpenNetns(const std::string& path, int* err, std::string* why);

class NetnsScope {
 public:
  NetnsScope() = default;
  ~NetnsScope();
  NetnsScope(const NetnsScope&) = delete;
  NetnsScope& operator=(const NetnsScope&) = delete;

  // Empty path: no-op. Returns 0 or an errno value; *what names the step that failed, *why (when
  // not empty) says in one line why the path is not a network namespace.
  int Enter(const std::string& path, const char** what, std::string* why);
  void Leave();

 private:
  int saved_ = -1;
  bool entered_ = false;
};

}  // namespace mvnet
