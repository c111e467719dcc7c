{
  "targets": [
    {
      "target_name": "mvnet_native",
      "sources": [
        "plugins/native/src/addon.cc",
        "plugins/native/src/aead.cc",
        "plugins/native/src/csum.cc",
        "plugins/native/src/device.cc",
        "plugins/native/src/fdpass.cc",
        "plugins/native/src/napi_util.cc",
        "plugins/native/src/netlink.cc",
        "plugins/native/src/netns.cc",
        "plugins/native/src/ping.cc",
        "plugins/native/src/process.cc",
        "plugins/native/src/lock.cc",
        "plugins/native/src/tee-filter.cc",
        "plugins/native/src/udp.cc",
        "plugins/native/src/vhost.cc",
        "plugins/native/src/vhost-mem.cc",
        "plugins/native/src/vhost-msg.cc",
        "plugins/native/src/vhost-ring.cc",
        "plugins/native/src/vhost-testing.cc"
      ],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags_cc": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]
    }
  ]
}
