// The VhostDevice class (vhost.cc): a vhost-user back-end for one QEMU virtio-net device. The
// control protocol on a listening unix socket (vhost-msg), the guest's memory mapped from sealed
// memfds (vhost-mem), its RX and TX split rings served on the event loop (vhost-ring).
#pragma once

#include <node_api.h>

namespace mvnet {

// Returns the constructor, or nullptr with a pending exception.
napi_value DefineVhostDeviceClass(napi_env env);

}  // namespace mvnet
