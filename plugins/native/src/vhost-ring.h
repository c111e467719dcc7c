// A split virtqueue served from the device side, over guest memory that the guest may change at
// any moment: indices are checked against num, chains against loops and bounds, and every
// descriptor is read once into a local copy before anything uses it (no double fetch).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "vhost-mem.h"

namespace mvnet {
namespace vhost {

constexpr uint32_t kMaxRingNum = 32768;

// A piece of a chain's buffers, translated to a host address once.
struct Seg {
  uint8_t* p;
  uint32_t len;
};

// A chain taken from the avail ring: its head index and its buffers (segs_[first, first + count)).
struct Chain {
  uint16_t head;
  uint32_t first;
  uint32_t count;
  uint64_t bytes;
};

enum class PopResult { kOk, kEmpty, kViolation };

class Ring {
 public:
  // Control-plane state (SET_VRING_*).
  uint32_t num = 0;  // 0: not set
  bool have_addr = false;
  uint64_t desc_uva = 0, avail_uva = 0, used_uva = 0;
  uint16_t base = 0;  // SET_VRING_BASE
  int kick_fd = -1;
  int call_fd = -1;
  bool enable_msg = false;  // SET_VRING_ENABLE (rings start disabled once PROTOCOL_FEATURES is negotiated)
  bool sync = false;        // indices to be (re)taken from base / used->idx at the next Map
  // VIRTIO_RING_F_EVENT_IDX negotiated (taken at Map: the rings are 2 bytes longer with it).
  bool event_idx = false;

  // Translates the ring's addresses through `mem` (on every new table or address). False with
  // `why` when they are not inside guest memory or misaligned; then the ring cannot run.
  bool Map(const MemTable& mem, std::string* why);
  void Unmap() { desc_ = avail_ = used_ = nullptr; }
  bool mapped() const { return desc_ != nullptr; }

  // How many chains the guest has made available (avail->idx - last_avail), or -1 with `why`
  // when it moved by more than num.
  int Pending(std::string* why);
  // Takes the next chain: every descriptor device-writable (`writable`) or every one
  // device-readable, inside guest memory, the chain no longer than num. Its segments are
  // appended to `segs`. kEmpty when nothing is pending. Every chain taken since the last
  // Publish is in flight at once, so a legitimate guest's hold at most num descriptors
  // together: more (chains sharing descriptors, e.g. one long zero-length tail named by every
  // avail entry) is a violation, which bounds the work of a frame or a TX turn to num loads.
  PopResult Pop(const MemTable& mem, bool writable, std::vector<Seg>* segs, Chain* chain, std::string* why);
  // Gives back the chains taken since `mark` (not yet used): they are taken again later.
  struct Mark {
    uint16_t avail;
    uint32_t held;
  };
  uint16_t last_avail() const { return last_avail_; }
  Mark mark() const { return {last_avail_, held_}; }
  void Rewind(const Mark& m) {
    last_avail_ = m.avail;
    held_ = m.held;
  }
  // RX: the chains pending from `mark` on were all walked and held `cap` bytes (after Rewind).
  // Until the guest adds chains or one is taken, a frame needing more is dropped without
  // walking them again (KnownShort), so a full ring costs one walk per batch, not per frame.
  void NoteShort(uint64_t cap, bool oversize) {
    short_ = {true, oversize, last_avail_, seen_idx_, cap};
  }
  bool KnownShort(uint64_t need, bool* oversize) const;
  // Puts a used element (not visible to the guest until Publish).
  void Use(uint16_t head, uint32_t len);
  // Makes the used elements visible; then signals the call eventfd unless the guest asked not
  // to be interrupted. Returns whether anything was published.
  bool Publish();
  // used->flags = VRING_USED_F_NO_NOTIFY or 0: whether the guest should kick us.
  void SetNoNotify(bool on);
  // The indices (GET_VRING_BASE answers last_avail).
  uint16_t used_idx() const { return used_idx_; }
  // Descriptors read from guest memory by this ring: the work a guest caused,
  // counted so that tests check the budget by work done rather than by time.
  uint64_t descriptors_read() const { return descriptors_read_; }
  // Takes the indices from base, or from used->idx when it differs (a back-end restarted
  // without answering GET_VRING_BASE: what the guest got back is what the front-end saw).
  void SyncIndices();

 private:
  uint8_t* desc_ = nullptr;
  uint8_t* avail_ = nullptr;
  uint8_t* used_ = nullptr;
  uint16_t last_avail_ = 0;
  uint16_t used_idx_ = 0;
  uint16_t published_ = 0;
  uint32_t held_ = 0;      // descriptors walked in the chains taken since the last Publish
  uint64_t descriptors_read_ = 0;
  uint16_t seen_idx_ = 0;  // avail->idx as Pending last read it
  struct {
    bool valid;
    bool oversize;
    uint16_t last_avail;
    uint16_t avail_idx;
    uint64_t cap;
  } short_ = {false, false, 0, 0, 0};
};

}  // namespace vhost
}  // namespace mvnet
