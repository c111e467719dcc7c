#include "tee-filter.h"

#include "napi_util.h"

namespace mvnet {

namespace {

enum Op : uint32_t { kTrue = 1, kFalse = 2, kAnd = 3, kOr = 4, kNot = 5, kNeed = 6, kCmp = 7, kCmpL4 = 8 };

inline uint32_t OpOf(uint32_t h) { return h & 0xff; }
inline uint32_t SizeOf(uint32_t h) { return (h >> 8) & 0xff; }
inline uint32_t WordsOf(uint32_t h) { return h >> 16; }

// Checks the node at p[at] and returns its length in words, or 0 when malformed.
uint32_t Check(const std::vector<uint32_t>& p, uint32_t at, uint32_t end, uint32_t depth) {
  if (depth > kFilterMaxDepth || at >= end) return 0;
  const uint32_t h = p[at];
  const uint32_t words = WordsOf(h);
  if (words == 0 || words > end - at) return 0;
  const uint32_t op = OpOf(h);
  if (op != kCmp && op != kCmpL4 && SizeOf(h) != 0) return 0;
  switch (op) {
    case kTrue:
    case kFalse:
      return words == 1 ? 1 : 0;
    case kNot: {
      const uint32_t c = Check(p, at + 1, at + words, depth + 1);
      return c != 0 && 1 + c == words ? words : 0;
    }
    case kAnd:
    case kOr: {
      const uint32_t l = Check(p, at + 1, at + words, depth + 1);
      if (l == 0) return 0;
      const uint32_t r = Check(p, at + 1 + l, at + words, depth + 1);
      return r != 0 && 1 + l + r == words ? words : 0;
    }
    case kNeed:
      return words == 3 && p[at + 1] <= kFilterMaxOffset && p[at + 2] >= 1 && p[at + 2] <= 16 ? 3 : 0;
    case kCmp: {
      const uint32_t s = SizeOf(h);
      return words == 5 && (s == 1 || s == 2 || s == 4) && p[at + 1] <= kFilterMaxOffset ? 5 : 0;
    }
    case kCmpL4: {
      const uint32_t s = SizeOf(h);
      return words == 6 && (s == 1 || s == 2 || s == 4) && p[at + 1] <= kFilterMaxOffset && p[at + 2] <= kFilterMaxOffset ? 6 : 0;
    }
    default:
      return 0;
  }
}

// Big-endian read of `size` bytes at `off`: false when any is past the end. Offsets are at most
// 2 * kFilterMaxOffset + 60, so the sum cannot overflow.
inline bool Load(const uint8_t* f, uint32_t len, uint32_t off, uint32_t size, uint32_t* v) {
  if (off > len || size > len - off) return false;
  uint32_t x = 0;
  for (uint32_t i = 0; i < size; i++) x = (x << 8) | f[off + i];
  *v = x;
  return true;
}

int Cmp(const uint32_t* n, uint32_t size, uint32_t off, const uint8_t* f, uint32_t len) {
  uint32_t v;
  if (!Load(f, len, off, size, &v)) return -1;
  v &= n[0];
  return v >= n[1] && v <= n[2] ? 1 : 0;
}

}  // namespace

bool ValidateFilter(const std::vector<uint32_t>& p) {
  if (p.empty() || p.size() > kFilterMaxWords) return false;
  const uint32_t end = static_cast<uint32_t>(p.size());
  return Check(p, 0, end, 1) == end;
}

int RunFilter(const uint32_t* p, const uint8_t* f, uint32_t len) {
  const uint32_t h = p[0];
  switch (OpOf(h)) {
    case kTrue:
      return 1;
    case kFalse:
      return 0;
    case kNot: {
      const int a = RunFilter(p + 1, f, len);
      return a == -1 ? -1 : 1 - a;
    }
    case kAnd: {
      const int a = RunFilter(p + 1, f, len);
      return a != 1 ? a : RunFilter(p + 1 + WordsOf(p[1]), f, len);
    }
    case kOr: {
      const int a = RunFilter(p + 1, f, len);
      return a != 0 ? a : RunFilter(p + 1 + WordsOf(p[1]), f, len);
    }
    case kNeed:
      return p[1] <= len && p[2] <= len - p[1] ? 1 : -1;
    case kCmp:
      return Cmp(p + 2, SizeOf(h), p[1], f, len);
    case kCmpL4: {
      uint32_t ihl;
      if (!Load(f, len, p[1], 1, &ihl)) return -1;
      return Cmp(p + 3, SizeOf(h), p[1] + 4 * (ihl & 0xf) + p[2], f, len);
    }
    default:
      return -1;  // not reached: validated
  }
}

bool ReadFilterProgram(napi_env env, napi_value v, std::vector<uint32_t>* out) {
  bool is_ta = false;
  napi_typedarray_type type = napi_int8_array;
  size_t n = 0;
  void* data = nullptr;
  napi_value ab;
  size_t ab_off;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, v, &type, &n, &data, &ab, &ab_off) != napi_ok || type != napi_uint32_array ||
      n > kFilterMaxWords) {
    ThrowType(env, "a filter program is a Uint32Array");
    return false;
  }
  // A copy: JS may change or free its array, the device runs this one.
  const uint32_t* w = static_cast<const uint32_t*>(data);
  out->assign(w, w + n);
  if (!ValidateFilter(*out)) {
    out->clear();
    ThrowType(env, "malformed filter program");
    return false;
  }
  return true;
}

napi_value TeeFilterMatchJs(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  MVNET_CALL(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  std::vector<uint32_t> prog;
  if (argc < 2 || !ReadFilterProgram(env, argv[0], &prog)) {
    if (!IsExceptionPending(env)) ThrowType(env, "teeFilterMatch(program: Uint32Array, frame: Uint8Array)");
    return nullptr;
  }
  bool is_ta = false;
  napi_typedarray_type type = napi_int8_array;
  size_t n = 0;
  void* data = nullptr;
  napi_value ab;
  size_t ab_off;
  if (napi_is_typedarray(env, argv[1], &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, argv[1], &type, &n, &data, &ab, &ab_off) != napi_ok || type != napi_uint8_array ||
      n > 0xffffffffu) {
    ThrowType(env, "teeFilterMatch(program: Uint32Array, frame: Uint8Array)");
    return nullptr;
  }
  napi_value r;
  MVNET_CALL(env, napi_get_boolean(env, RunFilter(prog.data(), static_cast<const uint8_t*>(data), static_cast<uint32_t>(n)) == 1, &r));
  return r;
}

}  // namespace mvnet
