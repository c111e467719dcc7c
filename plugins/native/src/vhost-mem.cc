#include "vhost-mem.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace mvnet {
namespace vhost {

namespace {

// a + b without wrapping, or false.
inline bool AddOk(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_add_overflow(a, b, out); }

std::string Hex(uint64_t v) {
  char buf[24];
  snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

uint64_t MemTable::bytes() const {
  uint64_t total = 0;
  for (uint32_t i = 0; i < n_; i++) total += r_[i].d.size;
  return total;
}

void MemTable::Clear() {
  for (uint32_t i = 0; i < n_; i++) munmap(r_[i].map, r_[i].map_len);
  n_ = 0;
  last_ = 0;
}

bool MemTable::Set(const RegionDesc* regions, const int* fds, uint32_t n, std::string* why) {
  Clear();
  bool ok = true;
  if (n == 0 || n > kMaxRegions) {
    *why = "memory table with " + std::to_string(n) + " regions";
    ok = false;
  }
  for (uint32_t i = 0; ok && i < n; i++) {
    const RegionDesc& d = regions[i];
    const std::string name = "memory region " + std::to_string(i);
    uint64_t gpa_end, uva_end, map_len;
    if (d.size == 0 || !AddOk(d.gpa, d.size, &gpa_end) || !AddOk(d.uva, d.size, &uva_end) ||
        !AddOk(d.mmap_offset, d.size, &map_len) || map_len > static_cast<uint64_t>(INT64_MAX)) {
      *why = name + ": size " + Hex(d.size) + " at " + Hex(d.gpa) + " (offset " + Hex(d.mmap_offset) + ") overflows";
      ok = false;
      break;
    }
    for (uint32_t j = 0; j < i; j++) {
      const RegionDesc& o = regions[j];
      if (d.gpa < o.gpa + o.size && o.gpa < gpa_end) {
        *why = name + " overlaps region " + std::to_string(j);
        ok = false;
        break;
      }
    }
    if (!ok) break;
    // A mapping of a file that is later truncated raises SIGBUS on access: only memfds sealed
    // against shrinking, at least as long as announced, are mapped.
    int seals = fcntl(fds[i], F_GET_SEALS);
    if (seals < 0) {
      *why = name + ": not a sealed memfd (" + std::strerror(errno) + ")";
      ok = false;
      break;
    }
    if ((seals & F_SEAL_SHRINK) == 0) {
      *why = name + ": memfd not sealed against shrinking (F_SEAL_SHRINK)";
      ok = false;
      break;
    }
    struct stat st;
    if (fstat(fds[i], &st) != 0 || st.st_size < 0 || static_cast<uint64_t>(st.st_size) < map_len) {
      *why = name + ": memfd of " + std::to_string(st.st_size) + " bytes, smaller than the " + std::to_string(map_len) +
             " announced";
      ok = false;
      break;
    }
    void* p = mmap(nullptr, map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fds[i], 0);
    if (p == MAP_FAILED) {
      *why = name + ": mmap of " + std::to_string(map_len) + " bytes: " + std::strerror(errno);
      ok = false;
      break;
    }
    r_[n_].d = d;
    r_[n_].map = static_cast<uint8_t*>(p);
    r_[n_].map_len = map_len;
    n_++;
  }
  for (uint32_t i = 0; i < n; i++) {
    if (fds[i] >= 0) close(fds[i]);
  }
  if (!ok) Clear();
  return ok;
}

uint8_t* MemTable::Find(uint64_t addr, uint64_t len, bool uva) const {
  for (uint32_t k = 0; k < n_; k++) {
    uint32_t i = last_ + k;
    if (i >= n_) i -= n_;
    const Region& r = r_[i];
    const uint64_t base = uva ? r.d.uva : r.d.gpa;
    if (addr < base) continue;
    const uint64_t off = addr - base;  // no wrap: addr >= base
    if (off >= r.d.size || len > r.d.size - off) continue;
    last_ = i;
    return r.map + r.d.mmap_offset + off;
  }
  return nullptr;
}

}  // namespace vhost
}  // namespace mvnet
