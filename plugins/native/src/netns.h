// Temporarily moving the calling thread into another network namespace.
#pragma once

#include <string>

namespace mvnet {

// Enters a network namespace for the lifetime of the object and always returns the thread to
// the namespace it was in (the destructor aborts the process if it cannot: continuing in the
// wrong namespace would silently misroute everything the daemon does afterwards).
class NetnsScope {
 public:
  NetnsScope() = default;
  ~NetnsScope();
  NetnsScope(const NetnsScope&) = delete;
  NetnsScope& operator=(const NetnsScope&) = delete;

  // Empty path: no-op. Returns 0 or an errno value; *what names the step that failed.
  int Enter(const std::string& path, const char** what);
  void Leave();

 private:
  int saved_ = -1;
  bool entered_ = false;
};

}  // namespace mvnet
