#!/usr/bin/env bash
# mvnet's real job in under a minute, on a fresh Debian 12, as root:
#
#   sudo bash scripts/demo.sh [--short] [--real-tor [--onion ADDR.onion]]
#
# Installs the system packages (scripts/deps.sh) and the npm dependencies (npm ci, which builds
# the native addon and dist/), then, each step with a heading and what to look for:
#   1. two isolated networks (a ping across them must not answer); VMs (network namespaces with a TAP mvnet creates inside them) get
#      their addresses by DHCP from mvnet (busybox udhcpc in the namespace);
#   2. VM "web" routed --direct fetches a page from an "internet" namespace the demo creates;
#   3. VM "anon" routed --all-tor fetches an onion service by a name (`mvnet onion add`) and a
#      page through the Tor exit;
#   4. the leak check: tcpdump on the host side during those fetches sees only Tor traffic;
#   5. a capture of anon's port (`mvnet capture anon -w FILE`) read by tshark;
#   6. `mvnet graph` and `mvnet status`.
#
# Tor: without --real-tor (a machine without internet, CI) the demo starts the private Tor
# network the tests use (scripts/demo-tor.ts → test/tor/with-upstream.ts: relays, an exit, an
# onion service and a web site behind the exit, in namespaces of their own) and links it into
# the namespace the daemon runs in, whose embedded Tor joins it. --real-tor runs the daemon in
# the host's namespace with its embedded Tor on the public network (needs internet; not run in
# CI): the onion is --onion ADDR.onion (default DuckDuckGo's), the exit page check.torproject.org.
#
# Addresses: 10.77.x.x (VM networks) and TEST-NET ranges exist only inside the demo's
# namespaces (with --real-tor the host side of the veth to the "internet" namespace,
# 192.0.2.1/24, is in the host's namespace). Names carry this shell's pid; everything is removed
# on exit, on Ctrl-C and on error.
#
# Environment: MVNET_DEMO_SKIP_INSTALL=1 skips deps.sh and npm ci (tree already built);
# MVNET_DEMO_TOR_SHARED=FILE uses an already running private Tor network (what its test does,
# see scripts/demo-tor.ts). --short: no explanations, for CI (test/tor/demo.test.ts).
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$PWD

short=0 real_tor=0 onion_arg=""
while [ $# -gt 0 ]; do
  case "$1" in
    --short) short=1 ;;
    --real-tor) real_tor=1 ;;
    --onion) onion_arg=${2:?--onion needs ADDR.onion}; shift ;;
    -h | --help) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ -n "$onion_arg" ] && [ "$real_tor" = 0 ]; then
  echo "demo: --onion is for --real-tor (the private network brings its own onion service)" >&2
  exit 2
fi

t0=$(date +%s)
step=0
bold="" dim="" plain=""
[ -t 1 ] && bold=$'\033[1m' dim=$'\033[2m' plain=$'\033[0m'
say() { step=$((step + 1)); printf '\n%s== %d. %s%s  (%ss)\n' "$bold" "$step" "$*" "$plain" "$(($(date +%s) - t0))"; }
look() { [ "$short" = 1 ] || printf '   %s→ look for: %s%s\n' "$dim" "$*" "$plain"; }
ok() { printf 'ok: %s\n' "$*"; }
die() { printf 'demo: FAILED: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" != 0 ]; then
  echo "demo: run as root (it creates network namespaces and TAP devices): sudo bash $0" >&2
  exit 1
fi

if [ "${MVNET_DEMO_SKIP_INSTALL:-0}" != 1 ]; then
  say "installing system packages and building (skip with MVNET_DEMO_SKIP_INSTALL=1)"
  bash scripts/deps.sh
  npm ci --no-audit --no-fund
fi
[ -f build/Release/mvnet_native.node ] || die "build/Release/mvnet_native.node is missing: npm ci did not build the native addon"
[ -f dist/cli/main.js ] && [ -f dist/scripts/demo-tor.js ] || npm run build:ts
for tool in udhcpc curl tcpdump tshark; do
  command -v "$tool" >/dev/null || die "$tool is missing: bash scripts/deps.sh installs it"
done
command -v tor >/dev/null || die "tor is missing: apt-get install tor (the private network and --real-tor both run it)"

# --- names and cleanup -------------------------------------------------------------------
id=$$
P="mvdemo-$id"
HOSTNS="$P-host" INETNS="$P-inet" WEBNS="$P-web" ANONNS="$P-anon"
VETH_H="vd${id}h" VETH_I="vd${id}i" TAP_WEB="vd${id}w" TAP_ANON="vd${id}a"
[ "$real_tor" = 1 ] && HOSTNS=""
NSES=("$INETNS" "$WEBNS" "$ANONNS")
[ -n "$HOSTNS" ] && NSES=("$HOSTNS" "${NSES[@]}")
work=$(mktemp -d "/tmp/$P-XXXXXX")
sock="$work/mvnet.sock"
daemon_pid="" helper_pid=""

# Namespaces of earlier demos whose shell is gone (killed with SIGKILL).
for ns in $(ip netns list | awk '{print $1}' | grep -E '^mvdemo-[0-9]+-' || true); do
  pid=${ns#mvdemo-}; pid=${pid%%-*}
  if ! kill -0 "$pid" 2>/dev/null; then
    for p in $(ip netns pids "$ns"); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "/etc/netns/$ns"
  fi
done
for dir in /tmp/mvdemo-[0-9]*-*; do
  [ -d "$dir" ] || continue
  pid=${dir#/tmp/mvdemo-}; pid=${pid%%-*}
  kill -0 "$pid" 2>/dev/null || rm -rf "$dir"
done

stop_pid() { # pid [seconds]: SIGTERM, wait, then SIGKILL
  local pid=$1 n=$((${2:-10} * 10))
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null && [ $n -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  set +e
  trap - EXIT INT TERM
  [ -n "$daemon_pid" ] && stop_pid "$daemon_pid" 10
  [ -n "$helper_pid" ] && stop_pid "$helper_pid" 30
  for ns in "${NSES[@]}"; do
    if ip netns list | awk '{print $1}' | grep -qx "$ns"; then
      for pid in $(ip netns pids "$ns"); do kill -9 "$pid" 2>/dev/null; done
      ip netns del "$ns"
    fi
    rm -rf "/etc/netns/$ns"
  done
  [ "$real_tor" = 1 ] && ip link del "$VETH_H" 2>/dev/null
  rm -rf "$work"
  echo "demo: cleaned up"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Commands on the host side. Background jobs are started as simple commands (no shell function,
# no subshell), so $! is the program itself and the signals the demo sends reach it.
HOST=()
[ -n "$HOSTNS" ] && HOST=(ip netns exec "$HOSTNS")
CLI=(node "$repo/dist/cli/main.js" --socket "$sock")
mvnet() { "${CLI[@]}" "$@"; }
# The commands a user would type, shown before they run.
show() { printf '%s$ %s%s\n' "$dim" "$*" "$plain"; "$@"; }
# Waits (polling, with a deadline) until FILE contains PATTERN; dies with the file if not.
wait_for_line() { # file pattern seconds what [pid]
  local file=$1 pat=$2 n=$(($3 * 10)) what=$4 pid=${5:-}
  while ! grep -q -- "$pat" "$file" 2>/dev/null; do
    [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null && { cat "$file" >&2; die "$what exited"; }
    [ $n -le 0 ] && { tail -20 "$file" >&2; die "no $what after $3 s"; }
    sleep 0.1; n=$((n - 1))
  done
}
json() { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const v=JSON.parse(s);console.log(new Function("v","return "+process.argv[1])(v))})' "$1"; }

# --- 1. the host side ---------------------------------------------------------------------
if [ -n "$HOSTNS" ]; then
  say "the \"host\": namespace $HOSTNS (the daemon runs here) and an \"internet\" namespace $INETNS"
  ip netns add "$HOSTNS"
  # No IPv6 (no router solicitations on its links) and no forwarding: the daemon is the only way across.
  ip netns exec "$HOSTNS" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 net.ipv4.ip_forward=0
  ip -n "$HOSTNS" link set lo up
else
  say "the host (--real-tor: the daemon runs in the host's namespace) and an \"internet\" namespace $INETNS"
fi
ip netns add "$INETNS"
ip -n "$INETNS" link set lo up
ip link add "$VETH_H" type veth peer name "$VETH_I" netns "$INETNS"
[ -n "$HOSTNS" ] && ip link set "$VETH_H" netns "$HOSTNS"
ip ${HOSTNS:+-n "$HOSTNS"} addr add 192.0.2.1/24 dev "$VETH_H"
ip ${HOSTNS:+-n "$HOSTNS"} link set "$VETH_H" up
ip -n "$INETNS" addr add 192.0.2.80/24 dev "$VETH_I"
ip -n "$INETNS" link set "$VETH_I" up
ip netns exec "$INETNS" node -e '
  require("http").createServer((q, s) => s.end(`hello from the demo internet; you came from ${q.socket.remoteAddress}\n`))
    .listen(80, "0.0.0.0", () => console.log("listening"));' >"$work/inet.log" 2>&1 &
inet_pid=$!
disown "$inet_pid" # killed with its namespace at cleanup, without a job notice
wait_for_line "$work/inet.log" listening 10 "the internet namespace's web server" "$inet_pid"
echo "internet: http://192.0.2.80/ in $INETNS, reached from the host side at 192.0.2.1"

# --- Tor ---------------------------------------------------------------------------------
if [ "$real_tor" = 0 ]; then
  if [ -n "${MVNET_DEMO_TOR_SHARED:-}" ]; then
    say "Tor: the private Tor network of this test run (the default; --real-tor uses the public Tor network instead)"
  else
    say "Tor: starting the private Tor network the tests use (the default; --real-tor uses the public Tor network instead)"
  fi
  look "an authority, relays and an exit in 203.0.113.0/24, an onion service, a web site behind the exit; ~10 s"
  node dist/scripts/demo-tor.js --router-ns "$HOSTNS" --out "$work" --parent $$ >"$work/tor-helper.log" 2>&1 &
  helper_pid=$!
  wait_for_line "$work/tor-helper.log" '^ready' 90 "private Tor network" "$helper_pid"
  # shellcheck disable=SC1091
  . "$work/tor.env"
  tor_section=$(cat "$work/tor.json")
  echo "private Tor network: relays in $MVD_TOR_NS, linked into $HOSTNS by $MVD_ROUTER_IF; onion $MVD_ONION"
  onion=$MVD_ONION onion_port=$MVD_ONION_PORT onion_hello=$MVD_ONION_HELLO
  exit_url=$MVD_EXIT_URL exit_hello=$MVD_EXIT_HELLO
else
  say "Tor: the daemon's embedded Tor on the public Tor network (--real-tor)"
  tor_section='{"mode":"embedded"}'
  onion=${onion_arg:-duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion} onion_port=80 onion_hello=""
  exit_url=https://check.torproject.org/api/ip exit_hello='"IsTor":true'
fi

# --- the daemon --------------------------------------------------------------------------
say "starting the daemon (state $work/state, socket $sock)"
mkdir -p "$work/state"
# dns.upstream: the internet namespace (no DNS server there; the demo fetches by address).
printf '{"logLevel":"info","dns":{"upstream":"192.0.2.80"},"tor":%s}\n' "$tor_section" >"$work/config.json"
"${HOST[@]}" node dist/cli/main.js daemon --config "$work/config.json" --state-dir "$work/state" --socket "$sock" >"$work/daemon.log" 2>&1 &
daemon_pid=$!
wait_for_line "$work/daemon.log" '"msg":"ready"' 20 "daemon" "$daemon_pid"
echo "daemon pid $daemon_pid is ready; its Tor bootstraps in the background"

# --- networks, VMs, DHCP -----------------------------------------------------------------
say "two isolated networks, a VM on each, addresses by DHCP from mvnet"
look "udhcpc in each VM namespace getting a lease from the gateway (.1), which is also its router and DNS"
show mvnet net create lan --subnet 10.77.1.0/24
show mvnet net create anonnet --subnet 10.77.2.0/24
cat >"$work/udhcpc.sh" <<'EOF'
#!/bin/sh
# busybox udhcpc event script: the lease onto the interface; DNS into the namespace's resolv.conf.
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound | renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    ip route replace default via "${router%% *}" dev "$interface"
    echo "nameserver ${dns%% *}" >"$DEMO_RESOLV"
    echo "lease $ip/$mask router ${router%% *} dns ${dns%% *}" ;;
esac
EOF
chmod 755 "$work/udhcpc.sh"
declare -A VM_IP
vm_up() { # vm net ns tap
  local vm=$1 net=$2 ns=$3 tap=$4 n=50
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  mkdir -p "/etc/netns/$ns" && : >"/etc/netns/$ns/resolv.conf"
  show mvnet vm attach "$vm" --net "$net" --tap "$tap" --netns "$ns"
  until ip -n "$ns" link show "$tap" >/dev/null 2>&1; do [ $((n--)) -gt 0 ] || die "no $tap in $ns"; sleep 0.1; done
  local lease
  printf '%s$ ip netns exec %s udhcpc -i %s -q ...%s\n' "$dim" "$ns" "$tap" "$plain"
  lease=$(ip netns exec "$ns" env DEMO_RESOLV="/etc/netns/$ns/resolv.conf" udhcpc -f -q -n -i "$tap" -s "$work/udhcpc.sh" -t 10 -T 1 2>/dev/null | grep '^lease ') ||
    die "$vm got no DHCP lease"
  VM_IP[$vm]=$(echo "$lease" | awk '{print $2}' | cut -d/ -f1)
  ok "DHCP lease got: $vm on $net (namespace $ns, TAP $tap): $lease"
}
vm_up web lan "$WEBNS" "$TAP_WEB"
vm_up anon anonnet "$ANONNS" "$TAP_ANON"

say "anon cannot reach web: the networks are isolated"
look "no reply; mvnet has no path between networks"
if ip netns exec "$ANONNS" ping -n -c 1 -W 1 "${VM_IP[web]}" >/dev/null 2>&1; then
  die "anon reached web across networks"
fi
ok "isolation: anon (${VM_IP[anon]}) gets no reply from web (${VM_IP[web]})"

# --- direct ------------------------------------------------------------------------------
say "web routed --direct fetches a page from the internet namespace"
look "the page names the host side's address (192.0.2.1): mvnet re-originated the VM's TCP from the host"
show mvnet route --direct web
page=$(ip netns exec "$WEBNS" curl -sS -m 10 http://192.0.2.80/) || die "web could not fetch http://192.0.2.80/"
echo "   $page"
case "$page" in *"hello from the demo internet"*) ok "direct fetch: web got http://192.0.2.80/" ;; *) die "unexpected page: $page" ;; esac

# --- Tor ---------------------------------------------------------------------------------
say "anon routed --all-tor; waiting for Tor to bootstrap"
look "bootstrap progress; then every TCP connection and DNS query of anon goes through Tor"
# --wait: progress while Tor bootstraps (a bar on a terminal, a line per change otherwise).
show mvnet route --all-tor anon --wait --wait-timeout 90 || die "Tor did not bootstrap in 90 s (see mvnet tor status)"

# The leak check's capture and mvnet's capture of anon run while anon fetches. IPv6 off again
# on the host side: links moved in after the namespace was made (the Tor link) may have it on,
# and their router solicitations would be packets leaving that are not Tor's.
[ -n "$HOSTNS" ] && ip netns exec "$HOSTNS" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1
"${HOST[@]}" tcpdump -i any -n -U --immediate-mode -w "$work/leak.pcap" not net 127.0.0.0/8 2>"$work/tcpdump.err" &
tcpdump_pid=$!
wait_for_line "$work/tcpdump.err" "listening on" 10 "tcpdump" "$tcpdump_pid"
"${CLI[@]}" capture anon -w "$work/anon.pcapng" 2>"$work/capture.err" &
capture_pid=$!
wait_for_line "$work/capture.err" "capturing on" 10 "mvnet capture" "$capture_pid"
printf '%s$ mvnet capture anon -w anon.pcapng &   (and tcpdump on the host side, for the leak check)%s\n' "$dim" "$plain"

say "anon fetches an onion service by name"
look "mvnet onion add gives the onion a name; anon's DNS query for demo.onion.mvnet gets a virtual address, and the connection to it goes to the onion through Tor"
show mvnet onion add demo "$onion"
onion_url="http://demo.onion.mvnet/"
[ "$onion_port" = 80 ] || onion_url="http://demo.onion.mvnet:$onion_port/"
page=$(ip netns exec "$ANONNS" curl -sS -m 60 --retry 3 --retry-all-errors "$onion_url") || die "anon could not fetch $onion_url"
echo "   ${page:0:200}"
case "$page" in *"$onion_hello"*) ok "onion fetch: anon got $onion_url ($onion)" ;; *) die "unexpected onion page" ;; esac

say "anon fetches a page through the Tor exit"
look "the site sees the exit relay's address, not the host's"
page=$(ip netns exec "$ANONNS" curl -sS -m 60 --retry 3 --retry-all-errors "$exit_url") || die "anon could not fetch $exit_url"
echo "   ${page:0:200}"
case "$page" in *"$exit_hello"*) ;; *) die "unexpected exit page" ;; esac
if [ "$real_tor" = 0 ]; then
  seen=$(ip netns exec "$ANONNS" curl -sS -m 60 "${exit_url}whoami")
  [ "$seen" = "$MVD_EXIT_ADDRESS" ] || die "the site saw $seen, not the exit $MVD_EXIT_ADDRESS"
  ok "exit fetch: anon got $exit_url; the site saw the exit relay $seen"
else
  ok "exit fetch: anon got $exit_url"
fi

# Both end on SIGTERM as on Ctrl-C: counters printed, files complete.
kill -TERM "$capture_pid" && wait "$capture_pid" || true
kill -TERM "$tcpdump_pid" && wait "$tcpdump_pid" || true

say "leak check: what left the host side while anon fetched"
if [ "$real_tor" = 0 ]; then
  look "only TCP to the Tor relays' ORPort/DirPort (203.0.113.0/24:9001/9030), nothing else that can leave the link: no DNS, no packet for the onion or the site"
  tor_filter="net $MVD_RELAY_NET and tcp and (port 9001 or port 9030)"
  # IP packets that can leave the link: IPv6 link-local multicast (ff02::/16: router
  # solicitations, MLD of an interface's own) never does, and is not the VMs'.
  routable='(ip or (ip6 and not dst net ff02::/16))'
  total=$(tcpdump -r "$work/leak.pcap" -n "$routable" 2>/dev/null | wc -l)
  to_tor=$(tcpdump -r "$work/leak.pcap" -n "$tor_filter" 2>/dev/null | wc -l)
  other=$(tcpdump -r "$work/leak.pcap" -n "$routable and not ($tor_filter)" 2>/dev/null | wc -l)
  tcpdump -r "$work/leak.pcap" -n -c 5 2>/dev/null | sed 's/^/   /'
  [ "$other" = 0 ] || { tcpdump -r "$work/leak.pcap" -n -c 10 "$routable and not ($tor_filter)" 2>/dev/null | sed "s/^/   leaked: /"; die "$other packets left the host side outside Tor"; }
  [ "$to_tor" -gt 0 ] || die "no Tor traffic seen (the capture saw nothing)"
  ok "leak check: $total IP packets left the host side, all $to_tor to or from Tor relays; 0 others"
else
  look "nothing for the internet namespace or the VM networks: anon's traffic left only inside Tor's TLS connections"
  other=$(tcpdump -r "$work/leak.pcap" -n 'host 192.0.2.80 or net 10.77.0.0/16' 2>/dev/null | wc -l)
  [ "$other" = 0 ] || die "$other packets of the VMs or for the internet namespace left outside Tor"
  ok "leak check: 0 packets of the VMs or for the internet namespace on the host's interfaces"
fi

say "mvnet capture of anon's port, read by tshark"
look "anon's DNS query for demo.onion.mvnet answered with a virtual address (10.192.x.x), its HTTP GET to that address; upstream.test resolved (through Tor) and fetched"
sed 's/^/   /' "$work/capture.err"
printf '%s$ tshark -r anon.pcapng -Y "dns or http.request"%s\n' "$dim" "$plain"
count=$(tshark -r "$work/anon.pcapng" 2>/dev/null | wc -l)
# (|| true: head closes the pipe early, which pipefail would count as tshark failing.)
if [ "$short" = 0 ]; then (tshark -r "$work/anon.pcapng" -Y 'dns or http.request' 2>/dev/null || true) | head -n 12 | sed 's/^/   /'; fi
[ "$count" -gt 0 ] || die "tshark read no packets from $work/anon.pcapng"
ok "tshark counted $count packets in the capture of anon"

say "mvnet graph"
look "networks, VMs, and each VM's route to its exit (direct, tor)"
show mvnet graph >"$work/graph.dot"
if [ "$short" = 0 ]; then sed 's/^/   /' "$work/graph.dot"; else head -n 5 "$work/graph.dot" | sed 's/^/   /'; fi
grep -q 'anon' "$work/graph.dot" && grep -q 'web' "$work/graph.dot" || die "the graph lacks the VMs"
ok "graph printed ($(wc -l <"$work/graph.dot") lines of DOT; render with: mvnet graph | dot -Tsvg > graph.svg)"

say "mvnet status"
show mvnet status

echo
ok "demo done in $(($(date +%s) - t0)) s"
[ "$short" = 1 ] || echo "next: the README's 'By hand' steps do the same with your own daemon; 'mvnet doctor' checks this host"
