// Small helpers over the plain Node-API C interface.
#pragma once

#include <node_api.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>

#include <cstdint>
#include <string>
#include <vector>

namespace mvnet {

// Returns from the enclosing napi callback (with nullptr) when a Node-API call fails; the
// failure is turned into a pending JS exception if there is none yet.
#define MVNET_CALL(env, call)                  \
  do {                                         \
    if ((call) != napi_ok) {                   \
      ::mvnet::ThrowLastError((env), #call);   \
      return nullptr;                          \
    }                                          \
  } while (0)

// Same, for functions that return bool.
#define MVNET_CALL_B(env, call)                \
  do {                                         \
    if ((call) != napi_ok) {                   \
      ::mvnet::ThrowLastError((env), #call);   \
      return false;                            \
    }                                          \
  } while (0)

void ThrowLastError(napi_env env, const char* what);
// Throws an Error with .code = "EXXX", .errno = -err, .syscall = syscall and a readable message.
void ThrowErrno(napi_env env, int err, const std::string& syscall, const std::string& detail);
void ThrowType(napi_env env, const std::string& message);

// The start of every `new Class(options)` constructor: `this` and the options object. False
// with a TypeError pending when called without `new` or without an options object.
bool ConstructorWithOptions(napi_env env, napi_callback_info info, const char* cls, napi_value* self, napi_value* opts);
void ThrowPlain(napi_env env, const std::string& message);
bool IsExceptionPending(napi_env env);

const char* ErrnoName(int err);

// Option readers: return false with a pending exception on a type error. `present` (optional)
// tells whether the property was there; absent optional properties leave *out unchanged.
bool GetStringProp(napi_env env, napi_value obj, const char* key, bool required, std::string* out,
                   bool* present = nullptr);
bool GetBoolProp(napi_env env, napi_value obj, const char* key, bool* out);
bool GetUint32Prop(napi_env env, napi_value obj, const char* key, bool required, uint32_t* out);
bool GetInt32Prop(napi_env env, napi_value obj, const char* key, bool required, int32_t* out);
bool GetFunctionProp(napi_env env, napi_value obj, const char* key, napi_value* out);
bool GetStringArg(napi_env env, napi_value v, const char* what, std::string* out);
bool IsNullish(napi_env env, napi_value v);
// `path` as a unix socket address, *len the bytes of it to bind or connect. False with a
// TypeError pending when it is empty, holds a NUL or does not fit sun_path.
bool UnixAddress(napi_env env, const std::string& path, struct sockaddr_un* sun, socklen_t* len);

// The arguments of a device's write(frames: Buffer[], count?: number), in two steps so a caller
// can count frames it drops without looking at them: how many of `frames` to write (*n: the
// array's length, or `count` when smaller; a negative count is 0), then those frames as views
// of the Buffers' own memory (Uint8Array, Int8Array or Uint8ClampedArray) into *out, which the
// caller reuses between calls. Each returns false after throwing a TypeError.
bool GetWriteCount(napi_env env, size_t argc, const napi_value* argv, uint32_t* n);
bool GetWriteFrames(napi_env env, napi_value frames, uint32_t n, std::vector<iovec>* out);

bool SetNumber(napi_env env, napi_value obj, const char* key, double v);
bool SetString(napi_env env, napi_value obj, const char* key, const std::string& v);
bool SetBool(napi_env env, napi_value obj, const char* key, bool v);

// The native object a constructor wrapped (napi_wrap) behind the `this` of a method call, with
// the call's arguments in argv (*argc in: its room, out: how many); nullptr after throwing a
// TypeError `not_this` ("not a Device") when `this` is something else.
template <typename T>
T* UnwrapThis(napi_env env, napi_callback_info info, size_t* argc, napi_value* argv, const char* not_this) {
  napi_value self;
  if (napi_get_cb_info(env, info, argc, argv, &self, nullptr) != napi_ok) {
    ThrowLastError(env, "napi_get_cb_info");
    return nullptr;
  }
  void* p = nullptr;
  if (napi_unwrap(env, self, &p) != napi_ok || p == nullptr) {
    ThrowType(env, not_this);
    return nullptr;
  }
  return static_cast<T*>(p);
}

}  // namespace mvnet
