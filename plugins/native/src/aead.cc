// The link protocol's transport AEAD (ChaCha20-Poly1305, RFC 8439, with WireGuard's nonce: 4
// zero bytes and the 64-bit counter little-endian), over the OpenSSL 3 that the node binary
// carries and exports; the headers come with Node's (include/node/openssl). Each key handle
// owns one EVP_CIPHER_CTX, keyed once at import; a message only sets the nonce. Per call the
// one allocation is the output Buffer.
//
//   aeadImportKey(raw: 32-byte Buffer) -> handle (an external; the finalizer frees the context,
//                                         which clears the key schedule)
//   aeadSeal(handle, counter: bigint, payload, trailer, header) -> Buffer
//       header ‖ encrypt(payload ‖ trailer) ‖ tag, written into one Buffer
//   aeadOpen(handle, counter: bigint, sealed: ciphertext ‖ tag) -> Buffer (plaintext) | null
//       null when the tag does not verify or `sealed` is shorter than a tag
//   aeadFreeKey(handle)                  frees the context now; the handle then throws
//
// Built without the OpenSSL headers (not expected: Node's headers include them), the module
// exports nothing and the daemon keeps node:crypto.
#include <node_api.h>

#include <cstdint>
#include <cstring>

#include "napi_util.h"

#if defined(__has_include)
#if __has_include(<openssl/evp.h>)
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>
#if OPENSSL_VERSION_MAJOR >= 3
#define MVNET_HAVE_AEAD 1
#endif
#endif
#endif

namespace mvnet {

#ifdef MVNET_HAVE_AEAD
namespace {

constexpr size_t kKeyLen = 32;
constexpr size_t kNonceLen = 12;
constexpr size_t kTagLen = 16;
// Far above any message (64 KiB + a little) and below INT_MAX, which EVP lengths are.
constexpr size_t kMaxLen = size_t{1} << 28;

// Marks the externals this file made, so a foreign external is refused rather than cast.
constexpr napi_type_tag kKeyTag = {0x6d766e65742d6165ULL, 0x61642d6b65792d31ULL};

struct AeadKey {
  EVP_CIPHER_CTX* ctx;
};

// Fetched once per process (a static local: thread-safe when the addon is loaded in workers too).
EVP_CIPHER* Cipher() {
  static EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, "ChaCha20-Poly1305", nullptr);
  return cipher;
}

void FreeKey(AeadKey* k) {
  // Frees the provider context with OPENSSL_clear_free: the key schedule is zeroed.
  if (k->ctx) EVP_CIPHER_CTX_free(k->ctx);
  k->ctx = nullptr;
}

void FinalizeKey(napi_env env, void* data, void* hint) {
  auto* k = static_cast<AeadKey*>(data);
  FreeKey(k);
  delete k;
}

// The key behind `v`, or nullptr with a TypeError pending.
AeadKey* GetKey(napi_env env, napi_value v, const char* fn) {
  bool tagged = false;
  void* data = nullptr;
  if (napi_check_object_type_tag(env, v, &kKeyTag, &tagged) != napi_ok || !tagged ||
      napi_get_value_external(env, v, &data) != napi_ok || data == nullptr) {
    ThrowType(env, std::string(fn) + ": the key is not a handle from aeadImportKey");
    return nullptr;
  }
  auto* k = static_cast<AeadKey*>(data);
  if (k->ctx == nullptr) {
    ThrowType(env, std::string(fn) + ": the key was freed");
    return nullptr;
  }
  return k;
}

// The bytes of a Buffer (or other ArrayBufferView); false with a TypeError pending.
bool GetBytes(napi_env env, napi_value v, const char* fn, const char* what, const uint8_t** data, size_t* len) {
  void* d = nullptr;
  size_t n = 0;
  bool is_buf = false;
  if (napi_is_buffer(env, v, &is_buf) != napi_ok || !is_buf || napi_get_buffer_info(env, v, &d, &n) != napi_ok) {
    ThrowType(env, std::string(fn) + ": " + what + " must be a Buffer");
    return false;
  }
  if (n > kMaxLen) {
    ThrowType(env, std::string(fn) + ": " + what + " is too long");
    return false;
  }
  *data = static_cast<const uint8_t*>(d);
  *len = n;
  return true;
}

bool GetCounter(napi_env env, napi_value v, const char* fn, uint8_t nonce[kNonceLen]) {
  uint64_t c = 0;
  bool lossless = false;
  if (napi_get_value_bigint_uint64(env, v, &c, &lossless) != napi_ok || !lossless) {
    ThrowType(env, std::string(fn) + ": the counter must be a bigint from 0 to 2^64-1");
    return false;
  }
  std::memset(nonce, 0, 4);
  for (int i = 0; i < 8; i++) nonce[4 + i] = static_cast<uint8_t>(c >> (8 * i));
  return true;
}

// An OpenSSL call failed (not expected after a key imported): the error queue is cleared, so
// that node:crypto's next call does not find our errors.
napi_value Fail(napi_env env, const char* what) {
  ERR_clear_error();
  ThrowPlain(env, std::string("chacha20-poly1305: ") + what + " failed");
  return nullptr;
}

napi_value ImportKey(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  MVNET_CALL(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  const uint8_t* raw = nullptr;
  size_t len = 0;
  if (argc < 1 || !GetBytes(env, argv[0], "aeadImportKey", "the key", &raw, &len)) {
    if (!IsExceptionPending(env)) ThrowType(env, "aeadImportKey(raw: Buffer)");
    return nullptr;
  }
  if (len != kKeyLen) {
    ThrowType(env, "aeadImportKey: a key is 32 bytes, not " + std::to_string(len));
    return nullptr;
  }
  EVP_CIPHER* cipher = Cipher();
  if (cipher == nullptr) return Fail(env, "EVP_CIPHER_fetch (not available in this OpenSSL, FIPS mode?)");
  auto* k = new AeadKey{EVP_CIPHER_CTX_new()};
  if (k->ctx == nullptr || EVP_CipherInit_ex(k->ctx, cipher, nullptr, raw, nullptr, 1) != 1) {
    FreeKey(k);
    delete k;
    return Fail(env, "EVP_CipherInit_ex");
  }
  napi_value ext;
  if (napi_create_external(env, k, FinalizeKey, nullptr, &ext) != napi_ok) {
    FreeKey(k);
    delete k;
    ThrowLastError(env, "napi_create_external");
    return nullptr;
  }
  // From here the finalizer owns k.
  MVNET_CALL(env, napi_type_tag_object(env, ext, &kKeyTag));
  return ext;
}

napi_value FreeKeyJs(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  MVNET_CALL(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  if (argc < 1) {
    ThrowType(env, "aeadFreeKey(key)");
    return nullptr;
  }
  AeadKey* k = GetKey(env, argv[0], "aeadFreeKey");
  if (k) FreeKey(k);
  return nullptr;
}

// aeadSeal(key, counter, payload, trailer, header[, out]): into `out` when given (exactly
// header + payload + trailer + 16 bytes long; returns undefined), else into a new Buffer.
napi_value Seal(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  MVNET_CALL(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  if (argc < 5) {
    ThrowType(env, "aeadSeal(key, counter: bigint, payload: Buffer, trailer: Buffer, header: Buffer, out?: Buffer)");
    return nullptr;
  }
  uint8_t nonce[kNonceLen];
  const uint8_t *payload = nullptr, *trailer = nullptr, *header = nullptr;
  size_t plen = 0, tlen = 0, hlen = 0;
  AeadKey* k = GetKey(env, argv[0], "aeadSeal");
  if (!k || !GetCounter(env, argv[1], "aeadSeal", nonce) ||
      !GetBytes(env, argv[2], "aeadSeal", "the payload", &payload, &plen) ||
      !GetBytes(env, argv[3], "aeadSeal", "the trailer", &trailer, &tlen) ||
      !GetBytes(env, argv[4], "aeadSeal", "the header", &header, &hlen)) {
    return nullptr;
  }
  // Each is at most kMaxLen (2^28): the sum fits an int.
  const size_t total = hlen + plen + tlen + kTagLen;
  napi_value result = nullptr;
  uint8_t* out = nullptr;
  if (argc >= 6) {
    const uint8_t* o = nullptr;
    size_t olen = 0;
    if (!GetBytes(env, argv[5], "aeadSeal", "out", &o, &olen)) return nullptr;
    if (olen != total) {
      ThrowType(env, "aeadSeal: out is " + std::to_string(olen) + " bytes, not " + std::to_string(total));
      return nullptr;
    }
    // No overlap with an input: the header is copied first and the cipher writes ahead of its reads.
    const uint8_t* ins[3] = {payload, trailer, header};
    const size_t lens[3] = {plen, tlen, hlen};
    for (int i = 0; i < 3; i++) {
      if (lens[i] > 0 && ins[i] < o + olen && o < ins[i] + lens[i]) {
        ThrowType(env, "aeadSeal: out overlaps an input");
        return nullptr;
      }
    }
    out = const_cast<uint8_t*>(o);
  } else {
    void* out_v = nullptr;
    MVNET_CALL(env, napi_create_buffer(env, total, &out_v, &result));
    out = static_cast<uint8_t*>(out_v);
  }
  if (hlen > 0) std::memcpy(out, header, hlen);
  uint8_t* p = out + hlen;
  int n = 0;
  if (EVP_CipherInit_ex(k->ctx, nullptr, nullptr, nullptr, nonce, 1) != 1) return Fail(env, "EVP_CipherInit_ex");
  if (plen > 0) {
    if (EVP_CipherUpdate(k->ctx, p, &n, payload, static_cast<int>(plen)) != 1 || n != static_cast<int>(plen)) {
      return Fail(env, "EVP_CipherUpdate");
    }
    p += plen;
  }
  if (tlen > 0) {
    if (EVP_CipherUpdate(k->ctx, p, &n, trailer, static_cast<int>(tlen)) != 1 || n != static_cast<int>(tlen)) {
      return Fail(env, "EVP_CipherUpdate");
    }
    p += tlen;
  }
  if (EVP_CipherFinal_ex(k->ctx, p, &n) != 1 || n != 0) return Fail(env, "EVP_CipherFinal_ex");
  if (EVP_CIPHER_CTX_ctrl(k->ctx, EVP_CTRL_AEAD_GET_TAG, static_cast<int>(kTagLen), p) != 1) {
    return Fail(env, "EVP_CTRL_AEAD_GET_TAG");
  }
  return result;
}

// aeadOpen(key, counter, sealed[, out]) -> plaintext | null; with `out` (exactly sealed - 16
// bytes long) -> true | false, the plaintext in `out` (zeroed when false).
napi_value Open(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  MVNET_CALL(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  if (argc < 3) {
    ThrowType(env, "aeadOpen(key, counter: bigint, sealed: Buffer)");
    return nullptr;
  }
  uint8_t nonce[kNonceLen];
  const uint8_t* sealed = nullptr;
  size_t slen = 0;
  AeadKey* k = GetKey(env, argv[0], "aeadOpen");
  if (!k || !GetCounter(env, argv[1], "aeadOpen", nonce) ||
      !GetBytes(env, argv[2], "aeadOpen", "the sealed message", &sealed, &slen)) {
    return nullptr;
  }
  const bool into = argc >= 4;
  uint8_t* out = nullptr;
  size_t olen = 0;
  if (into) {
    const uint8_t* o = nullptr;
    if (!GetBytes(env, argv[3], "aeadOpen", "out", &o, &olen)) return nullptr;
    if (slen >= kTagLen && olen != slen - kTagLen) {
      ThrowType(env, "aeadOpen: out is " + std::to_string(olen) + " bytes, not " + std::to_string(slen - kTagLen));
      return nullptr;
    }
    // In place (out == sealed) is fine for the cipher; a shifted overlap is not.
    if (olen > 0 && o != sealed && o < sealed + slen && sealed < o + olen) {
      ThrowType(env, "aeadOpen: out overlaps the sealed message");
      return nullptr;
    }
    out = const_cast<uint8_t*>(o);
  }
  napi_value nul;
  if (into) {
    MVNET_CALL(env, napi_get_boolean(env, false, &nul));
  } else {
    MVNET_CALL(env, napi_get_null(env, &nul));
  }
  if (slen < kTagLen) return nul;
  const size_t len = slen - kTagLen;
  napi_value result;
  if (into) {
    MVNET_CALL(env, napi_get_boolean(env, true, &result));
  } else {
    void* out_v = nullptr;
    MVNET_CALL(env, napi_create_buffer(env, len, &out_v, &result));
    out = static_cast<uint8_t*>(out_v);
  }
  // A copy of the tag: the ctrl wants a mutable pointer, and `sealed` is the caller's.
  uint8_t tag[kTagLen];
  std::memcpy(tag, sealed + len, kTagLen);
  // Unauthenticated plaintext goes nowhere, and is not left lying in memory either.
  auto wipe = [&]() {
    if (len > 0) OPENSSL_cleanse(out, len);
  };
  int n = 0;
  if (EVP_CipherInit_ex(k->ctx, nullptr, nullptr, nullptr, nonce, 0) != 1) return Fail(env, "EVP_CipherInit_ex");
  if (len > 0 &&
      (EVP_CipherUpdate(k->ctx, out, &n, sealed, static_cast<int>(len)) != 1 || n != static_cast<int>(len))) {
    wipe();
    return Fail(env, "EVP_CipherUpdate");
  }
  if (EVP_CIPHER_CTX_ctrl(k->ctx, EVP_CTRL_AEAD_SET_TAG, static_cast<int>(kTagLen), tag) != 1) {
    wipe();
    return Fail(env, "EVP_CTRL_AEAD_SET_TAG");
  }
  uint8_t scratch[16];
  if (EVP_CipherFinal_ex(k->ctx, scratch, &n) != 1) {
    wipe();
    // A forged message may have left an error on the queue; it is not ours to leave there.
    ERR_clear_error();
    return nul;
  }
  return result;
}

}  // namespace

napi_value DefineAeadExports(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"aeadImportKey", nullptr, ImportKey, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"aeadFreeKey", nullptr, FreeKeyJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"aeadSeal", nullptr, Seal, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"aeadOpen", nullptr, Open, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
  };
  MVNET_CALL(env, napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props));
  return exports;
}

#else  // !MVNET_HAVE_AEAD

napi_value DefineAeadExports(napi_env env, napi_value exports) { return exports; }

#endif

}  // namespace mvnet
