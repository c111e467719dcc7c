// The guest's memory as a vhost-user front-end describes it (SET_MEM_TABLE): regions of guest
// physical addresses, each backed by a sealed memfd mapped MAP_SHARED here. Every address the
// guest or the front-end gives is translated through MemTable, bounds-checked without overflow;
// a range that does not lie inside one region is refused.
#pragma once

#include <cstdint>
#include <string>

namespace mvnet {
namespace vhost {

// One region as SET_MEM_TABLE carries it (struct vhost_user_memory_region).
struct RegionDesc {
  uint64_t gpa;          // guest physical address
  uint64_t size;
  uint64_t uva;          // the front-end's (QEMU's) own address of it: SET_VRING_ADDR uses these
  uint64_t mmap_offset;  // where the region starts in the fd
};

constexpr uint32_t kMaxRegions = 8;  // VHOST_MEMORY_BASELINE_NREGIONS

class MemTable {
 public:
  MemTable() = default;
  ~MemTable() { Clear(); }
  MemTable(const MemTable&) = delete;
  MemTable& operator=(const MemTable&) = delete;

  // Replaces the table (the old one is unmapped first). Takes every fd in fds[0, n) and closes
  // it whatever happens (a mapping outlives its fd). False, with the table empty and `why`
  // set, when a region or its fd is refused.
  bool Set(const RegionDesc* regions, const int* fds, uint32_t n, std::string* why);
  void Clear();

  // Host address of guest physical [gpa, gpa + len) when it lies inside one region, else null.
  uint8_t* Gpa(uint64_t gpa, uint64_t len) const { return Find(gpa, len, false); }
  // Host address of the front-end's [uva, uva + len) when it lies inside one region, else null.
  uint8_t* Uva(uint64_t uva, uint64_t len) const { return Find(uva, len, true); }

  uint32_t count() const { return n_; }
  uint64_t bytes() const;

 private:
  struct Region {
    RegionDesc d;
    uint8_t* map;      // mmap of the fd from offset 0 (so mmap_offset needs no alignment)
    uint64_t map_len;  // mmap_offset + size
  };
  uint8_t* Find(uint64_t addr, uint64_t len, bool uva) const;

  Region r_[kMaxRegions];
  uint32_t n_ = 0;
  mutable uint32_t last_ = 0;  // the region the last lookup hit (most hit the same one)
};

}  // namespace vhost
}  // namespace mvnet
