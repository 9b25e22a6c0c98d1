#!/usr/bin/env bash
# The guide's `./scripts/migrate_dhash.sh [--dry-run] --env production`: runs `dhash migrate`
# with the same flags (upgrade to head; --dry-run rehearses it and writes migrate-dryrun.log).
set -euo pipefail
# shellcheck source=lib/dhash.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/dhash.sh"
dhash_exec migrate "$@"
