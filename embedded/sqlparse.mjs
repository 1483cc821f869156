// SQL as PostgreSQL itself reads it: the server's own parser (libpg_query,
// the PostgreSQL 17 grammar compiled to WebAssembly, npm @libpg-query/parser)
// splits a query into statements, says what each one is and where its names
// are. Nothing here looks at SQL text with regular expressions.
//
// Offsets from the parser are byte offsets into the UTF-8 text, so every
// slice and splice here works on Buffers.

import { loadModule, parseSync, scanSync, deparseSync } from '@libpg-query/parser';

export async function loadParser() {
  await loadModule();
}

// Parses `sql` into its statements (results are shared: never modify them).
// Returns { stmts, bytes } where each
// statement is { type, node, start, end } (byte range in `bytes`), or
// { error } when the parser refuses the text (the engine, which uses the same
// grammar, then reports the syntax error itself).
export function parseStatements(sql) {
  // Parsing costs about 0.1 ms for a short query (as much as running it in
  // PGlite); drivers and applications send the same texts again and again.
  const cached = sql.length <= CACHE_TEXT_LIMIT ? cache.get(sql) : undefined;
  if (cached) {
    cache.delete(sql); // most recently used goes last
    cache.set(sql, cached);
    return cached;
  }
  const parsed = parseUncached(sql);
  if (sql.length <= CACHE_TEXT_LIMIT) {
    cache.set(sql, parsed);
    if (cache.size > CACHE_ENTRIES) cache.delete(cache.keys().next().value);
  }
  return parsed;
}

const CACHE_TEXT_LIMIT = 16 * 1024;
const CACHE_ENTRIES = 1000;
const cache = new Map();

function parseUncached(sql) {
  const bytes = Buffer.from(sql, 'utf8');
  let tree;
  try {
    tree = parseSync(sql);
  } catch (err) {
    return { error: err.message, bytes };
  }
  const stmts = (tree.stmts || []).map((s) => {
    const start = s.stmt_location || 0;
    const end = s.stmt_len ? start + s.stmt_len : bytes.length;
    const type = Object.keys(s.stmt)[0];
    return { type, node: s.stmt[type], start, end };
  });
  return { stmts, bytes, version: tree.version };
}

// Calls fn(typeName, node) for every node of a parse tree.
export function walk(node, fn) {
  if (Array.isArray(node)) { for (const n of node) walk(n, fn); return; }
  if (!node || typeof node !== 'object') return;
  for (const [key, value] of Object.entries(node)) {
    if (value && typeof value === 'object') {
      if (/^[A-Z]/.test(key) && !Array.isArray(value)) fn(key, value);
      walk(value, fn);
    }
  }
}

// The string value of a constant node (A_Const), or null.
export function constString(node) {
  const c = node && node.A_Const;
  if (!c) return null;
  if (c.sval) return c.sval.sval ?? '';
  if (c.boolval) return c.boolval.boolval ? 'true' : 'false';
  if (c.ival) return String(c.ival.ival ?? 0);
  if (c.fval) return c.fval.fval;
  return null;
}

// The value a SET statement gives, as text ('on', 'UTF8', ...) when it is one
// constant; null for lists and DEFAULT.
export function setValue(stmt) {
  if (!stmt.args || stmt.args.length !== 1) return null;
  return constString(stmt.args[0]);
}

// A function call's name without its schema, lower case.
export function funcName(call) {
  const parts = call.funcname || [];
  const last = parts[parts.length - 1];
  return last && last.String ? last.String.sval.toLowerCase() : '';
}

// Does the token spell the identifier `name` (unquoted identifiers fold to
// lower case; quoted ones are exact)?
function tokenIs(token, name) {
  const t = token.text;
  if (t.startsWith('"')) return t.slice(1, -1).replace(/""/g, '"') === name;
  return t.toLowerCase() === name;
}

const quoteIdent = (s) => '"' + s.replace(/"/g, '""') + '"';

// Where the prepared-statement name of PREPARE / EXECUTE / DEALLOCATE name
// (also EXPLAIN EXECUTE and CREATE TABLE AS EXECUTE) sits in the statement
// text: the scanner's token after the keyword. Returns [start, end) byte
// offsets relative to the statement, or null.
function preparedNameToken(stmtBytes, type, node) {
  const tokens = scanSync(stmtBytes.toString('utf8')).tokens
    .filter((t) => t.tokenName !== 'SQL_COMMENT' && t.tokenName !== 'C_COMMENT');
  if (type === 'PrepareStmt') return tokens[1] && tokenIs(tokens[1], node.name) ? tokens[1] : null;
  if (type === 'DeallocateStmt') {
    const last = tokens[tokens.length - 1];
    return last && tokenIs(last, node.name) ? last : null;
  }
  // EXECUTE name [(params)] — possibly inside EXPLAIN or CREATE TABLE AS.
  for (let i = 0; i + 1 < tokens.length; i++) {
    if (tokens[i].text.toLowerCase() === 'execute' && tokenIs(tokens[i + 1], node.name)) {
      const after = tokens[i + 2];
      if (!after || ['(', 'with', ';'].includes(after.text.toLowerCase())) return tokens[i + 1];
    }
  }
  return null;
}

// The prepared statement a statement names, as { name, kind } with kind
// 'prepare' | 'execute' | 'deallocate', or null.
export function preparedName(type, node) {
  if (type === 'PrepareStmt') return { name: node.name, kind: 'prepare', node };
  if (type === 'ExecuteStmt') return { name: node.name, kind: 'execute', node };
  if (type === 'DeallocateStmt' && !node.isall && node.name) return { name: node.name, kind: 'deallocate', node };
  if ((type === 'ExplainStmt' || type === 'CreateTableAsStmt') && node.query && node.query.ExecuteStmt) {
    return { name: node.query.ExecuteStmt.name, kind: 'execute', node: node.query.ExecuteStmt };
  }
  return null;
}

// Rewrites the statement text so that its prepared-statement name becomes
// prefix + name. Returns the new text (Buffer) or null when the name cannot
// be located (the caller then refuses the statement).
export function renamePrepared(stmtBytes, type, node, prefix) {
  const ref = preparedName(type, node);
  if (!ref) return stmtBytes;
  const token = preparedNameToken(stmtBytes, ref.kind === 'execute' ? 'ExecuteStmt' : type, ref.node);
  if (!token) return null;
  return Buffer.concat([
    stmtBytes.subarray(0, token.start), Buffer.from(quoteIdent(prefix + ref.name)), stmtBytes.subarray(token.end),
  ]);
}

// COPY ... FROM STDIN rebuilt from its parse tree to read the file the server
// hands PGlite instead: only the target, the column list and the options of
// the client's statement survive; nothing else of the client's text is run.
export function copyFromFile(copyNode, version, filename) {
  const node = { ...copyNode, filename };
  return deparseSync({ version, stmts: [{ stmt: { CopyStmt: node } }] });
}

// The COPY target as a qualified, quoted name.
export function relationName(rel) {
  return [rel.catalogname, rel.schemaname, rel.relname].filter(Boolean).map(quoteIdent).join('.');
}

// Is a COPY's format binary (FORMAT binary or the old BINARY keyword)?
export function copyIsBinary(copyNode) {
  return (copyNode.options || []).some((o) => o.DefElem && o.DefElem.defname === 'format'
    && constStringOrWord(o.DefElem.arg) === 'binary');
}

function constStringOrWord(arg) {
  if (!arg) return null;
  if (arg.String) return arg.String.sval.toLowerCase();
  const c = constString(arg);
  return c === null ? null : c.toLowerCase();
}
