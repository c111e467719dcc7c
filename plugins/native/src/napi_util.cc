#include "napi_util.h"

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>

namespace mvnet {

bool IsExceptionPending(napi_env env) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  return pending;
}

void ThrowLastError(napi_env env, const char* what) {
  if (IsExceptionPending(env)) return;
  const napi_extended_error_info* info = nullptr;
  napi_get_last_error_info(env, &info);
  std::string msg = "mvnet_native: ";
  msg += (info && info->error_message) ? info->error_message : "Node-API call failed";
  msg += " (";
  msg += what;
  msg += ")";
  napi_throw_error(env, nullptr, msg.c_str());
}

const char* ErrnoName(int err) {
  const char* name = strerrorname_np(err);
  return name ? name : "EUNKNOWN";
}

void ThrowErrno(napi_env env, int err, const std::string& syscall, const std::string& detail) {
  if (IsExceptionPending(env)) return;
  const char* code = ErrnoName(err);
  std::string msg = syscall;
  if (!detail.empty()) {
    msg += " ";
    msg += detail;
  }
  msg += ": ";
  msg += std::strerror(err);
  msg += " (";
  msg += code;
  msg += ")";
  napi_value code_v, msg_v, error;
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_v) != napi_ok ||
      napi_create_string_utf8(env, msg.c_str(), msg.size(), &msg_v) != napi_ok ||
      napi_create_error(env, code_v, msg_v, &error) != napi_ok) {
    napi_throw_error(env, code, msg.c_str());
    return;
  }
  SetNumber(env, error, "errno", -err);
  SetString(env, error, "syscall", syscall);
  napi_throw(env, error);
}

void ThrowType(napi_env env, const std::string& message) {
  if (IsExceptionPending(env)) return;
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", message.c_str());
}

void ThrowPlain(napi_env env, const std::string& message) {
  if (IsExceptionPending(env)) return;
  napi_throw_error(env, nullptr, message.c_str());
}

bool UnixAddress(napi_env env, const std::string& path, struct sockaddr_un* sun, socklen_t* len) {
  if (path.empty() || path.size() >= sizeof(sun->sun_path) || path.find('\0') != std::string::npos) {
    ThrowType(env, "socket path must be 1-107 bytes: '" + path + "'");
    return false;
  }
  std::memset(sun, 0, sizeof(*sun));
  sun->sun_family = AF_UNIX;
  std::memcpy(sun->sun_path, path.data(), path.size());
  *len = static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + path.size() + 1);
  return true;
}

bool IsNullish(napi_env env, napi_value v) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return true;
  return t == napi_undefined || t == napi_null;
}

bool GetWriteCount(napi_env env, size_t argc, const napi_value* argv, uint32_t* n) {
  bool is_array = false;
  if (argc >= 1) MVNET_CALL_B(env, napi_is_array(env, argv[0], &is_array));
  if (!is_array) {
    ThrowType(env, "write(frames: Buffer[], count: number): frames must be an array");
    return false;
  }
  uint32_t length = 0;
  MVNET_CALL_B(env, napi_get_array_length(env, argv[0], &length));
  *n = length;
  if (argc >= 2 && !IsNullish(env, argv[1])) {
    double c = 0;
    if (napi_get_value_double(env, argv[1], &c) != napi_ok) {
      ThrowType(env, "write(frames, count): count must be a number");
      return false;
    }
    if (c < *n) *n = c > 0 ? static_cast<uint32_t>(c) : 0;
  }
  return true;
}

bool GetWriteFrames(napi_env env, napi_value frames, uint32_t n, std::vector<iovec>* out) {
  out->resize(n);
  // A scope per 64 elements: a large batch does not pile up handles until the call returns.
  napi_handle_scope scope = nullptr;
  for (uint32_t i = 0; i < n; i++) {
    if (i % 64 == 0) {
      if (scope) napi_close_handle_scope(env, scope);
      MVNET_CALL_B(env, napi_open_handle_scope(env, &scope));
    }
    napi_value el;
    bool ok = napi_get_element(env, frames, i, &el) == napi_ok;
    void* data = nullptr;
    size_t len = 0;
    napi_typedarray_type type = napi_int8_array;
    bool is_ta = false;
    if (ok) ok = napi_is_typedarray(env, el, &is_ta) == napi_ok && is_ta;
    if (ok) {
      napi_value ab;
      size_t offset;
      ok = napi_get_typedarray_info(env, el, &type, &len, &data, &ab, &offset) == napi_ok &&
           (type == napi_uint8_array || type == napi_int8_array || type == napi_uint8_clamped_array);
    }
    if (!ok) {
      napi_close_handle_scope(env, scope);
      ThrowType(env, "write(frames): frames[" + std::to_string(i) + "] is not a Buffer");
      return false;
    }
    (*out)[i].iov_base = data;
    (*out)[i].iov_len = len;
  }
  if (scope) napi_close_handle_scope(env, scope);
  return true;
}

static bool GetProp(napi_env env, napi_value obj, const char* key, napi_value* out, bool* present) {
  MVNET_CALL_B(env, napi_get_named_property(env, obj, key, out));
  *present = !IsNullish(env, *out);
  return true;
}

bool GetStringArg(napi_env env, napi_value v, const char* what, std::string* out) {
  napi_valuetype t;
  MVNET_CALL_B(env, napi_typeof(env, v, &t));
  if (t != napi_string) {
    ThrowType(env, std::string(what) + " must be a string");
    return false;
  }
  size_t len = 0;
  MVNET_CALL_B(env, napi_get_value_string_utf8(env, v, nullptr, 0, &len));
  std::string s(len, '\0');
  MVNET_CALL_B(env, napi_get_value_string_utf8(env, v, s.data(), len + 1, &len));
  s.resize(len);
  *out = std::move(s);
  return true;
}

bool GetStringProp(napi_env env, napi_value obj, const char* key, bool required, std::string* out,
                   bool* present) {
  napi_value v;
  bool has = false;
  if (!GetProp(env, obj, key, &v, &has)) return false;
  if (present) *present = has;
  if (!has) {
    if (required) {
      ThrowType(env, std::string("option '") + key + "' is required");
      return false;
    }
    return true;
  }
  return GetStringArg(env, v, (std::string("option '") + key + "'").c_str(), out);
}

bool GetBoolProp(napi_env env, napi_value obj, const char* key, bool* out) {
  napi_value v;
  bool has = false;
  if (!GetProp(env, obj, key, &v, &has)) return false;
  if (!has) return true;
  napi_valuetype t;
  MVNET_CALL_B(env, napi_typeof(env, v, &t));
  if (t != napi_boolean) {
    ThrowType(env, std::string("option '") + key + "' must be a boolean");
    return false;
  }
  MVNET_CALL_B(env, napi_get_value_bool(env, v, out));
  return true;
}

static bool GetNumberProp(napi_env env, napi_value obj, const char* key, bool required, double* out,
                          bool* has) {
  napi_value v;
  if (!GetProp(env, obj, key, &v, has)) return false;
  if (!*has) {
    if (required) {
      ThrowType(env, std::string("option '") + key + "' is required");
      return false;
    }
    return true;
  }
  napi_valuetype t;
  MVNET_CALL_B(env, napi_typeof(env, v, &t));
  if (t != napi_number) {
    ThrowType(env, std::string("option '") + key + "' must be a number");
    return false;
  }
  MVNET_CALL_B(env, napi_get_value_double(env, v, out));
  return true;
}

bool GetUint32Prop(napi_env env, napi_value obj, const char* key, bool required, uint32_t* out) {
  double d = 0;
  bool has = false;
  if (!GetNumberProp(env, obj, key, required, &d, &has)) return false;
  if (!has) return true;
  if (!(d >= 0 && d <= 4294967295.0) || d != static_cast<double>(static_cast<uint64_t>(d))) {
    ThrowType(env, std::string("option '") + key + "' must be a non-negative integer");
    return false;
  }
  *out = static_cast<uint32_t>(d);
  return true;
}

bool GetInt32Prop(napi_env env, napi_value obj, const char* key, bool required, int32_t* out) {
  double d = 0;
  bool has = false;
  if (!GetNumberProp(env, obj, key, required, &d, &has)) return false;
  if (!has) return true;
  if (!(d >= -2147483648.0 && d <= 2147483647.0) || d != static_cast<double>(static_cast<int64_t>(d))) {
    ThrowType(env, std::string("option '") + key + "' must be a 32-bit integer");
    return false;
  }
  *out = static_cast<int32_t>(d);
  return true;
}

bool GetFunctionProp(napi_env env, napi_value obj, const char* key, napi_value* out) {
  bool has = false;
  if (!GetProp(env, obj, key, out, &has)) return false;
  napi_valuetype t = napi_undefined;
  if (has) MVNET_CALL_B(env, napi_typeof(env, *out, &t));
  if (t != napi_function) {
    ThrowType(env, std::string("option '") + key + "' must be a function");
    return false;
  }
  return true;
}

bool SetNumber(napi_env env, napi_value obj, const char* key, double v) {
  napi_value n;
  MVNET_CALL_B(env, napi_create_double(env, v, &n));
  MVNET_CALL_B(env, napi_set_named_property(env, obj, key, n));
  return true;
}

bool SetString(napi_env env, napi_value obj, const char* key, const std::string& v) {
  napi_value s;
  MVNET_CALL_B(env, napi_create_string_utf8(env, v.data(), v.size(), &s));
  MVNET_CALL_B(env, napi_set_named_property(env, obj, key, s));
  return true;
}

bool SetBool(napi_env env, napi_value obj, const char* key, bool v) {
  napi_value b;
  MVNET_CALL_B(env, napi_get_boolean(env, v, &b));
  MVNET_CALL_B(env, napi_set_named_property(env, obj, key, b));
  return true;
}

bool ConstructorWithOptions(napi_env env, napi_callback_info info, const char* cls, napi_value* self, napi_value* opts) {
  napi_value new_target;
  MVNET_CALL_B(env, napi_get_new_target(env, info, &new_target));
  if (new_target == nullptr) {
    ThrowType(env, std::string(cls) + " must be called with new");
    return false;
  }
  size_t argc = 1;
  napi_value argv[1];
  MVNET_CALL_B(env, napi_get_cb_info(env, info, &argc, argv, self, nullptr));
  napi_valuetype t = napi_undefined;
  if (argc >= 1) MVNET_CALL_B(env, napi_typeof(env, argv[0], &t));
  if (t != napi_object) {
    ThrowType(env, std::string("new ") + cls + "(options): options must be an object");
    return false;
  }
  *opts = argv[0];
  return true;
}

}  // namespace mvnet
