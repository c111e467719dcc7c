/*
 * fwd: the simplest userspace forwarder there is, as a yardstick for mvnet's data path.
 *
 * Creates (or attaches to) two TAP devices and copies every frame read from one to the other
 * with plain read()/write() in an epoll loop: no learning, no filtering, no queueing (a write
 * that would block is dropped and counted). With -v both TAPs get IFF_VNET_HDR and
 * TUNSETOFFLOAD(csum, TSO4, TSO6, ECN), so TSO super-frames and partial checksums pass
 * through untouched, the way a vhost-less QEMU would see them.
 *
 *   fwd [-v] TAP_A TAP_B
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
  unsigned long long frames, bytes, drops;
};

/* Drains `from` into `to`. */
static void pump(struct side *from, struct side *to, unsigned char *buf) {
  for (;;) {
    ssize_t n = read(from->fd, buf, BUF_SIZE);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      perror("read");
      stop = 1;
      return;
    }
    if (n == 0) return;
    if (write(to->fd, buf, (size_t)n) == n) {
      from->frames++;
      from->bytes += (unsigned long long)n;
    } else {
      from->drops++;
    }
  }
}

int main(int argc, char **argv) {
  int vnet_hdr = 0;
  int arg = 1;
  if (arg < argc && strcmp(argv[arg], "-v") == 0) {
    vnet_hdr = 1;
    arg++;
  }
  if (argc - arg != 2) {
    fprintf(stderr, "usage: %s [-v] TAP_A TAP_B\n", argv[0]);
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
    for (int i = 0; i < n; i++) {
      unsigned k = evs[i].data.u32;
      pump(&s[k], &s[1 - k], buf);
    }
  }
  fprintf(stderr, "fwd: a->b %llu frames %llu bytes %llu drops; b->a %llu frames %llu bytes %llu drops\n",
          s[0].frames, s[0].bytes, s[0].drops, s[1].frames, s[1].bytes, s[1].drops);
  return 0;
}
