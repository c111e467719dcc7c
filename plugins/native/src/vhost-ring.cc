#include "vhost-ring.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace mvnet {
namespace vhost {

namespace {

// Split ring layout (virtio 1.x, 2.6): descriptors 16 bytes each; avail: flags, idx, ring[num]
// (u16); used: flags, idx, ring[num] of {id u32, len u32}. Little-endian (virtio 1 and x86).
constexpr uint16_t kDescNext = 1;
constexpr uint16_t kDescWrite = 2;
constexpr uint16_t kDescIndirect = 4;
constexpr uint16_t kAvailNoInterrupt = 1;
constexpr uint16_t kUsedNoNotify = 1;

inline uint16_t Load16(const uint8_t* p) { return __atomic_load_n(reinterpret_cast<const uint16_t*>(p), __ATOMIC_RELAXED); }
inline uint64_t Load64(const uint8_t* p) { return __atomic_load_n(reinterpret_cast<const uint64_t*>(p), __ATOMIC_RELAXED); }
inline void Store16(uint8_t* p, uint16_t v) { __atomic_store_n(reinterpret_cast<uint16_t*>(p), v, __ATOMIC_RELAXED); }
inline void Store32(uint8_t* p, uint32_t v) { __atomic_store_n(reinterpret_cast<uint32_t*>(p), v, __ATOMIC_RELAXED); }

std::string Hex(uint64_t v) {
  char buf[24];
  snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

bool Ring::Map(const MemTable& mem, std::string* why) {
  Unmap();
  if (num == 0 || !have_addr || mem.count() == 0) return false;
  // num <= 32768: none of these sizes overflow.
  // With EVENT_IDX each ring ends with one more u16: used_event (avail) and avail_event (used).
  const uint64_t ev = event_idx ? 2 : 0;
  const uint64_t dsize = 16ull * num, asize = 4 + 2ull * num + ev, usize = 4 + 8ull * num + ev;
  if ((desc_uva & 15) != 0 || (avail_uva & 1) != 0 || (used_uva & 3) != 0) {
    *why = "ring addresses misaligned (desc " + Hex(desc_uva) + ", avail " + Hex(avail_uva) + ", used " + Hex(used_uva) + ")";
    return false;
  }
  uint8_t* d = mem.Uva(desc_uva, dsize);
  uint8_t* a = mem.Uva(avail_uva, asize);
  uint8_t* u = mem.Uva(used_uva, usize);
  if (d == nullptr || a == nullptr || u == nullptr) {
    *why = std::string("ring ") + (d == nullptr ? "descriptor table" : a == nullptr ? "avail ring" : "used ring") +
           " outside guest memory";
    return false;
  }
  // The ring's words are read and written atomically: aligned in this mapping too.
  if ((reinterpret_cast<uintptr_t>(d) & 15) != 0 || (reinterpret_cast<uintptr_t>(a) & 1) != 0 ||
      (reinterpret_cast<uintptr_t>(u) & 3) != 0) {
    *why = "ring addresses misaligned in the memory region";
    return false;
  }
  desc_ = d;
  avail_ = a;
  used_ = u;
  held_ = 0;
  short_.valid = false;
  if (sync) SyncIndices();
  return true;
}

void Ring::SyncIndices() {
  sync = false;
  held_ = 0;
  short_.valid = false;
  last_avail_ = used_idx_ = published_ = base;
  if (used_ == nullptr) return;
  const uint16_t u = Load16(used_ + 2);
  if (u != base) last_avail_ = used_idx_ = published_ = u;
}

int Ring::Pending(std::string* why) {
  const uint16_t idx = __atomic_load_n(reinterpret_cast<const uint16_t*>(avail_ + 2), __ATOMIC_ACQUIRE);
  seen_idx_ = idx;
  const uint16_t n = static_cast<uint16_t>(idx - last_avail_);
  if (n > num) {
    *why = "avail index moved by " + std::to_string(n) + " (ring of " + std::to_string(num) + ")";
    return -1;
  }
  return n;
}

PopResult Ring::Pop(const MemTable& mem, bool writable, std::vector<Seg>* segs, Chain* chain, std::string* why) {
  int pending = Pending(why);
  if (pending < 0) return PopResult::kViolation;
  if (pending == 0) return PopResult::kEmpty;
  // Reads of the ring entry and descriptors after the index (Pending's acquire load).
  const uint32_t mask = num - 1;  // num is a power of two
  const uint16_t head = Load16(avail_ + 4 + 2 * (last_avail_ & mask));
  if (head >= num) {
    *why = "avail ring entry " + std::to_string(head) + " >= ring size " + std::to_string(num);
    return PopResult::kViolation;
  }
  const size_t first = segs->size();
  uint64_t bytes = 0;
  uint32_t i = head;
  uint32_t count = 0;
  for (;; count++) {
    if (held_ + count >= num) {
      *why = count >= num ? "descriptor chain longer than the ring (a loop)"
                          : "descriptor chains share descriptors (more than " + std::to_string(num) + " in flight)";
      segs->resize(first);
      return PopResult::kViolation;
    }
    // The one read of this descriptor: everything below uses the local copy.
    const uint8_t* p = desc_ + 16ull * i;
    descriptors_read_++;
    const uint64_t addr = Load64(p);
    const uint64_t w = Load64(p + 8);
    const uint32_t len = static_cast<uint32_t>(w);
    const uint16_t flags = static_cast<uint16_t>(w >> 32);
    const uint16_t next = static_cast<uint16_t>(w >> 48);
    if (flags & kDescIndirect) {
      *why = "indirect descriptor (not negotiated)";
      segs->resize(first);
      return PopResult::kViolation;
    }
    if (((flags & kDescWrite) != 0) != writable) {
      *why = std::string("descriptor ") + std::to_string(i) + (writable ? " read-only in the RX ring" : " device-writable in the TX ring");
      segs->resize(first);
      return PopResult::kViolation;
    }
    if (len > 0) {
      uint8_t* host = mem.Gpa(addr, len);
      if (host == nullptr) {
        *why = "descriptor " + std::to_string(i) + " buffer " + Hex(addr) + "+" + std::to_string(len) + " outside guest memory";
        segs->resize(first);
        return PopResult::kViolation;
      }
      segs->push_back({host, len});
      bytes += len;  // at most num * 4 GiB: no overflow in 64 bits
    }
    if (!(flags & kDescNext)) break;
    if (next >= num) {
      *why = "descriptor " + std::to_string(i) + " next " + std::to_string(next) + " >= ring size " + std::to_string(num);
      segs->resize(first);
      return PopResult::kViolation;
    }
    i = next;
  }
  held_ += count + 1;
  last_avail_++;
  chain->head = head;
  chain->first = static_cast<uint32_t>(first);
  chain->count = static_cast<uint32_t>(segs->size() - first);
  chain->bytes = bytes;
  return PopResult::kOk;
}

void Ring::Use(uint16_t head, uint32_t len) {
  uint8_t* e = used_ + 4 + 8ull * (used_idx_ & (num - 1));
  Store32(e, head);
  Store32(e + 4, len);
  used_idx_++;
}

bool Ring::KnownShort(uint64_t need, bool* oversize) const {
  if (!short_.valid || short_.last_avail != last_avail_ || need <= short_.cap) return false;
  // The guest added nothing since (a relaxed read is enough: a chain added just now is seen
  // by the next frame, as if it had come a moment later).
  if (Load16(avail_ + 2) != short_.avail_idx) return false;
  *oversize = short_.oversize;
  return true;
}

bool Ring::Publish() {
  held_ = 0;  // the guest may reuse every descriptor taken so far (or none were used)
  if (used_idx_ == published_) return false;
  const uint16_t old = published_;
  // The elements before the index (release), then the index before reading avail->flags or
  // used_event (a full barrier, else a guest that just turned interrupts back on could miss this one).
  __atomic_store_n(reinterpret_cast<uint16_t*>(used_ + 2), used_idx_, __ATOMIC_RELEASE);
  published_ = used_idx_;
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  bool signal;
  if (event_idx) {
    // virtio 1.x 2.7.10: interrupt only when the used index passes used_event (read once; any
    // value is harmless: at worst an interrupt too many or one the guest asked to skip).
    const uint16_t event = Load16(avail_ + 4 + 2ull * num);
    signal = static_cast<uint16_t>(used_idx_ - event - 1) < static_cast<uint16_t>(used_idx_ - old);
  } else {
    signal = (Load16(avail_) & kAvailNoInterrupt) == 0;
  }
  if (signal && call_fd >= 0) {
    uint64_t one = 1;
    ssize_t r;
    do {
      r = write(call_fd, &one, sizeof(one));
    } while (r < 0 && errno == EINTR);
    // EAGAIN: the counter is saturated, the guest has an interrupt pending anyway.
  }
  return true;
}

void Ring::SetNoNotify(bool on) {
  if (used_ == nullptr) return;
  Store16(used_, on ? kUsedNoNotify : 0);
  // With EVENT_IDX the guest reads avail_event instead: kicks are wanted from the next chain we
  // would take. Left behind (on), the guest's index has already passed it: no kicks.
  if (event_idx && !on) Store16(used_ + 4 + 8ull * num, last_avail_);
}

}  // namespace vhost
}  // namespace mvnet
