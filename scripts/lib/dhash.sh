# shellcheck shell=bash
# Run the `dhash` command line from the guide's `./scripts/*.sh` shims. Source it, then:
#
#   dhash_exec backup create "$@"     # replaces the shell with dhash; its exit code is ours
#
# Resolves <repo>/.venv/bin/dhash when the checkout has its own virtualenv, else `dhash` on
# PATH. exec keeps signals and exit codes (0 ok, 1 failed check, 2 usage, 3 locked,
# 4 integrity) exactly as dhash gives them.

dhash_repo_root() {
  (cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
}

dhash_resolve() {
  local root candidate
  root="$(dhash_repo_root)"
  candidate="$root/.venv/bin/dhash"
  if [[ -x "$candidate" ]]; then
    printf '%s\n' "$candidate"
  elif command -v dhash >/dev/null 2>&1; then
    command -v dhash
  else
    printf 'dhash: cannot find the dhash command (create %s/.venv with `make test` or put dhash on PATH)\n' "$root" >&2
    return 127
  fi
}

dhash_exec() {
  local executable
  executable="$(dhash_resolve)" || exit 127
  exec "$executable" "$@"
}
