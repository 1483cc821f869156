// Session settings as a PostgreSQL server has them: which ones a server
// reports to its client (ParameterStatus), the defaults RESET ALL / DISCARD
// ALL return to, and which ones a startup packet may carry.

import * as P from './protocol.mjs';

// Settings PostgreSQL 17 marks GUC_REPORT: sent at startup and whenever their
// value changes (before the next ReadyForQuery).
export const REPORTED_AT_STARTUP = [
  'application_name', 'client_encoding', 'DateStyle', 'default_transaction_read_only', 'in_hot_standby',
  'integer_datetimes', 'IntervalStyle', 'is_superuser', 'scram_iterations', 'server_encoding', 'server_version',
  'session_authorization', 'standard_conforming_strings', 'TimeZone',
];
// Those a session can change (the others are fixed for the server's life),
// plus exit_on_error and statement_timeout, which the server emulates per
// client (see server.mjs and interrupt.mjs).
export const WATCHED = [
  'session_authorization', 'is_superuser', 'client_encoding', 'DateStyle', 'IntervalStyle', 'TimeZone',
  'standard_conforming_strings', 'application_name', 'default_transaction_read_only', 'exit_on_error',
  'statement_timeout',
];
const REPORTED = new Set(REPORTED_AT_STARTUP);

// PGlite boots its single-user backend with debugging values on its command
// line (search_path pg_catalog, enable_seqscan off, exit_on_error on,
// client_min_messages debug3, TimeZone GMT); RESET returns to those. These
// are a stock server's values instead, applied wherever a RESET happens.
export const SERVER_DEFAULTS = new Map([
  ['search_path', '"$user", public'],
  ['enable_seqscan', 'on'],
  ['client_min_messages', 'notice'],
  ['timezone', "'UTC'"],
  ['exit_on_error', 'off'],
]);

// SQL that puts every setting PGlite boots differently back to a server's
// default. `local` for SET LOCAL.
export function defaultsSql(names = [...SERVER_DEFAULTS.keys()], local = false) {
  return names.map((n) => `SET ${local ? 'LOCAL ' : ''}${n} TO ${SERVER_DEFAULTS.get(n)}`);
}

// Settings that identify the session: never taken from a startup packet (a
// server takes the user from the packet itself and refuses the rest to
// non-superusers; here the underlying session is a superuser's).
const NOT_AT_STARTUP = new Set(['session_authorization', 'role']);

// Startup-packet settings a client may carry: the user-settable (context
// 'user') parameters of the engine, read once at start, and custom
// placeholders (name.with.dot). Returns [name, value] pairs to apply, or
// throws an Error with .code for the first one refused.
export function startupSettings(params, userSettable) {
  const out = new Map();
  const add = (name, value) => {
    const key = name.toLowerCase();
    if (NOT_AT_STARTUP.has(key) || !(userSettable.has(key) || (key.includes('.') && /^[a-z_][a-z0-9_$.]*$/.test(key)))) {
      const err = new Error(`parameter "${name}" cannot be set at connection start on the embedded server`);
      err.code = userSettable.has(key) || NOT_AT_STARTUP.has(key) ? '42501' : '42704';
      if (err.code === '42704') err.message = `unrecognized configuration parameter "${name}"`;
      throw err;
    }
    out.set(name, value);
  };
  for (const [k, v] of Object.entries(params)) {
    if (!['user', 'database', 'options', 'replication'].includes(k) && !k.startsWith('_pq_.')) add(k, v);
  }
  for (const [name, value] of parseOptions(params.options || '')) add(name, value);
  return out;
}

// libpq's options string: "-c name=value --name=value", backslash escapes a
// space. Split like the postmaster's pg_split_opts.
export function parseOptions(options) {
  const words = [];
  let cur = '';
  let escaped = false;
  for (const ch of options) {
    if (escaped) { cur += ch; escaped = false; continue; }
    if (ch === '\\') { escaped = true; continue; }
    if (/\s/.test(ch)) { if (cur) words.push(cur); cur = ''; continue; }
    cur += ch;
  }
  if (cur) words.push(cur);
  const out = [];
  for (let i = 0; i < words.length; i++) {
    let w = words[i];
    if (w === '-c' && i + 1 < words.length) w = words[++i];
    else if (w.startsWith('-c')) w = w.slice(2);
    else if (w.startsWith('--')) w = w.slice(2);
    else {
      const err = new Error(`invalid command-line argument for server process: ${w}`);
      err.code = '42601';
      throw err;
    }
    const eq = w.indexOf('=');
    if (eq <= 0) {
      const err = new Error(`-c ${w} requires a value`);
      err.code = '42601';
      throw err;
    }
    out.push([w.slice(0, eq).replace(/-/g, '_'), w.slice(eq + 1)]);
  }
  return out;
}

// ----------------------------------------------------- reading the values --

const parseMsg = (name, sql) => P.message('P', Buffer.concat([P.cstr(name), P.cstr(sql), Buffer.from([0, 0])]));
const bindMsg = (portal, stmt) => P.message('B', Buffer.concat([P.cstr(portal), P.cstr(stmt), Buffer.alloc(6)]));
const executeMsg = (portal) => P.message('E', Buffer.concat([P.cstr(portal), Buffer.alloc(4)]));
const closePortal = (name) => P.message('C', Buffer.concat([Buffer.from('P'), P.cstr(name)]));

// Every setting the server reads back: SHOW statements prepared once on the
// session (rmp_show_<name>), so a turn check costs a Bind/Execute per
// setting, not a parse.
export const SHOWN = [...new Set([...WATCHED, ...REPORTED_AT_STARTUP])];
const showStatement = (name) => `rmp_show_${name.toLowerCase()}`;

// client_encoding is the client's, kept in rmp.client_encoding (encoding.mjs;
// the engine session stays UTF8); '' there (reset) is UTF8.
const SHOWN_AS = new Map([['client_encoding', 'rmp.client_encoding']]);

// Prepares the SHOW statements; each with its own Sync, so one that exists
// already does not stop the others.
export function prepareShowMessages() {
  return Buffer.concat(SHOWN.flatMap((n) => [parseMsg(showStatement(n), `SHOW ${SHOWN_AS.get(n) || n}`), P.sync()]));
}

// One round trip that reads `names` with the prepared SHOWs through named
// portals: SHOW takes no snapshot (a SELECT would, and then a following SET
// TRANSACTION ISOLATION LEVEL fails) and named messages leave the client's
// unnamed statement and portal alone (a simple Query would drop them).
export function showMessages(names) {
  const parts = [];
  for (const n of names) {
    const s = showStatement(n);
    parts.push(bindMsg(s, s), executeMsg(s), closePortal(s));
  }
  parts.push(P.sync());
  return Buffer.concat(parts);
}

// SET statements run the same way (as the session's current user).
export function runMessages(statements) {
  const parts = [];
  statements.forEach((sql, i) => {
    const s = `rmp_set_${i}`;
    parts.push(parseMsg(s, sql), bindMsg(s, s), executeMsg(s), closePortal(s), P.closeStatement(s));
  });
  parts.push(P.sync());
  return Buffer.concat(parts);
}

// Values of the SHOWs, in order; null when any of them failed.
export function readShown(out, names) {
  const values = [];
  let i = 0;
  while (i + 5 <= out.length) {
    const type = out[i];
    const len = out.readInt32BE(i + 1);
    if (type === 0x45 /* E */) return null;
    if (type === 0x44 /* D */) {
      const n = out.readInt32BE(i + 7);
      values.push(n < 0 ? null : out.toString("utf8", i + 11, i + 11 + n));
    }
    i += 1 + len;
  }
  if (values.length !== names.length) return null;
  return new Map(names.map((n, k) => [n, SHOWN_AS.has(n) && !values[k] ? 'UTF8' : values[k]]));
}

// ParameterStatus messages for what changed since `reported` (updated).
export function parameterChanges(values, reported) {
  const out = [];
  for (const [name, value] of values) {
    if (!REPORTED.has(name) || value === null) continue;
    if (reported.get(name) !== value) {
      reported.set(name, value);
      out.push(P.parameterStatus(name, value));
    }
  }
  return out;
}
