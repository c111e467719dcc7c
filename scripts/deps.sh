#!/usr/bin/env bash
# The one list of Debian 12 packages mvnet needs (tests, benchmarks, demo, later features),
# installed non-interactively. Used by .ci/run and scripts/demo.sh; run it as root.
#
#   bash scripts/deps.sh            install what is missing (apt-get update only if needed)
#   bash scripts/deps.sh --list     print the package list and exit
#
# No service is started by the installation (tor, iperf3): a policy-rc.d that forbids starts is
# put in place for the duration when the machine has none.
set -euo pipefail

# Needed by the test suite, bench or demo: missing from the archive = failure.
REQUIRED=(
  iproute2        # ip netns / link / addr
  iputils-ping    # ping from namespaces
  procps          # ps, sysctl
  ca-certificates
  python3 make g++ gcc libc6-dev   # node-gyp (native addon), bench/c-forwarder
  ethtool         # offload inspection (vnet-hdr/TSO)
  iperf3          # bench throughput
  tcpdump tshark  # packet capture in tests/debugging
  busybox udhcpc  # DHCP client / tiny servers inside namespaces
  dnsmasq-base    # DHCP/DNS reference server
  curl socat      # HTTP probes, socket plumbing
  qemu-system-x86 # the real-VM tests (hook-qemu.test.ts), -accel tcg
  graphviz        # `dot -Tsvg` renders `mvnet graph` output (graph.test.ts)
  chromium fonts-liberation   # headless Chromium opens the HTML topology page (graph.test.ts); fonts for its labels
  wireguard-go wireguard-tools  # the link protocol's construction checked against WireGuard (links-wireguard.test.ts); the links bench's yardstick
  dbus-daemon     # a private session bus for the desktop-notice test (notify.test.ts)
  bsdutils        # `script`: a pty for the daemon's terminal log format (service.test.ts)
  zsh             # `zsh -n` and a real zsh run of `mvnet completion zsh` (completion.test.ts)
  groff-base man-db  # `mvnet man` rendered by groff and `man -l` without warnings (completion.test.ts)
  systemd         # systemd-analyze verify/security of systemd/mvnet.service (systemd-unit.test.ts)
)
# Wanted by later features (DHCP client alternative, Tor routing, passt, QEMU end-to-end) and
# the stack bench's peers (passt's pasta, slirp4netns); installed when the archive has them,
# reported when it does not.
OPTIONAL=(
  isc-dhcp-client
  tor
  passt
  slirp4netns
)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# The real-VM tests' kernel and static busybox: downloaded and unpacked into a cache directory
# (scripts/vm-assets.sh; nothing installed), once; a no-op when cached.
vm_assets() {
  echo "deps.sh: VM test assets in $(bash "$here/vm-assets.sh" | tail -1)"
}

if [ "${1:-}" = "--list" ]; then
  printf '%s\n' "${REQUIRED[@]}" "${OPTIONAL[@]}"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "deps.sh: must run as root (it uses apt-get)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }
candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}'; }

missing=()
for p in "${REQUIRED[@]}" "${OPTIONAL[@]}"; do
  installed "$p" || missing+=("$p")
done
if ! command -v node >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
if [ "${#missing[@]}" = 0 ]; then
  echo "deps.sh: all ${#REQUIRED[@]} required and ${#OPTIONAL[@]} optional packages already installed"
  vm_assets
  exit 0
fi

# A mirror hiccup should not fail a CI run: three tries, a short pause between.
retry() {
  local n
  for n in 1 2 3; do
    "$@" && return 0
    echo "deps.sh: '$*' failed (try $n of 3)" >&2
    sleep $((n * 5))
  done
  return 1
}

echo "deps.sh: installing: ${missing[*]}"
retry apt-get update -qq

to_install=()
unavailable_required=()
for p in "${missing[@]}"; do
  c=$(candidate "$p")
  if [ -z "$c" ] || [ "$c" = "(none)" ]; then
    if printf '%s\n' "${OPTIONAL[@]}" | grep -qx "$p"; then
      echo "deps.sh: optional package $p is not in the archive; skipped" >&2
    else
      unavailable_required+=("$p")
    fi
  else
    to_install+=("$p")
  fi
done
if [ "${#unavailable_required[@]}" != 0 ]; then
  echo "deps.sh: required packages not available from apt: ${unavailable_required[*]}" >&2
  exit 1
fi

# Non-interactive answers: tshark without the setuid dumpcap question, no iperf3 daemon.
debconf-set-selections <<'EOF'
wireshark-common wireshark-common/install-setuid boolean false
iperf3 iperf3/start_daemon boolean false
EOF

# Forbid service starts while installing (tor would otherwise start and go online).
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  created_policy=1
fi
cleanup_policy() { if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup_policy EXIT

retry apt-get install -y -q --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
  "${to_install[@]}"

# A distribution tor service must never run from our installs: it would contact the Tor network.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now tor.service >/dev/null 2>&1 || true
fi

for p in "${REQUIRED[@]}"; do
  installed "$p" || { echo "deps.sh: $p did not install" >&2; exit 1; }
done
vm_assets
echo "deps.sh: done"
