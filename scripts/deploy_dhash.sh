#!/usr/bin/env bash
# The guide's `./scripts/deploy_dhash.sh [--dry-run] --env production`: runs `dhash deploy` with
# the same flags. Without --version it deploys the checkout's own version, built from the
# checkout; --dry-run plans every phase, executes none and writes deploy-dryrun.log.
set -euo pipefail
# shellcheck source=lib/dhash.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/dhash.sh"
dhash_exec deploy "$@"
