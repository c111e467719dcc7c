// The capture filter's program (daemon/capture/filter.ts compileFilterProgram documents the
// encoding): checked once by ValidateFilter, then run by RunFilter on each teed frame before
// it is copied, so a frame the capture would filter out costs no copy.
#pragma once

#include <node_api.h>

#include <cstdint>
#include <vector>

namespace mvnet {

// filter.ts PROG_MAX_WORDS, PROG_MAX_DEPTH, PROG_MAX_OFFSET.
constexpr uint32_t kFilterMaxWords = 4096;
constexpr uint32_t kFilterMaxDepth = 128;
constexpr uint32_t kFilterMaxOffset = 0xffff;

// True when `p` is one well-formed node tree within the limits: RunFilter then needs no checks
// on the program itself, only on the frame.
bool ValidateFilter(const std::vector<uint32_t>& p);

// 1 match, 0 no match, -1 a read past the end of the frame (the packet is rejected).
int RunFilter(const uint32_t* p, const uint8_t* f, uint32_t len);

// Reads a Uint32Array program into `out` and validates it; false with a TypeError pending.
bool ReadFilterProgram(napi_env env, napi_value v, std::vector<uint32_t>* out);

// teeFilterMatch(program: Uint32Array, frame: Uint8Array): boolean — the interpreter alone, for tests.
napi_value TeeFilterMatchJs(napi_env env, napi_callback_info info);

}  // namespace mvnet
