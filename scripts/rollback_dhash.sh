#!/usr/bin/env bash
# The guide's `./scripts/rollback_dhash.sh --env production [--backup FILE] --reason "..."`:
# runs `dhash rollback` with the same flags. Without --backup it goes back to the previous
# release (schema downgraded, or the deploy's backup restored keeping later writes when the
# migrations cannot go down); with --backup it restores that backup, keeping later writes.
set -euo pipefail
# shellcheck source=lib/dhash.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/dhash.sh"
dhash_exec rollback "$@"
