// One "backend" per client although PGlite has one: a stable virtual pid per
// connection (BackendKeyData, NotificationResponse, pg_backend_pid(),
// pg_terminate_backend()), cancel requests, and the idle-in-transaction
// timeout that keeps one idle client from holding the shared session forever.

import * as P from './protocol.mjs';

// Virtual pids start high enough not to look like PGlite's own (0) and stay
// unique for the life of the server process.
const VPID_BASE = 10000;
export const virtualPid = (clientId) => VPID_BASE + clientId;

const byPid = new Map();
// Bumped whenever a client logs in or leaves: the session's rmp.backends is
// then stale for whoever holds the session.
let generation = 0;

export function register(client) {
  byPid.set(client.vpid, client);
  generation++;
}

export function unregister(client) {
  if (byPid.get(client.vpid) === client) { byPid.delete(client.vpid); generation++; }
}

export const lookup = (vpid) => byPid.get(vpid);

// The session's pg_backend_pid() and pg_terminate_backend() read who is who
// from two settings the server sets whenever it hands the session to a client
// (rmp.backend_pid; rmp.backends, a JSON object vpid -> login role).
// pg_terminate_backend() checks the caller's rights like a server does and
// tells the server with an INFO message of its own SQLSTATE (INFO always
// reaches the client, whatever client_min_messages says, and unlike a
// notification it is not held until commit: a server's signal is immediate
// too); the server takes it out of the output, checks again (anyone can
// RAISE it) and ends that client. The functions replace the built-in ones in
// this data directory's pg_catalog.
export const TERMINATE_CODE = 'RMPT1';
export const INSTALL_SQL = [
  `CREATE OR REPLACE FUNCTION pg_catalog.pg_backend_pid() RETURNS integer LANGUAGE sql STABLE PARALLEL RESTRICTED
     AS $$ SELECT coalesce(nullif(current_setting('rmp.backend_pid', true), ''), '0')::integer $$`,
  // Built-in functions are called by OID from PostgreSQL's own table
  // (fmgr_isbuiltin), whatever pg_proc says, unless the planner inlines them:
  // so the replacements are one-line SQL functions (not STRICT: a strict one
  // with an unused parameter is not inlined).
  `CREATE OR REPLACE FUNCTION pg_catalog.rmp_terminate_backend(pid integer) RETURNS boolean
     LANGUAGE plpgsql VOLATILE STRICT AS $$
   DECLARE
     target name := coalesce(nullif(current_setting('rmp.backends', true), ''), '{}')::jsonb ->> pid::text;
   BEGIN
     IF target IS NULL THEN
       RAISE WARNING 'PID % is not a PostgreSQL backend process', pid;
       RETURN false;
     END IF;
     IF (SELECT rolsuper FROM pg_roles WHERE rolname = target)
        AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
       RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = 'permission denied to terminate process',
         DETAIL = 'Only roles with the SUPERUSER attribute may terminate processes of roles with the SUPERUSER attribute.';
     END IF;
     IF NOT (pg_has_role(current_user, target, 'USAGE') OR pg_has_role(current_user, 'pg_signal_backend', 'USAGE')) THEN
       RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = 'permission denied to terminate process',
         DETAIL = format('Only roles with privileges of the role whose process is being terminated or with privileges of the "%s" role may terminate this process.', 'pg_signal_backend');
     END IF;
     RAISE INFO USING ERRCODE = '${TERMINATE_CODE}', MESSAGE = pid::text;
     RETURN true;
   END $$`,
  `CREATE OR REPLACE FUNCTION pg_catalog.pg_terminate_backend(pid integer, timeout bigint DEFAULT 0)
     RETURNS boolean LANGUAGE sql VOLATILE PARALLEL SAFE
     AS $$ SELECT pg_catalog.rmp_terminate_backend(pid) $$`,
];

// True when the session's rmp.* settings may not describe `client` and the
// other connections any more (someone logged in or left; it ran RESET ALL).
export const identityStale = (client) => client.identityGen !== generation;
export function identityApplied(client) { client.identityGen = generation; }
export function identityLost(client) { client.identityGen = -1; }

export function identitySql(client) {
  const lit = (s) => "'" + String(s).replace(/'/g, "''") + "'";
  const backends = {};
  for (const c of byPid.values()) if (c.ready && !c.closed) backends[c.vpid] = c.user;
  return [
    `SELECT set_config('rmp.backend_pid', ${lit(client.vpid)}, false)`,
    `SELECT set_config('rmp.backends', ${lit(JSON.stringify(backends))}, false)`,
  ];
}

// The server's own check before it ends `target` for `requester`: the
// notification channel can be written by anyone with pg_notify().
export async function mayTerminate(requester, target, query) {
  if (requester.isSuper) return true;
  if (target.isSuper) return false;
  if (requester.user === target.user) return true;
  try {
    const row = (await query(`SELECT pg_has_role($1::name, $2::name, 'USAGE')
        OR pg_has_role($1::name, 'pg_signal_backend', 'USAGE') AS ok`, [requester.user, target.user])).rows[0];
    return Boolean(row?.ok);
  } catch {
    return false; // e.g. the caller's transaction is already aborted
  }
}

export const TERMINATED = 'terminating connection due to administrator command';

// Takes the terminate requests out of a turn's output: { out, pids }.
const CODE_FIELD = Buffer.from(`C${TERMINATE_CODE}\0`);
export function takeTerminations(out) {
  if (out.indexOf(CODE_FIELD) < 0) return { out, pids: [] };
  const kept = [];
  const pids = [];
  P.forEachMessage(out, (type, body, whole) => {
    if (type === 0x4e /* N */ && body.indexOf(CODE_FIELD) >= 0) {
      const m = body.indexOf(Buffer.from('\0M'));
      const start = body[0] === 0x4d ? 1 : m + 2; // the M field
      pids.push(Number(body.toString('utf8', start, body.indexOf(0, start))));
    } else {
      kept.push(whole);
    }
  });
  return { out: Buffer.concat(kept), pids };
}

export const CANCELED = 'canceling statement due to user request';

// A CancelRequest for a client whose statement still waits for the session:
// that statement is answered with 57014 and never runs (as on a server, the
// extended-protocol messages up to its Sync are skipped). A statement PGlite is
// already running cannot be interrupted (single-threaded WebAssembly: the
// request is read after it finished) and, like a cancel that arrives when
// nothing runs, is ignored.
// `waiting`: the client does not hold the session (no transaction, unit or
// COPY of its own is open), so the error is answered at once, without the
// session. Otherwise (its pipeline behind its own running statement)
// `raise(code, text)` builds the query that makes PGlite report the error in
// order, so the transaction state is exact.
export function cancelQueued(client, raise, waiting) {
  const q = client.pending;
  const i = q.findIndex((it) => 'QFPBEDC'.includes(it.type));
  if (i < 0) return false;
  const direct = waiting && i === 0 && client.tx === 'I' && !client.inUnit && !client.copy;
  const replacement = direct
    ? { type: 'answered', reply: P.readyForQuery('I') }
    : { type: 'Q', msg: raise('57014', CANCELED), synthetic: true };
  let end = i + 1;
  let unitOpen = false;
  if (q[i].type !== 'Q' && q[i].type !== 'F') {
    const sync = q.findIndex((it, k) => k > i && it.type === 'S');
    end = sync < 0 ? q.length : sync + 1;
    unitOpen = sync < 0;
  }
  q.splice(i, end - i);
  if (direct) {
    client.send(P.errorResponse('ERROR', '57014', CANCELED));
    if (unitOpen) client.skipUntilSync = replacement;
    else client.send(replacement.reply);
  } else if (unitOpen) {
    client.skipUntilSync = replacement;
  } else {
    q.splice(i, 0, replacement);
  }
  client.pendingBytes = q.reduce((n, it) => n + (it.msg ? it.msg.length : 0), 0);
  return true;
}

// Called for each message a client sends while a cancelled extended-protocol
// unit is being skipped; true when the message was consumed.
export function skipCancelled(client, item) {
  const pending = client.skipUntilSync;
  if (!pending) return false;
  if (item.type === 'S') {
    client.skipUntilSync = null;
    if (pending.type === 'answered') {
      client.send(pending.reply);
    } else {
      client.pending.push(pending);
      client.pendingBytes += pending.msg.length;
    }
  }
  return true;
}

// ------------------------------------------------------ idle in transaction --

export const IDLE_IN_TX_MESSAGE = 'terminating connection due to idle-in-transaction timeout';

// Arms (or re-arms) the client's idle timer; `onTimeout` runs if the client
// still holds the session without sending anything when it fires.
export function armIdle(client, ms, onTimeout) {
  disarmIdle(client);
  if (!(ms > 0)) return;
  client.idleTimer = setTimeout(() => {
    client.idleTimer = null;
    if (!client.closed && !client.pending.length && client.holdsSession()) onTimeout(client);
  }, ms);
  client.idleTimer.unref();
}

export function disarmIdle(client) {
  if (client.idleTimer) clearTimeout(client.idleTimer);
  client.idleTimer = null;
}

// FATAL message the way a server ends a client that idled in a transaction.
export const idleTimeoutError = () => P.errorResponse('FATAL', '25P03', IDLE_IN_TX_MESSAGE);
