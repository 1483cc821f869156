// Interrupting a running statement: a client's CancelRequest and its
// statement_timeout.
//
// PGlite runs a statement synchronously on the server's thread and installs
// no signal handlers, so neither a cancel nor PostgreSQL's statement timer
// (SIGALRM) can reach it the usual way. But while a statement waits
// (pg_sleep, pg_sleep_for, ...) PGlite's wait loop reads the clock,
// performance.now(), over and over; that is where this module looks, every
// POLL_MS, whether the statement should stop:
//   * its client's CancelRequest arrived (read from a cancel file; nothing
//     writes it yet: this thread cannot accept the cancel's connection while
//     the engine runs, and the child-process acceptor tried for that was
//     taken out, see README.md);
//   * its client's statement_timeout passed (counted from the start of the
//     client's turn: a simple Query, or the extended-protocol messages sent
//     together).
// It then raises PostgreSQL's own query-cancel interrupt the way the SIGINT
// handler would: QueryCancelPending and InterruptPending set, the backend's
// latch set so the wait ends now, and the interrupt holdoff that PGlite leaves
// at 1 after start-up (until the first error) cleared. The engine's
// CHECK_FOR_INTERRUPTS then fails the statement with 57014 and aborts the
// transaction exactly as a server does. A statement that never reads the
// clock (a CPU-bound query) is not reached: it runs to its end, and the
// cancel is dropped then, like a cancel that arrives after a statement ended.
//
// The flags are not exported by PGlite; their addresses follow from the
// exported InterruptPending by the order of PostgreSQL 17's globals.c, which
// is checked against two other exported neighbours before anything is used.

import fs from 'node:fs';

const POLL_MS = 2;
// Offsets from InterruptPending (globals.c, sig_atomic_t/uint32 = 4 bytes).
const QUERY_CANCEL_PENDING = 4;
const PROC_DIE_PENDING = 8;
const INTERRUPT_HOLDOFF = 44;
const QUERY_CANCEL_HOLDOFF = 48;
const CRIT_SECTION = 52;

const realNow = performance.now.bind(performance);
let active = null; // the Interrupter of the statement running now
performance.now = function now() {
  const t = realNow();
  if (active !== null) active.poll(t);
  return t;
};

export const STATEMENT_TIMEOUT_MESSAGE = 'canceling statement due to statement timeout';
const USER_REQUEST_MESSAGE = 'canceling statement due to user request';

export class Interrupter {
  // `cancelFile`: the file the acceptor appends CancelRequests to.
  constructor(cancelFile) {
    this.fd = fs.openSync(cancelFile, 'a+');
    this.offset = 0;
    this.deferred = []; // CancelRequests for clients not running now (the caller handles them)
    this.running = null;
    this.supported = false;
  }

  // The engine (again after a restart): PGlite's Module. False when its
  // memory layout is not the one this module knows (nothing is then touched).
  attach(mod) {
    const ip = mod._InterruptPending;
    this.supported = typeof ip === 'number' && mod._ProcDiePending === ip + PROC_DIE_PENDING
      && mod._CritSectionCount === ip + CRIT_SECTION && typeof mod._MyLatch === 'number';
    this.mod = mod;
    this.ip = ip;
    return this.supported;
  }

  // Before the engine runs `client`'s turn.
  begin(client, timeoutMs) {
    if (!this.supported) return;
    this.running = { client, deadline: timeoutMs > 0 ? realNow() + timeoutMs : Infinity, reason: null,
      holdoff: this.int(INTERRUPT_HOLDOFF), nextPoll: realNow() + POLL_MS };
    active = this;
  }

  // After it: why the turn was interrupted ('cancel', 'timeout') or null.
  end() {
    active = null;
    const run = this.running;
    this.running = null;
    if (!run || !run.reason) return null;
    // A statement that ended before it looked at the interrupt: the next one must not see it.
    this.setInt(QUERY_CANCEL_PENDING, 0);
    return run.reason;
  }

  int(offset) {
    return this.mod.HEAP32[(this.ip + offset) >> 2];
  }

  setInt(offset, value) {
    this.mod.HEAP32[(this.ip + offset) >> 2] = value;
  }

  poll(t) {
    const run = this.running;
    if (!run || t < run.nextPoll) return;
    run.nextPoll = t + POLL_MS;
    if (!run.reason) {
      for (const rec of this.readCancels()) {
        if (rec.pid === run.client.vpid && rec.secret === run.client.secret) run.reason = 'cancel';
        else this.deferred.push(rec);
      }
      if (!run.reason && t >= run.deadline) run.reason = 'timeout';
      if (!run.reason) return;
    }
    if (run.raised) return;
    // Not inside a section that holds interrupts (beyond PGlite's own leftover hold).
    if (this.int(CRIT_SECTION) !== 0 || this.int(QUERY_CANCEL_HOLDOFF) !== 0 || this.int(INTERRUPT_HOLDOFF) > run.holdoff) return;
    run.raised = true;
    this.setInt(INTERRUPT_HOLDOFF, 0);
    this.setInt(QUERY_CANCEL_PENDING, 1);
    this.setInt(0, 1); // InterruptPending
    const latch = this.mod.HEAPU32[this.mod._MyLatch >> 2];
    if (latch) this.mod.HEAP32[latch >> 2] = 1; // latch->is_set: the wait returns
  }

  // New CancelRequests in the cancel file: [{ pid, secret }].
  readCancels() {
    const out = [];
    const buf = Buffer.alloc(8 * 64);
    for (;;) {
      const n = fs.readSync(this.fd, buf, 0, buf.length, this.offset);
      const whole = n - (n % 8);
      for (let i = 0; i < whole; i += 8) out.push({ pid: buf.readInt32BE(i), secret: buf.readInt32BE(i + 4) });
      this.offset += whole;
      if (n < buf.length) return out;
    }
  }

  // CancelRequests not for a running statement, read now or during one.
  takeCancels() {
    const out = this.deferred.concat(this.readCancels());
    this.deferred = [];
    return out;
  }
}

// The engine's 57014 after a statement timeout says so (PGlite only knows
// the user-request form).
export function timeoutMessage(out) {
  const from = Buffer.from(`M${USER_REQUEST_MESSAGE}\0`);
  const at = out.indexOf(from);
  if (at < 0) return out;
  // the ErrorResponse holding it: rebuild with the new text and length
  let i = 0;
  while (i + 5 <= out.length) {
    const end = i + 1 + out.readInt32BE(i + 1);
    if (at > i && at < end && out[i] === 0x45 /* E */) {
      const body = out.subarray(i + 5, end);
      const fixed = Buffer.concat([body.subarray(0, at - i - 5), Buffer.from(`M${STATEMENT_TIMEOUT_MESSAGE}\0`),
        body.subarray(at - i - 5 + from.length)]);
      const head = Buffer.alloc(5);
      head[0] = 0x45;
      head.writeInt32BE(4 + fixed.length, 1);
      return Buffer.concat([out.subarray(0, i), head, fixed, out.subarray(end)]);
    }
    i = end;
  }
  return out;
}

// statement_timeout as SHOW prints it ('0', '10ms', '5s', '1min', '2h', '1d')
// or as a startup packet gives it (a number is milliseconds) -> ms.
export function durationMs(value) {
  if (value === null || value === undefined) return 0;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h|d)?\s*$/i.exec(String(value));
  if (!m) return 0;
  const unit = { ms: 1, s: 1000, min: 60000, h: 3600000, d: 86400000 }[(m[2] || 'ms').toLowerCase()];
  return Math.round(Number(m[1]) * unit);
}
