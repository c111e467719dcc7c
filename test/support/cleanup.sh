#!/usr/bin/env bash
# Removes what crashed or SIGKILLed test/bench/demo runs left behind:
#   - network namespaces named mvt-*/mvna-* (tests), mvb-* (bench), mvdemo-* (scripts/demo.sh),
#     after killing every process inside them;
#   - root-namespace links named mvt*, mvb* (veths/TAPs the tests and bench create there);
#   - temp dirs /tmp/mvt-*, /tmp/mvb-*, /tmp/mvdemo-* (state dirs, sockets, bench builds).
# Daemons the tests, bench or demo started in the root namespace are listed (pid and state
# dir), and killed only with --kill-daemons.
#
# Do not run this while a test suite, benchmark or demo is running on the same machine: it
# cannot tell their live resources from leftovers.
#
# Usage: sudo bash test/support/cleanup.sh [--dry-run] [--kill-daemons]
set -euo pipefail

dry=0
kill_daemons=0
for a in "$@"; do
  case "$a" in
    --dry-run) dry=1 ;;
    --kill-daemons) kill_daemons=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "cleanup: unknown option $a" >&2; exit 2 ;;
  esac
done

do_() {
  echo "+ $*"
  if [ "$dry" = 0 ]; then "$@" || true; fi
}

removed=0

# Namespaces.
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^(mvt-|mvna-|mvb-|mvdemo-)' || true); do
  for pid in $(ip netns pids "$ns" 2>/dev/null || true); do
    do_ kill -9 "$pid"
  done
  do_ ip netns del "$ns"
  removed=$((removed + 1))
done

# Root-namespace links (veth ends, TAPs).
for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^(mvt|mvb)' || true); do
  do_ ip link del "$link"
  removed=$((removed + 1))
done

# Daemons started by the test helpers, the bench and the demo (state dirs under /tmp/mvt-*,
# /tmp/mvb-*, /tmp/mvdemo-*).
for p in /proc/[0-9]*; do
  pid=${p#/proc/}
  cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline" || true)
  case "$cmd" in
    *dist/cli/main.js\ daemon\ --state-dir\ /tmp/mvt-*|*dist/cli/main.js\ daemon\ --state-dir\ /tmp/mvb-*|*dist/cli/main.js\ daemon\ --state-dir\ /tmp/mvdemo-*)
      if [ "$kill_daemons" = 1 ]; then
        do_ kill -9 "$pid"
        removed=$((removed + 1))
      else
        echo "test daemon still running: pid $pid: $cmd (use --kill-daemons)"
      fi
      ;;
  esac
done

# Temp dirs.
for d in /tmp/mvt-* /tmp/mvb-* /tmp/mvdemo-*; do
  [ -e "$d" ] || continue
  do_ rm -rf "$d"
  removed=$((removed + 1))
done

echo "cleanup: $removed item(s) $([ "$dry" = 1 ] && echo 'would be ' || true)removed"
