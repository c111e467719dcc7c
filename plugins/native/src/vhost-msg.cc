#include "vhost-msg.h"

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace mvnet {
namespace vhost {

void Msg::CloseFds() {
  for (uint32_t i = 0; i < nfds; i++) {
    if (fds[i] >= 0) close(fds[i]);
  }
  nfds = 0;
}

const char* RequestName(uint32_t request) {
  switch (request) {
    case kGetFeatures: return "GET_FEATURES";
    case kSetFeatures: return "SET_FEATURES";
    case kSetOwner: return "SET_OWNER";
    case kResetOwner: return "RESET_OWNER";
    case kSetMemTable: return "SET_MEM_TABLE";
    case kSetLogBase: return "SET_LOG_BASE";
    case kSetLogFd: return "SET_LOG_FD";
    case kSetVringNum: return "SET_VRING_NUM";
    case kSetVringAddr: return "SET_VRING_ADDR";
    case kSetVringBase: return "SET_VRING_BASE";
    case kGetVringBase: return "GET_VRING_BASE";
    case kSetVringKick: return "SET_VRING_KICK";
    case kSetVringCall: return "SET_VRING_CALL";
    case kSetVringErr: return "SET_VRING_ERR";
    case kGetProtocolFeatures: return "GET_PROTOCOL_FEATURES";
    case kSetProtocolFeatures: return "SET_PROTOCOL_FEATURES";
    case kGetQueueNum: return "GET_QUEUE_NUM";
    case kSetVringEnable: return "SET_VRING_ENABLE";
    case kNetSetMtu: return "NET_SET_MTU";
    case kResetDevice: return "RESET_DEVICE";
    default: return nullptr;
  }
}

void MsgReader::Reset() {
  for (uint32_t i = 0; i < nfds_; i++) close(fds_[i]);
  nfds_ = 0;
  got_ = 0;
}

MsgReader::Result MsgReader::Read(Msg* msg, std::string* why) {
  for (;;) {
    uint32_t size = 0;
    if (got_ >= kHeaderLen) {
      std::memcpy(&size, hdr_ + 8, 4);
      if (got_ == kHeaderLen + size) break;
    }
    // The rest of the header, or of the payload: never beyond this message.
    uint8_t* dst;
    uint32_t want;
    if (got_ < kHeaderLen) {
      dst = hdr_ + got_;
      want = kHeaderLen - got_;
    } else {
      dst = msg->payload + (got_ - kHeaderLen);
      want = kHeaderLen + size - got_;
    }
    iovec iov = {dst, want};
    alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * kMaxFds)];
    msghdr mh;
    std::memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf;
    mh.msg_controllen = sizeof(cbuf);
    ssize_t r = recvmsg(fd_, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return kAgain;
      if (errno == ECONNRESET || errno == EPIPE) {
        Reset();
        return kClosed;  // the front-end died: a disconnect, not a violation
      }
      *why = std::string("recvmsg: ") + std::strerror(errno);
      Reset();
      return kBad;
    }
    bool too_many = (mh.msg_flags & MSG_CTRUNC) != 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t k = 0; k < n; k++) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + k * sizeof(int), sizeof(int));
        if (nfds_ < kMaxFds) {
          fds_[nfds_++] = fd;
        } else {
          close(fd);
          too_many = true;
        }
      }
    }
    if (too_many) {
      *why = "more than " + std::to_string(kMaxFds) + " file descriptors on a message";
      Reset();
      return kBad;
    }
    if (r == 0) {
      Reset();
      return kClosed;
    }
    got_ += static_cast<uint32_t>(r);
    if (got_ == kHeaderLen) {
      std::memcpy(&size, hdr_ + 8, 4);
      if (size > kMaxPayload) {
        uint32_t req;
        std::memcpy(&req, hdr_, 4);
        *why = "message " + std::to_string(req) + " with a payload of " + std::to_string(size) + " bytes";
        Reset();
        return kBad;
      }
    }
  }
  std::memcpy(&msg->request, hdr_, 4);
  std::memcpy(&msg->flags, hdr_ + 4, 4);
  std::memcpy(&msg->size, hdr_ + 8, 4);
  std::memcpy(msg->fds, fds_, sizeof(int) * nfds_);
  msg->nfds = nfds_;
  nfds_ = 0;
  got_ = 0;
  return kMessage;
}

bool SendReply(int fd, uint32_t request, const void* payload, uint32_t size) {
  uint8_t buf[kHeaderLen + 64];
  if (size > 64) return false;
  const uint32_t flags = kFlagVersion | kFlagReply;
  std::memcpy(buf, &request, 4);
  std::memcpy(buf + 4, &flags, 4);
  std::memcpy(buf + 8, &size, 4);
  if (size) std::memcpy(buf + kHeaderLen, payload, size);
  const size_t total = kHeaderLen + size;
  ssize_t r;
  do {
    r = send(fd, buf, total, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (r < 0 && errno == EINTR);
  return r == static_cast<ssize_t>(total);
}

}  // namespace vhost
}  // namespace mvnet
