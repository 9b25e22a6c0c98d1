#!/usr/bin/env node
'use strict';
// The guide's `node scripts/monitor_dhash.js --env production --duration 60` (and `--config
// quality-gates-config.json`): runs `dhash monitor` with the same flags. The quality gates are
// computed from the service's real metrics; exit 0 passed, 1 a gate failed, 2 usage, 3 locked,
// 5 inconclusive (docs/monitoring.md). DHASH_MONITOR_TIME_SCALE=N runs the schedule N times faster.
require('./lib/dhash.js').run(['monitor', ...process.argv.slice(2)]);
