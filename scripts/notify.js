#!/usr/bin/env node
'use strict';
// The guide's `node scripts/notify.js --type deploy --message "..." [--dry-run]`: runs `dhash notify`.
require('./lib/dhash.js').run(['notify', ...process.argv.slice(2)]);
