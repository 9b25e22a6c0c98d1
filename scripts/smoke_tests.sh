#!/usr/bin/env bash
# The guide's `./scripts/smoke_tests.sh --env production [--timeout 600] [--post-rollback]`:
# runs `dhash smoke` with the same flags (health, ready, metrics, known-image hash, ingest and
# match round trip, review queue; writes postdeploy-smoketests.log in the current directory).
set -euo pipefail
# shellcheck source=lib/dhash.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/dhash.sh"
dhash_exec smoke "$@"
