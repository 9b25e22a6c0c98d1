#!/usr/bin/env bash
# The guide's `./scripts/backup_dhash.sh --env production [--retention-days 14]`:
# runs `dhash backup create` with the same flags (backups/ is relative to the current directory).
set -euo pipefail
# shellcheck source=lib/dhash.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/dhash.sh"
dhash_exec backup create "$@"
