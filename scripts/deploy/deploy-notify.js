#!/usr/bin/env node
'use strict';
// The guide's `node scripts/deploy/deploy-notify.js --phase start --env production ...`:
// runs `dhash deploy-notify`.
require('../lib/dhash.js').run(['deploy-notify', ...process.argv.slice(2)]);
