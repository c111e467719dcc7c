// The Internet checksum's one's-complement sum (RFC 1071) over a byte range, for the checksums
// JavaScript would otherwise compute on the data path (frames to VMs without a virtio-net
// header, at up to 64 KiB each at MTU 65520).
//
//   onesSum(buf: Uint8Array, start: number, end: number) -> number
//       the sum of buf[start, end) as big-endian 16-bit words paired from `start` (an odd last
//       byte is padded with zero), folded to 16 bits (0..0xffff); not complemented.
//       Throws a TypeError unless 0 <= start <= end <= buf.length.
//
// Summed 8 bytes at a time in native byte order into a 64-bit accumulator (the sum commutes
// with byte swapping, RFC 1071 §2(B)), then folded and swapped back on little-endian hosts.
#include <node_api.h>

#include <cstdint>
#include <cstring>

#include "napi_util.h"

namespace mvnet {
namespace {

uint16_t Fold(uint64_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}

uint16_t OnesSum(const uint8_t* p, size_t n) {
  uint64_t sum = 0;
  // Two independent accumulators of 32-bit halves: no carries lost below 2^32 words.
  uint64_t a = 0, b = 0;
  while (n >= 16) {
    uint64_t w0, w1;
    std::memcpy(&w0, p, 8);
    std::memcpy(&w1, p + 8, 8);
    a += (w0 & 0xffffffffu) + (w0 >> 32);
    b += (w1 & 0xffffffffu) + (w1 >> 32);
    p += 16;
    n -= 16;
  }
  sum = a + b;
  while (n >= 2) {
    uint16_t w;
    std::memcpy(&w, p, 2);
    sum += w;
    p += 2;
    n -= 2;
  }
  if (n == 1) {
    // The last byte is the high byte of a big-endian word: in native order, where it lands.
    uint8_t last[2] = {p[0], 0};
    uint16_t w;
    std::memcpy(&w, last, 2);
    sum += w;
  }
  uint16_t folded = Fold(sum);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  folded = static_cast<uint16_t>((folded << 8) | (folded >> 8));
#endif
  return folded;
}

napi_value OnesSumJs(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  size_t argc = 3;
  MVNET_CALL(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  bool is_ta = false;
  if (argc >= 1) MVNET_CALL(env, napi_is_typedarray(env, argv[0], &is_ta));
  napi_typedarray_type type = napi_int8_array;
  size_t length = 0;
  void* data = nullptr;
  if (is_ta) MVNET_CALL(env, napi_get_typedarray_info(env, argv[0], &type, &length, &data, nullptr, nullptr));
  double start = -1, end = -1;
  if (!is_ta || type != napi_uint8_array || argc < 3 || napi_get_value_double(env, argv[1], &start) != napi_ok ||
      napi_get_value_double(env, argv[2], &end) != napi_ok || !(start >= 0) || !(end >= start) ||
      end > static_cast<double>(length) || start != static_cast<double>(static_cast<size_t>(start)) ||
      end != static_cast<double>(static_cast<size_t>(end))) {
    ThrowType(env, "onesSum(buf: Uint8Array, start, end) with 0 <= start <= end <= buf.length");
    return nullptr;
  }
  const size_t s = static_cast<size_t>(start);
  const size_t e = static_cast<size_t>(end);
  napi_value r;
  MVNET_CALL(env, napi_create_uint32(env, OnesSum(static_cast<const uint8_t*>(data) + s, e - s), &r));
  return r;
}

}  // namespace

napi_value DefineCsumExports(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"onesSum", nullptr, OnesSumJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
  };
  MVNET_CALL(env, napi_define_properties(env, exports, 1, props));
  return exports;
}

}  // namespace mvnet
