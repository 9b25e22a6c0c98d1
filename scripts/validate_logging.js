#!/usr/bin/env node
'use strict';
// The guide's `node scripts/validate_logging.js --env production --concurrency 5`: runs
// `dhash validate-logging` with the same flags (concurrent requests, then every log line they
// produced is checked: JSON, request ids, levels, no secrets; writes test_logging.log).
require('./lib/dhash.js').run(['validate-logging', ...process.argv.slice(2)]);
