// The Device class: a non-blocking fd watched by uv_poll, read in batches into one reused
// buffer (one JS callback per batch), written straight from JS Buffers with a bounded queue for
// the times the fd would block. Bound to a switch's forwarding table (Device.Fib, bindSwitch), a
// device forwards the frames the switch would forward unchanged to a known member itself, in
// native code ("cut-through"), and reports them to the switch afterwards.
#pragma once

#include <node_api.h>

namespace mvnet {

// Returns the constructor, or nullptr with a pending exception.
napi_value DefineDeviceClass(napi_env env);

}  // namespace mvnet
