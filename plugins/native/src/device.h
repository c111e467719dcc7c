// The Device class: a non-blocking fd watched by uv_poll, read in batches into one reused
// buffer (one JS callback per batch), written straight from JS Buffers with a bounded queue for
// the times the fd would block.
#pragma once

#include <node_api.h>

namespace mvnet {

// Returns the constructor, or nullptr with a pending exception.
napi_value DefineDeviceClass(napi_env env);

}  // namespace mvnet
