#!/usr/bin/env bash
# Install the Debian packages a group of commands needs, only those that are missing.
#   system-deps.sh demo      what `make demo` needs (the interpreter and its venv module)
#   system-deps.sh [test]    what `make test` needs: the demo's and the tests' (the default)
#   system-deps.sh --list G  print group G's packages, one a line, and install nothing
# Idempotent and quiet when everything is present; needs root (or sudo) otherwise. One table
# below, so the README's lists can be checked against it (tests/unit/test_system_deps.py).
set -euo pipefail

PY="${PYTHON:-}"
[ -n "$PY" ] || PY=python3

# group | package | present when (a shell test). A `test` run takes the `demo` rows too.
TABLE=$(
  cat <<'EOF'
demo|python3|command -v python3 >/dev/null
demo|python3-venv|"$PY" -c "import ensurepip" 2>/dev/null
test|postgresql|compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null
test|poppler-utils|command -v pdftoppm >/dev/null
test|iproute2|command -v ip >/dev/null
test|prometheus|command -v prometheus >/dev/null && command -v promtool >/dev/null
test|chromium|command -v chromium >/dev/null
test|chromium-driver|command -v chromedriver >/dev/null
test|libatomic1|ldconfig -p | grep -q 'libatomic\.so\.1 '
test|haproxy|[ -x /usr/sbin/haproxy ]
test|openssh-server|[ -x /usr/sbin/sshd ]
test|curl|command -v curl >/dev/null
test|nodejs|command -v node >/dev/null
EOF
)
# Why each test row: PostgreSQL is the production store the suite runs for real; pdftoppm renders
# the PDF test inputs; `ip` builds the network namespaces of the rollout-under-load and fleet
# tests; the monitor's tests check the PromQL math with promtool and run a real Prometheus; the
# review console's browser tests drive Debian's chromium through its driver (no browser is ever
# downloaded), from Playwright's own node, which needs libatomic (a minimal Debian has none); the fleet's tests put a real HAProxy in front of hosts that each run an sshd; the
# guide's `curl` and `node scripts/*.js` lines run verbatim in its end-to-end test. `python3-venv`
# carries ensurepip, which `python3 -m venv` needs and Debian ships apart from the interpreter.

list=0
if [ "${1:-}" = "--list" ]; then
  list=1
  shift
fi
group="${1:-test}"
case "$group" in
demo) groups="demo" ;;
test) groups="demo test" ;;
*)
  echo "system-deps.sh: unknown group '$group' (demo or test)" >&2
  exit 2
  ;;
esac

need=()
while IFS='|' read -r row_group package present; do
  case " $groups " in *" $row_group "*) ;; *) continue ;; esac
  if [ "$list" -eq 1 ]; then
    echo "$package"
  elif ! eval "$present"; then
    need+=("$package")
  fi
done <<<"$TABLE"

if [ "$list" -eq 1 ] || [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null; then
    echo "system-deps.sh: these Debian packages are missing: ${need[*]}; run as root or install sudo" >&2
    exit 1
  fi
  SUDO="sudo"
fi
echo "installing Debian packages ($group): ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian's postgresql, prometheus, haproxy and openssh-server packages start their own servers
# (5432, 9090, 80, 22) where an init system runs; the tests start theirs on private ports and data
# dirs, so the packaged ones are left alone.
