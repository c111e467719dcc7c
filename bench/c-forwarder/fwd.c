/*
 * fwd: the simplest userspace forwarder there is, as a yardstick for mvnet's data path.
 *
 * Creates (or attaches to) two TAP devices and copies every frame read from one to the other
 * with plain read()/write() in an epoll loop: no learning, no filtering, no queueing (a write
 * that would block is dropped and counted). With -v both TAPs get IFF_VNET_HDR and
 * TUNSETOFFLOAD(csum, TSO4, TSO6, ECN), so TSO super-frames and partial checksums pass
 * through untouched, the way a vhost-less QEMU would see them.
 *
 * Fair: both directions are served round-robin, at most BATCH frames (-b, default 64: the
 * addon's DevicePort read batch) from one side before the other side's turn, until both are
 * empty; then back to epoll_wait. Draining one side completely first (as this forwarder once
 * did) holds the other direction's ACKs back for a whole burst; it is not the addon's loop, so
 * not the yardstick for it. Each frame is written as soon as it is read, into and from one buffer, as the addon's
 * cut-through does for a TAP.
 *
 * -d restores the old unfair loop (each readable side drained to EAGAIN, in epoll's order, no
 * turn for the side written to), for comparison.
 *
 *   fwd [-v] [-b BATCH] [-d] TAP_A TAP_B
 *
 * Prints "ready" on stdout once both devices exist (the caller then moves them into their
 * namespaces and configures them), runs until SIGTERM/SIGINT, then prints one line of counters
 * on stderr. Build: cc -O2 -Wall -o fwd fwd.c
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define BUF_SIZE (65536 + 256)

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
  (void)sig;
  stop = 1;
}

static int open_tap(const char *name, int vnet_hdr) {
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    perror("open /dev/net/tun");
    exit(1);
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (vnet_hdr ? IFF_VNET_HDR : 0);
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    fprintf(stderr, "TUNSETIFF %s: %s\n", name, strerror(errno));
    exit(1);
  }
  if (vnet_hdr) {
    int sz = 10; /* struct virtio_net_hdr */
    if (ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0) {
      perror("TUNSETVNETHDRSZ");
      exit(1);
    }
    unsigned off = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
    if (ioctl(fd, TUNSETOFFLOAD, off) < 0) {
      perror("TUNSETOFFLOAD");
      exit(1);
    }
  }
  return fd;
}

struct side {
  int fd;
  unsigned long long frames, bytes, drops, turns;
};

/* Copies at most `batch` frames from `from` to `to`. Returns 1 if `from` may have more (the
 * batch was full), 0 once it is empty (EAGAIN). */
static int pump(struct side *from, struct side *to, unsigned char *buf, int batch) {
  from->turns++;
  for (int i = 0; i < batch; i++) {
    ssize_t n = read(from->fd, buf, BUF_SIZE);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return 0;
      perror("read");
      stop = 1;
      return 0;
    }
    if (n == 0) return 0;
    if (write(to->fd, buf, (size_t)n) == n) {
      from->frames++;
      from->bytes += (unsigned long long)n;
    } else {
      from->drops++;
    }
  }
  return 1;
}

int main(int argc, char **argv) {
  int vnet_hdr = 0;
  int batch = 64;
  int drain = 0;
  int arg = 1;
  for (; arg < argc; arg++) {
    if (strcmp(argv[arg], "-v") == 0) {
      vnet_hdr = 1;
    } else if (strcmp(argv[arg], "-b") == 0 && arg + 1 < argc) {
      batch = atoi(argv[++arg]);
      if (batch < 1) batch = 1;
    } else if (strcmp(argv[arg], "-d") == 0) {
      drain = 1;
    } else {
      break;
    }
  }
  if (argc - arg != 2) {
    fprintf(stderr, "usage: %s [-v] [-b BATCH] [-d] TAP_A TAP_B\n", argv[0]);
    return 2;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  struct side s[2];
  memset(s, 0, sizeof s);
  s[0].fd = open_tap(argv[arg], vnet_hdr);
  s[1].fd = open_tap(argv[arg + 1], vnet_hdr);

  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) {
    perror("epoll_create1");
    return 1;
  }
  for (int i = 0; i < 2; i++) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (unsigned)i};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, s[i].fd, &ev) < 0) {
      perror("epoll_ctl");
      return 1;
    }
  }
  unsigned char *buf = malloc(BUF_SIZE);
  if (!buf) return 1;
  printf("ready\n");
  fflush(stdout);

  struct epoll_event evs[2];
  while (!stop) {
    int n = epoll_wait(ep, evs, 2, 500);
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("epoll_wait");
      return 1;
    }
    if (drain) {
      for (int i = 0; i < n; i++) {
        unsigned k = evs[i].data.u32;
        while (pump(&s[k], &s[1 - k], buf, batch) && !stop) {
        }
      }
      continue;
    }
    int ready[2] = {0, 0};
    for (int i = 0; i < n; i++) ready[evs[i].data.u32] = 1;
    /* Round-robin: one batch per side per turn, until both are empty. A side that was not
     * readable at epoll_wait gets its turn too once the other has written to it (a TAP's
     * stack may answer inside the write), as the addon reads the TAPs it wrote to. */
    while ((ready[0] || ready[1]) && !stop) {
      for (int k = 0; k < 2; k++) {
        if (!ready[k]) continue;
        unsigned long long before = s[k].frames + s[k].drops;
        ready[k] = pump(&s[k], &s[1 - k], buf, batch);
        if (s[k].frames + s[k].drops != before) ready[1 - k] = 1;
      }
    }
  }
  fprintf(stderr, "fwd: a->b %llu frames %llu bytes %llu drops %llu turns; b->a %llu frames %llu bytes %llu drops %llu turns\n",
          s[0].frames, s[0].bytes, s[0].drops, s[0].turns, s[1].frames, s[1].bytes, s[1].drops, s[1].turns);
  return 0;
}
