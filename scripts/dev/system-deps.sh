#!/usr/bin/env bash
# Install the Debian packages the tests and the demo need, only when they are missing.
# Idempotent and quiet when everything is present; needs root (or sudo) otherwise.
set -euo pipefail

need=()
have_pg() { compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; }
have_pg || need+=(postgresql)
command -v pdftoppm >/dev/null || need+=(poppler-utils)
# `ip` builds the network namespace the rollout-under-load test runs in.
command -v ip >/dev/null || need+=(iproute2)
# The monitor's tests check the PromQL math with promtool and run a real Prometheus server.
command -v prometheus >/dev/null && command -v promtool >/dev/null || need+=(prometheus)
# The review console's browser tests drive Debian's chromium through its driver package.
{ command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || need+=(chromium chromium-driver)
# The fleet's tests: a real HAProxy in front of the hosts, and each host an sshd in its own
# network namespace (the engine reaches the hosts over SSH).
[ -x /usr/sbin/haproxy ] || need+=(haproxy)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v curl >/dev/null || need+=(curl)
# The guide's `node scripts/*.js` lines, which its end-to-end test runs verbatim.
command -v node >/dev/null || need+=(nodejs)
# `python3 -m venv` (the .venv of make demo and make test) needs ensurepip, which Debian ships
# apart from the interpreter.
"${PYTHON:-python3}" -c "import ensurepip" 2>/dev/null || need+=(python3-venv)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing Debian packages: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian's prometheus package starts a server on :9090 and postgresql one on 5432; the tests
# run their own on private ports and data dirs, so the packaged ones are left alone.
# Debian's postgresql package starts a cluster on port 5432; the tests run their own on a
# private port and data dir, so the packaged one is left alone.
