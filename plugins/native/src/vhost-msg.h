// The vhost-user control protocol (QEMU's docs/interop/vhost-user.rst): message numbers, feature
// bits, and the framing on the unix stream socket (a 12-byte header, a bounded payload, file
// descriptors as SCM_RIGHTS on the message's bytes).
#pragma once

#include <cstdint>
#include <string>

namespace mvnet {
namespace vhost {

enum Request : uint32_t {
  kGetFeatures = 1,
  kSetFeatures = 2,
  kSetOwner = 3,
  kResetOwner = 4,
  kSetMemTable = 5,
  kSetLogBase = 6,
  kSetLogFd = 7,
  kSetVringNum = 8,
  kSetVringAddr = 9,
  kSetVringBase = 10,
  kGetVringBase = 11,
  kSetVringKick = 12,
  kSetVringCall = 13,
  kSetVringErr = 14,
  kGetProtocolFeatures = 15,
  kSetProtocolFeatures = 16,
  kGetQueueNum = 17,
  kSetVringEnable = 18,
  kNetSetMtu = 20,
  kResetDevice = 34,
};

// Virtio feature bits (virtio 1.x 5.1.3, 6).
constexpr uint64_t kFCsum = 1ull << 0;
constexpr uint64_t kFGuestCsum = 1ull << 1;
constexpr uint64_t kFGuestTso4 = 1ull << 7;
constexpr uint64_t kFGuestTso6 = 1ull << 8;
constexpr uint64_t kFHostTso4 = 1ull << 11;
constexpr uint64_t kFHostTso6 = 1ull << 12;
constexpr uint64_t kFMtu = 1ull << 3;  // the MTU in QEMU's config space (host_mtu=) reaches the guest
constexpr uint64_t kFMrgRxbuf = 1ull << 15;
// VIRTIO_RING_F_EVENT_IDX: used_event/avail_event after the rings say when to interrupt and kick.
constexpr uint64_t kFEventIdx = 1ull << 29;
constexpr uint64_t kFProtocolFeatures = 1ull << 30;  // VHOST_USER_F_PROTOCOL_FEATURES
constexpr uint64_t kFVersion1 = 1ull << 32;
// Protocol feature bits.
constexpr uint64_t kPReplyAck = 1ull << 3;
constexpr uint64_t kPNetMtu = 1ull << 4;

constexpr uint32_t kFlagVersion = 1;      // flags & 3
constexpr uint32_t kFlagReply = 1u << 2;
constexpr uint32_t kFlagNeedReply = 1u << 3;
constexpr uint64_t kVringIndexMask = 0xff;
constexpr uint64_t kVringNoFd = 1ull << 8;

constexpr uint32_t kHeaderLen = 12;
// The largest payload any message we take has is SET_MEM_TABLE's (8 + 8 * 32 bytes).
constexpr uint32_t kMaxPayload = 4096;
constexpr uint32_t kMaxFds = 8;

struct Msg {
  uint32_t request;
  uint32_t flags;
  uint32_t size;
  uint8_t payload[kMaxPayload];
  int fds[kMaxFds];
  uint32_t nfds;
  void CloseFds();
};

const char* RequestName(uint32_t request);

// Reads messages from the non-blocking connection, a piece at a time, never reading past the
// current message (so its file descriptors are not mixed with the next one's).
class MsgReader {
 public:
  enum Result { kMessage, kAgain, kClosed, kBad };
  explicit MsgReader(int fd) : fd_(fd) {}
  ~MsgReader() { Reset(); }
  // kMessage: `msg` is complete (its fds are the caller's). kBad: `why` says what was wrong.
  // A message may take several calls: pass the same `msg` each time (its payload fills in place).
  Result Read(Msg* msg, std::string* why);
  void Reset();

 private:
  int fd_;
  uint8_t hdr_[kHeaderLen];
  uint32_t got_ = 0;  // bytes of the current message so far (header included)
  int fds_[kMaxFds];
  uint32_t nfds_ = 0;
};

// Sends a reply (flags: version | reply) of `size` bytes. False when it could not be sent whole.
bool SendReply(int fd, uint32_t request, const void* payload, uint32_t size);

}  // namespace vhost
}  // namespace mvnet
