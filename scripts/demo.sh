#!/usr/bin/env bash
# mvnet quick start, one command on a fresh Debian 12, as root:
#
#   sudo bash scripts/demo.sh
#
# Installs the system packages (scripts/deps.sh) and the npm dependencies (npm ci, which also
# builds the native addon and dist/), starts a daemon in the background with a temp state dir
# and control socket, creates networks A and B, and three network namespaces standing in for
# VMs: vm1 and vm2 on A, vm3 on B, each attached by a TAP device that mvnet creates inside the
# namespace. It shows vm1 <-> vm2 ping working and vm1 -> vm3 failing (the networks are
# isolated), prints `mvnet status`, and removes everything on exit, also on Ctrl-C or error.
#
# Addresses 10.77.x.x exist only inside the demo's namespaces; no traffic leaves the machine.
# Set MVNET_DEMO_SKIP_INSTALL=1 to skip deps.sh and npm ci (tree already installed and built).
set -euo pipefail

cd "$(dirname "$0")/.."
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "demo: run as root (it creates network namespaces and TAP devices): sudo bash $0" >&2
  exit 1
fi

if [ "${MVNET_DEMO_SKIP_INSTALL:-0}" != 1 ]; then
  say "installing system packages"
  bash scripts/deps.sh
  say "npm ci (dependencies, native addon, build)"
  npm ci --no-audit --no-fund
fi
if [ ! -f build/Release/mvnet_native.node ]; then
  echo "demo: build/Release/mvnet_native.node is missing: npm ci did not build the native addon" >&2
  exit 1
fi
if [ ! -f dist/cli/main.js ]; then
  npx tsc -p tsconfig.build.json
fi

work=$(mktemp -d /tmp/mvdemo-XXXXXX)
sock="$work/mvnet.sock"
daemon_pid=""
NS=(mvdemo-vm1 mvdemo-vm2 mvdemo-vm3)

remove_namespaces() {
  for ns in "${NS[@]}"; do
    if ip netns list | awk '{print $1}' | grep -qx "$ns"; then
      for pid in $(ip netns pids "$ns"); do kill -9 "$pid"; done
      ip netns del "$ns"
    fi
  done
}
cleanup() {
  set +e
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -TERM "$daemon_pid"
    wait "$daemon_pid" 2>/dev/null
  fi
  remove_namespaces
  rm -rf "$work"
  echo "demo: cleaned up"
}
remove_namespaces # leftovers of an earlier demo that was killed with SIGKILL
trap cleanup EXIT
trap 'exit 130' INT TERM

mvnet() { node dist/cli/main.js --socket "$sock" "$@"; }

say "starting the daemon (state $work/state, socket $sock)"
mkdir -p "$work/state"
node dist/cli/main.js daemon --state-dir "$work/state" --socket "$sock" >"$work/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 200); do
  grep -q '"msg":"ready"' "$work/daemon.log" && break
  kill -0 "$daemon_pid" 2>/dev/null || { echo "demo: the daemon exited:"; cat "$work/daemon.log"; exit 1; }
  sleep 0.1
done
grep -q '"msg":"ready"' "$work/daemon.log" || { echo "demo: the daemon did not get ready:"; cat "$work/daemon.log"; exit 1; }
echo "daemon pid $daemon_pid is ready"

say "networks A (10.77.1.0/24) and B (10.77.2.0/24)"
mvnet net create A --subnet 10.77.1.0/24
mvnet net create B --subnet 10.77.2.0/24

say "VMs: vm1, vm2 on A; vm3 on B (each a namespace with a TAP mvnet creates inside it)"
attach() { # vm net address gateway
  local vm=$1 net=$2 addr=$3 gw=$4 ns="mvdemo-$1" tap="tap-$1"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  mvnet vm attach "$vm" --net "$net" --tap "$tap" --netns "$ns"
  ip -n "$ns" addr add "$addr" dev "$tap"
  ip -n "$ns" link set "$tap" up
  ip -n "$ns" route add default via "$gw"
  echo "  $vm: $addr in namespace $ns"
}
attach vm1 A 10.77.1.11/24 10.77.1.1
attach vm2 A 10.77.1.12/24 10.77.1.1
attach vm3 B 10.77.2.13/24 10.77.2.1

say "vm1 -> vm2 (same network A): should answer"
ip netns exec mvdemo-vm1 ping -n -c 3 -i 0.2 -W 2 10.77.1.12

say "vm1 -> vm3 (network B): must NOT answer, the networks are isolated"
if ip netns exec mvdemo-vm1 ping -n -c 2 -i 0.2 -W 1 10.77.2.13; then
  echo "demo: UNEXPECTED: vm3 answered across networks" >&2
  exit 1
else
  echo "no reply from vm3, as expected"
fi

say "mvnet status"
mvnet status

say "done"
