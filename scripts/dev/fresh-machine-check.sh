#!/usr/bin/env bash
# Run the README's two commands as on a new machine: a pristine Debian 12 (bookworm) root made by
# debootstrap (minbase + git + make, nothing else), this repository's branch cloned into it with
# git, then `make demo`, then the bootstrap of `make test` (system packages, .venv, lint) and a
# few tests. Needs root (debootstrap, chroot, mounts) and the package archives. Not run by CI:
# it downloads a Debian base and every package; see docs/fresh-machine.md.
#
#   sudo scripts/dev/fresh-machine-check.sh [--root DIR] [--branch B] [--mirror URL] [--keep]
#                                           [--demo-only] [--tests "PYTEST ARGS"]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ROOT="/tmp/dhash-fresh-$(date -u +%Y%m%dT%H%M%SZ)"
BRANCH=$(git -C "$REPO" rev-parse --abbrev-ref HEAD)
MIRROR=""  # empty: debootstrap's default Debian mirror
KEEP=0
DEMO_ONLY=0
NICE=${NICE:-10}
# A few tests that need what `make test` installed (about 30 s): the README and the system-deps
# table, the bit-identical hash against imagehash, PDF pages through pdftoppm, a real PostgreSQL,
# promtool, a real HAProxy, the review console in Debian's chromium.
TESTS="tests/unit/test_system_deps.py tests/unit/test_readme_runbook_map.py
tests/unit/test_hash_compat.py tests/unit/test_extract_formats.py
tests/integration/test_postgres_fixture.py tests/unit/test_monitor_promql.py
tests/integration/test_fleet_haproxy.py::test_show_stat_lists_the_backend_servers_up_with_their_weight
tests/e2e/test_review_browser.py::test_session_cookie_is_httponly_strict_and_expires"

while [ $# -gt 0 ]; do
  case "$1" in
  --root) ROOT=$2; shift 2 ;;
  --branch) BRANCH=$2; shift 2 ;;
  --mirror) MIRROR=$2; shift 2 ;;
  --keep) KEEP=1; shift ;;
  --demo-only) DEMO_ONLY=1; shift ;;
  --tests) TESTS=$2; shift 2 ;;
  -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
  *) echo "fresh-machine-check: unknown argument $1 (--help)" >&2; exit 2 ;;
  esac
done

fail() { echo "fresh-machine-check: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "needs root (debootstrap, chroot and mounts)"
case "$ROOT" in /*) ;; *) fail "--root must be an absolute path" ;; esac
case "$ROOT" in *[[:space:]]*) fail "--root must not contain spaces" ;; esac
ROOT=$(realpath -m "$ROOT")
case "$ROOT/" in "$REPO"/*) fail "--root $ROOT is inside the repository; use a directory outside it" ;; esac
[ ! -e "$ROOT" ] || [ -z "$(ls -A "$ROOT")" ] || fail "$ROOT exists and is not empty"
GIT_DIR=$(cd "$REPO" && realpath "$(git rev-parse --git-common-dir)")
COMMIT=$(git -C "$REPO" rev-parse --verify "$BRANCH^{commit}") || fail "no branch $BRANCH"
if ! command -v debootstrap >/dev/null; then
  echo "installing debootstrap on this host" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

LOG="$ROOT.log"
TIMINGS=()
: >"$LOG"
say() { echo "$*" | tee -a "$LOG"; }

cleanup() {
  local rc=$? pid pids=()
  # What is still running inside the root (the demo leaves release A serving under supervisord):
  # these are this check's own processes, found by their root directory, ended by pid.
  for pid in /proc/[0-9]*; do
    [ "$(readlink "$pid/root" 2>/dev/null)" = "$ROOT" ] && pids+=("${pid#/proc/}")
  done
  if [ ${#pids[@]} -gt 0 ]; then
    say "stopping ${#pids[@]} processes left in the root: ${pids[*]}"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    sleep 3
    kill -KILL "${pids[@]}" 2>/dev/null || true
    sleep 1
  fi
  local mounted
  mounted=$(awk -v r="$ROOT/" 'index($5, r) == 1 {print $5}' /proc/self/mountinfo | sort -r)
  for m in $mounted; do umount "$m" 2>/dev/null || umount -l "$m" || true; done
  mounted=$(awk -v r="$ROOT/" 'index($5, r) == 1 {print $5}' /proc/self/mountinfo)
  if [ -n "$mounted" ]; then
    say "STILL MOUNTED (unmount by hand): $mounted"
    rc=1
  elif [ "$KEEP" -eq 0 ] && [ -d "$ROOT" ]; then
    rm -rf --one-file-system "$ROOT"
  fi
  say ""
  say "== timings (seconds, nice $NICE) =="
  for t in "${TIMINGS[@]}"; do say "$t"; done
  say "log: $LOG"
  [ "$KEEP" -eq 0 ] || say "root kept (nothing mounted): $ROOT"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Run one timed phase; stop the check at the first that fails.
phase() {
  local name=$1 start end rc
  shift
  say ""
  say "== $name: $*"
  start=$(date +%s.%N)
  set +e
  "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  set -e
  end=$(date +%s.%N)
  TIMINGS+=("$(printf '%-18s %7.1f  exit %s' "$name" "$(awk -v a="$start" -v b="$end" 'BEGIN {print b - a}')" "$rc")")
  [ "$rc" -eq 0 ] || fail "$name failed (exit $rc); see $LOG"
}

# A login on the new machine: root, a clean environment, Debian's default PATH. The one thing
# carried over from this host is the trust for the network's TLS (a proxy that re-signs the
# archives' certificates needs its CA on every machine behind it): the host's PIP_CERT bundle.
CHENV=(env -i HOME=/root USER=root LOGNAME=root SHELL=/bin/bash TERM=dumb LANG=C.UTF-8
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
in_root() { chroot "$ROOT" "${CHENV[@]}" nice -n "$NICE" bash -c "$1"; }

say "fresh-machine check of $BRANCH ($COMMIT) in $ROOT"
mkdir -p "$ROOT"
phase debootstrap nice -n "$NICE" debootstrap --variant=minbase --include=git,make bookworm "$ROOT" ${MIRROR:+"$MIRROR"}

# What an installed machine has and a debootstrap root lacks.
say "adding what an installed machine has and debootstrap does not write"
uri=$(awk '$1 == "deb" {print $2; exit}' "$ROOT/etc/apt/sources.list")
cat >"$ROOT/etc/apt/sources.list" <<EOF
deb $uri bookworm main
deb $uri bookworm-updates main
deb ${uri%/}-security bookworm-security main
EOF
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
  "$(hostname)" >"$ROOT/etc/hosts"
hostname >"$ROOT/etc/hostname"
# A chroot has no init system: keep the packages' own servers (postgresql, haproxy, sshd,
# prometheus) from starting in this host's network namespace on their default ports.
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"
ca="${PIP_CERT:-${SSL_CERT_FILE:-}}"
if [ -n "$ca" ] && [ -r "$ca" ]; then
  mkdir -p "$ROOT/etc/fresh-check"
  cp "$ca" "$ROOT/etc/fresh-check/network-ca.crt"
  CHENV+=(PIP_CERT=/etc/fresh-check/network-ca.crt SSL_CERT_FILE=/etc/fresh-check/network-ca.crt)
  say "the network's CA bundle: $ca (PIP_CERT in the root)"
fi

mount -t proc proc "$ROOT/proc"
mount -t sysfs sysfs "$ROOT/sys"
mount --rbind /dev "$ROOT/dev"
mount --make-rslave "$ROOT/dev"
mkdir -p "$ROOT/mnt/source.git"
mount --bind "$GIT_DIR" "$ROOT/mnt/source.git"
mount -o remount,bind,ro "$ROOT/mnt/source.git"

phase clone in_root "git clone -q --branch $BRANCH /mnt/source.git /root/dhash && git -C /root/dhash log --oneline -1"
# make demo's prerequisites one at a time, to time them; then make demo itself, which finds them done.
phase demo-system-deps in_root "cd /root/dhash && make system-deps-demo && python3 --version"
phase venv in_root "cd /root/dhash && make venv"
phase demo in_root "cd /root/dhash && make demo"
if [ "$DEMO_ONLY" -eq 0 ]; then
  phase test-system-deps in_root "cd /root/dhash && make system-deps"
  phase lint in_root "cd /root/dhash && make lint"
  phase tests in_root "cd /root/dhash && .venv/bin/pytest -p no:cacheprovider -q $(echo $TESTS)"
fi
say ""
say "fresh-machine check passed: $BRANCH ($COMMIT)"
