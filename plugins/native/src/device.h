// The Device class: a non-blocking fd watched by uv_poll, read in batches into one reused
// buffer (one JS callback per batch), written straight from JS Buffers with a bounded queue for
// the times the fd would block. Bound to a switch's forwarding table (Device.Fib, bindSwitch), a
// device forwards the frames the switch would forward unchanged to a known member itself, in
// native code ("cut-through"), and reports them to the switch afterwards.
#pragma once

#include <node_api.h>

#include <cstdint>

namespace mvnet {

// Returns the constructor, or nullptr with a pending exception.
napi_value DefineDeviceClass(napi_env env);

// Whether cut-through may forward the frame as far as the switch's guard is concerned (see
// device.cc). Exported to JS as isPlainFrame for the differential test against the guard.
bool IsPlainFrame(const uint8_t* f, uint32_t h, uint32_t len);

}  // namespace mvnet
