// What a client's SQL may do on the shared superuser session, decided from
// PostgreSQL's own parse tree (sqlparse.mjs), and how statements that touch
// state shared by all clients are rewritten:
//   * prepared-statement names are namespaced per client in every statement
//     of a query (PREPARE, EXECUTE, DEALLOCATE, EXPLAIN EXECUTE, CREATE TABLE
//     AS EXECUTE); DEALLOCATE ALL and DISCARD ALL drop only the caller's;
//   * RESET ALL / RESET x / DISCARD ALL return to a server's defaults, not
//     PGlite's boot values;
//   * client_encoding is the client's own (encoding.mjs): SET/RESET/SHOW
//     client_encoding work on the setting rmp.client_encoding instead;
//   * a non-superuser may not change its session authorization or turn off
//     standard_conforming_strings (the parse here must read literals exactly
//     as the engine does).
// These checks are the first line only: the server also verifies the
// session's identity after every client turn (see checkTurn in server.mjs),
// which no dynamic SQL can get around.

import * as S from './sqlparse.mjs';
import { SERVER_DEFAULTS, defaultsSql } from './settings.mjs';
import * as E from './encoding.mjs';

const quoteIdent = (s) => '"' + s.replace(/"/g, '""') + '"';

export class Refusal extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

const OFF = new Set(['off', 'false', 'no', '0', 'f', 'n']);

// Checks every node of one statement for what `client` may not do.
function checkNodes(client, stmt) {
  if (client.isSuper) return;
  S.walk(stmt.node, (type, node) => {
    if (type === 'VariableSetStmt') checkSet(client, node.name, node.kind === 'VAR_SET_VALUE' ? S.setValue(node) : null, node.kind, type);
    if (type === 'FuncCall' && S.funcName(node) === 'set_config') {
      const args = node.args || [];
      const name = S.constString(args[0]);
      if (name === null) {
        throw new Refusal('42501', 'set_config() with a computed parameter name is refused for non-superusers on the embedded server');
      }
      const value = S.constString(args[1]);
      checkSet(client, name.toLowerCase(), value, value === null ? 'COMPUTED' : 'VAR_SET_VALUE', type);
    }
  });
}

function checkSet(client, name, value, kind, via) {
  if (name === 'session_authorization') {
    if (kind === 'VAR_SET_VALUE' && value === client.user) return;
    // RESET / DEFAULT at top level is rewritten to the login (what a server
    // does for a non-superuser); anywhere else it would reach the superuser.
    if ((kind === 'VAR_RESET' || kind === 'VAR_SET_DEFAULT') && via === 'top') return;
    throw new Refusal('42501', `permission denied to set session authorization "${value ?? 'DEFAULT'}"`);
  }
  if (name === 'standard_conforming_strings' && (kind === 'COMPUTED' || (value !== null && OFF.has(value.toLowerCase())))) {
    throw new Refusal('0A000', 'standard_conforming_strings cannot be turned off by non-superusers on the embedded server');
  }
}

// Plans one simple Query. `parsed` is sqlparse.parseStatements() output.
// Returns { text: Buffer, groups, copy, watch } where groups says, per
// original statement, how many statements stand for it in `text` and which
// command tag the client sees for them (null: as the engine says); `copy` is
// the COPY FROM STDIN node when the query is one; `watch` is true when a
// statement may change settings a server reports. Throws Refusal.
export function planQuery(client, parsed, ctx) {
  const { stmts, bytes } = parsed;
  const parts = [];
  const groups = [];
  let copy = null;
  let watch = false;
  let txEnd = false;
  let cursor = 0;
  const multi = stmts.length > 1;
  for (const stmt of stmts) {
    const own = bytes.subarray(stmt.start, stmt.end);
    parts.push(bytes.subarray(cursor, stmt.start));
    cursor = stmt.end;
    checkTop(client, stmt);
    checkNodes(client, stmt);
    if (mayChangeSettings(stmt)) watch = true;
    if (endsTransaction(stmt)) txEnd = true;
    const r = rewrite(client, stmt, own, { ...ctx, multi });
    if (r.copy) {
      if (multi) throw new Refusal('0A000', 'COPY FROM STDIN must be sent alone in its own query on the embedded server');
      copy = stmt.node;
    }
    parts.push(r.text);
    groups.push({ pieces: r.pieces ?? 1, tag: r.tag ?? null, keepRows: r.keepRows ?? false });
  }
  parts.push(bytes.subarray(cursor));
  return { text: Buffer.concat(parts), groups, copy, watch, txEnd };
}

// Plans the statement of a Parse message: one statement; statements that
// would need several here are refused (send them as a simple query).
export function planParse(client, parsed) {
  const { stmts, bytes } = parsed;
  if (stmts.length !== 1) return { text: bytes, watch: false, txEnd: false }; // the engine reports it
  const stmt = stmts[0];
  checkTop(client, stmt);
  checkNodes(client, stmt);
  const own = bytes.subarray(stmt.start, stmt.end);
  const r = rewrite(client, stmt, own, { multi: false, extended: true });
  if (r.copy) throw new Refusal('0A000', 'COPY FROM STDIN is only supported in the simple query protocol on the embedded server');
  if (r.pieces !== undefined && r.pieces !== 1) {
    throw new Refusal('0A000', `${stmt.type === 'DiscardStmt' ? 'DISCARD ALL' : 'DEALLOCATE ALL'} must be sent as a simple query on the embedded server`);
  }
  return {
    text: Buffer.concat([bytes.subarray(0, stmt.start), r.text, bytes.subarray(stmt.end)]),
    watch: mayChangeSettings(stmt),
    txEnd: endsTransaction(stmt),
    resetAll: stmt.type === 'VariableSetStmt' && stmt.node.kind === 'VAR_RESET_ALL',
  };
}

function checkTop(client, stmt) {
  if (client.isSuper) return;
  const n = stmt.node;
  if (stmt.type === 'VariableSetStmt') checkSet(client, n.name, n.kind === 'VAR_SET_VALUE' ? S.setValue(n) : null, n.kind, 'top');
}

// Statements after which the server re-reads the reported settings.
const WATCH_TYPES = new Set(['VariableSetStmt', 'DiscardStmt', 'DoStmt', 'CallStmt', 'ExecuteStmt']);
// A transaction's end (or a rollback to a savepoint) undoes SET LOCAL and
// rolled-back SETs: the settings are re-read then, but only when the client
// ran something that may have changed them since its last check (server.mjs),
// so that the BEGIN/COMMIT around every statement of a driver cost nothing.
const TX_ENDS = new Set(['TRANS_STMT_COMMIT', 'TRANS_STMT_ROLLBACK', 'TRANS_STMT_ROLLBACK_TO', 'TRANS_STMT_PREPARE',
  'TRANS_STMT_COMMIT_PREPARED', 'TRANS_STMT_ROLLBACK_PREPARED']);
function endsTransaction(stmt) {
  return stmt.type === 'TransactionStmt' && TX_ENDS.has(stmt.node.kind);
}
function mayChangeSettings(stmt) {
  if (WATCH_TYPES.has(stmt.type)) return true;
  let found = false;
  S.walk(stmt.node, (type, node) => {
    if (type === 'FuncCall' && S.funcName(node) === 'set_config') found = true;
    if (type === 'ExecuteStmt') found = true;
  });
  return found;
}

// One statement as the engine should run it: { text, pieces?, tag?, copy? }.
function rewrite(client, stmt, own, ctx) {
  const { type, node } = stmt;
  if (S.preparedName(type, node)) {
    const text = S.renamePrepared(own, type, node, client.prefix);
    if (!text) throw new Refusal('0A000', 'could not locate the prepared statement name in this statement on the embedded server');
    const ref = S.preparedName(type, node);
    if (ref.kind === 'prepare') client.statements.add(ref.name);
    if (ref.kind === 'deallocate') client.statements.delete(ref.name);
    return { text };
  }
  if (type === 'DeallocateStmt' && node.isall) {
    const names = [...client.statements];
    client.statements.clear();
    return group(names.map((n) => `DEALLOCATE ${quoteIdent(client.prefix + n)}`), 'DEALLOCATE ALL');
  }
  if (type === 'DiscardStmt' && node.target === 'DISCARD_ALL') {
    if (ctx.multi || client.tx !== 'I') {
      return raise('25001', 'DISCARD ALL cannot run inside a transaction block');
    }
    // DISCARD ALL's own steps (PostgreSQL's DiscardAll), with the
    // client's statements only and a server's defaults.
    const names = [...client.statements];
    client.statements.clear();
    return group([
      'CLOSE ALL', `SET SESSION AUTHORIZATION ${quoteIdent(client.user)}`, 'RESET ALL', ...defaultsSql(),
      ...startupEncodingSql(client),
      ...names.map((n) => `DEALLOCATE ${quoteIdent(client.prefix + n)}`),
      'UNLISTEN *', 'SELECT pg_advisory_unlock_all()', 'DISCARD PLANS', 'DISCARD TEMP', 'DISCARD SEQUENCES',
    ], 'DISCARD ALL');
  }
  if (type === 'VariableSetStmt') {
    const name = (node.name || '').toLowerCase();
    if (node.kind === 'VAR_RESET_ALL') {
      if (ctx.extended) return { text: own }; // defaults re-applied after the turn
      return group(['RESET ALL', ...defaultsSql(), ...startupEncodingSql(client)], 'RESET');
    }
    if (name === 'client_encoding') return clientEncoding(client, node);
    if (node.kind === 'VAR_RESET' || node.kind === 'VAR_SET_DEFAULT') {
      const tag = node.kind === 'VAR_RESET' ? 'RESET' : 'SET';
      if (name === 'session_authorization') {
        return group([`SET SESSION AUTHORIZATION ${quoteIdent(client.user)}`], ctx.extended ? null : tag);
      }
      if (SERVER_DEFAULTS.has(name)) return group(defaultsSql([name], node.is_local), ctx.extended ? null : tag);
    }
  }
  if (type === 'VariableShowStmt' && (node.name || '').toLowerCase() === 'client_encoding') {
    return { text: Buffer.from(E.SHOW_SQL), pieces: 1, tag: ctx.extended ? null : 'SHOW', keepRows: true };
  }
  if (type === 'CopyStmt' && node.is_from && !node.filename && !node.is_program) return { text: own, copy: true };
  return { text: own };
}

// SET/RESET client_encoding: the client's encoding, kept in the session
// setting rmp.client_encoding (transactional like the real one); the server
// converts the client's messages from the ParameterStatus that reports it on.
function clientEncoding(client, node) {
  const local = node.is_local ? 'LOCAL ' : '';
  let value;
  if (node.kind === 'VAR_SET_VALUE') {
    const given = S.setValue(node);
    if (given === null) return raise('22023', 'SET client_encoding takes only one argument');
    try {
      value = E.canonical(given);
    } catch (err) {
      if (err instanceof E.EncodingError) return raise(err.code, err.message);
      throw err;
    }
  } else if (node.kind === 'VAR_RESET' || node.kind === 'VAR_SET_DEFAULT') {
    value = client.startupEncoding || 'UTF8';
  } else {
    return { text: Buffer.from(raiseSql('0A000', 'this form of SET client_encoding is not supported on the embedded server')) };
  }
  return { text: Buffer.from(`SET ${local}rmp.client_encoding TO '${value}'`) };
}

// After RESET ALL: the client_encoding of the client's startup packet.
function startupEncodingSql(client) {
  return client.startupEncoding ? [`SET rmp.client_encoding TO '${client.startupEncoding}'`] : [];
}

function group(statements, tag) {
  return { text: Buffer.from(statements.join('; ')), pieces: statements.length, tag };
}

// A statement that fails with the given error inside the engine, so the
// transaction state afterwards is what a server would leave.
export function raiseSql(code, text) {
  const lit = (s) => "'" + s.replace(/'/g, "''") + "'";
  return `DO $rmp$ BEGIN RAISE EXCEPTION USING ERRCODE = ${lit(code)}, MESSAGE = ${lit(text)}; END $rmp$`;
}

function raise(code, text) {
  return { text: Buffer.from(raiseSql(code, text)), pieces: 1, tag: null };
}

// ------------------------------------------------------ output rewriting --

// Rewrites the engine's answer to a planned simple query: statements that
// stand for one of the client's come back as that one statement's command
// tag (their rows dropped); prefixed statement names in errors and notices
// are the client's own again; PGlite's debugging WARNING about aborting a
// transaction (a server sends none) is dropped.
export function rewriteOutput(out, client, groups) {
  if (!groups && !needsRewrite(out)) return out; // the common case: no copy of a large result
  const parts = [];
  let g = 0;
  let done = 0;
  let failed = false;
  const closeEmpty = () => {
    // statements that became nothing (DEALLOCATE ALL with none to drop)
    while (groups && !failed && g < groups.length && groups[g].pieces === 0) {
      parts.push(completion(groups[g].tag));
      g++;
    }
  };
  let i = 0;
  while (i + 5 <= out.length) {
    const type = String.fromCharCode(out[i]);
    const end = i + 1 + out.readInt32BE(i + 1);
    let msg = out.subarray(i, end);
    i = end;
    if (type === 'E' || type === 'N') {
      if (type === 'N' && isAbortDebugNotice(msg)) continue;
      msg = unprefixNames(msg, client.prefix);
      if (type === 'E') failed = true;
    }
    if (!groups) { parts.push(msg); continue; }
    closeEmpty();
    const cur = groups[g];
    if (type === 'C' && cur) {
      if (cur.tag === null) { parts.push(msg); g++; continue; }
      if (++done === cur.pieces) { parts.push(completion(cur.tag)); g++; done = 0; }
      continue;
    }
    if (type === 'I' && groups.length && groups.every((x) => x.pieces === 0)) continue; // all became nothing
    if ((type === 'T' || type === 'D') && cur && cur.tag !== null && !cur.keepRows) continue;
    if (type === 'Z') closeEmpty();
    parts.push(msg);
  }
  return Buffer.concat(parts);
}

// Does an answer hold an error or notice (which may name a prefixed
// statement or be PGlite's debugging warning)?
function needsRewrite(out) {
  let i = 0;
  while (i + 5 <= out.length) {
    if (out[i] === 0x45 /* E */ || out[i] === 0x4e /* N */) return true;
    i += 1 + out.readInt32BE(i + 1);
  }
  return false;
}

const completion = (tag) => {
  const body = Buffer.concat([Buffer.from(tag, 'utf8'), Buffer.from([0])]);
  const m = Buffer.alloc(5 + body.length);
  m.write('C', 0, 'latin1');
  m.writeInt32BE(4 + body.length, 1);
  body.copy(m, 5);
  return m;
};

// NoticeResponse "WARNING # 1743: aborting transaction 742" from xact.c.
function isAbortDebugNotice(msg) {
  const text = msg.toString('utf8', 5);
  return text.includes('\0M# ') && text.includes('aborting transaction') && text.includes('\0Fxact.c\0');
}

function unprefixNames(msg, prefix) {
  const body = msg.toString('utf8', 5);
  const fixed = body.split(`"${prefix}`).join('"');
  if (fixed === body) return msg;
  const b = Buffer.from(fixed, 'utf8');
  const m = Buffer.alloc(5 + b.length);
  m[0] = msg[0];
  m.writeInt32BE(4 + b.length, 1);
  b.copy(m, 5);
  return m;
}
