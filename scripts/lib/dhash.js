'use strict';
// Run the `dhash` command line from the guide's `node scripts/...js` shims.
//
// Resolves <repo>/.venv/bin/dhash (Scripts\dhash.exe on Windows) when the checkout has its own
// virtualenv, else `dhash` on PATH; runs it with the given arguments and inherited stdio, and
// exits with its exit code (or re-raises the signal that ended it). Node 20 stdlib only.
//
// Usage from a shim:  require('./lib/dhash.js').run(['notify', ...process.argv.slice(2)]);

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..', '..');
// SIGINT from a terminal already reaches the child (same process group), so it is only held
// here (not forwarded twice); SIGTERM/SIGHUP sent to this process are passed on.
const FORWARDED_SIGNALS = ['SIGTERM', 'SIGHUP'];
const HELD_SIGNALS = ['SIGINT'];

function resolveDhash(repo = REPO) {
  const candidates =
    process.platform === 'win32'
      ? [path.join(repo, '.venv', 'Scripts', 'dhash.exe')]
      : [path.join(repo, '.venv', 'bin', 'dhash')];
  for (const candidate of candidates) {
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // not there or not executable: try the next one
    }
  }
  return 'dhash';
}

function run(args) {
  const executable = resolveDhash();
  const child = spawn(executable, args, { stdio: 'inherit' });
  const forward = (signal) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  };
  const hold = () => {};
  for (const signal of FORWARDED_SIGNALS) process.on(signal, forward);
  for (const signal of HELD_SIGNALS) process.on(signal, hold);

  child.on('error', (err) => {
    const hint = err.code === 'ENOENT' ? ' (create .venv with `make test` or put dhash on PATH)' : '';
    process.stderr.write(`dhash: cannot run ${executable}: ${err.message}${hint}\n`);
    process.exit(127);
  });
  child.on('exit', (code, signal) => {
    for (const s of FORWARDED_SIGNALS) process.removeListener(s, forward);
    for (const s of HELD_SIGNALS) process.removeListener(s, hold);
    if (signal) {
      process.kill(process.pid, signal);
      return;
    }
    process.exit(code === null ? 1 : code);
  });
  return child;
}

module.exports = { run, resolveDhash, REPO };
