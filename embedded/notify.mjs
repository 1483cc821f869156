// LISTEN/NOTIFY across connections on one shared PGlite session.
//
// The session stays LISTENing on every channel any client listens on (plus
// the server's own terminate channel). Each client's channels are tracked from
// its LISTEN / UNLISTEN / DISCARD ALL statements (read with PostgreSQL's own
// parser), applied when its transaction commits. PGlite emits a
// NotificationResponse in the output of the turn that committed the NOTIFY;
// the server takes those out, gives them the sender's virtual pid and hands
// each to the clients listening on its channel — in the output for the sender
// itself, asynchronously for the others (they are idle: the sender holds the
// session).

import * as B from './backends.mjs';
import * as P from './protocol.mjs';
import { parseStatements } from './sqlparse.mjs';

const quoteIdent = (s) => '"' + s.replace(/"/g, '""') + '"';

// The listen-related statements of one query text, in order:
// ['listen', name] / ['unlisten', name] / ['unlisten', null] (all), and
// ['reset', null] for RESET ALL / DISCARD ALL. Only texts that contain one of
// the key words are parsed.
const MAY_MATTER = /listen|discard|reset/i;
export function listenStatements(sql) {
  if (!MAY_MATTER.test(sql)) return [];
  const parsed = parseStatements(sql);
  if (parsed.error) return []; // PostgreSQL will refuse it too
  const out = [];
  for (const { type, node } of parsed.stmts) {
    if (type === 'ListenStmt') out.push(['listen', node.conditionname]);
    else if (type === 'UnlistenStmt') out.push(['unlisten', node.conditionname ?? null]);
    else if (type === 'DiscardStmt' && node.target === 'DISCARD_ALL') out.push(['unlisten', null], ['reset', null]);
    else if (type === 'VariableSetStmt' && node.kind === 'VAR_RESET_ALL') out.push(['reset', null]);
  }
  return out;
}

// Records what a client message may change; applied at commit (afterTurn).
export function noteMessage(client, item) {
  let sql = null;
  if (item.type === 'Q') sql = P.parseQueryText(item.msg);
  else if (item.type === 'P') sql = P.parseParseMessage(item.msg).sql;
  if (!sql) return;
  for (const change of listenStatements(sql)) {
    // RESET ALL / DISCARD ALL also reset the server's rmp.* identity settings (backends.mjs).
    if (change[0] === 'reset') B.identityLost(client);
    else client.listenPending.push(change);
  }
}

function commandTags(buf) {
  const tags = [];
  let errored = false;
  P.forEachMessage(buf, (type, body) => {
    if (type === 0x43 /* C */) tags.push(body.toString('utf8', 0, body.length - 1));
    else if (type === 0x45 /* E */) errored = true;
  });
  return { tags, errored };
}

// Applies a client's pending LISTEN/UNLISTEN once its transaction is over.
// Returns the SQL that puts back other clients' channels the client's UNLISTEN
// took off the shared session, or null.
function applyPending(client, out, status, allClients) {
  if (!client.listenPending.length || status !== 'I') return null;
  const { tags, errored } = commandTags(out);
  const changes = client.listenPending;
  client.listenPending = [];
  // An error outside a transaction block, or a ROLLBACK, undid them.
  if (errored || tags.includes('ROLLBACK')) return null;
  let unlistened = false;
  for (const [op, channel] of changes) {
    if (op === 'listen') client.channels.add(channel);
    else {
      unlistened = true;
      if (channel === null) client.channels.clear();
      else client.channels.delete(channel);
    }
  }
  if (!unlistened) return null;
  const needed = neededChannels(allClients);
  return needed.size ? [...needed].map((c) => `LISTEN ${quoteIdent(c)}`).join('; ') : null;
}

export function neededChannels(allClients, extra = []) {
  const needed = new Set(extra);
  for (const c of allClients) if (!c.closed) for (const ch of c.channels) needed.add(ch);
  return needed;
}

function notification(pid, channel, payload) {
  const b = Buffer.alloc(4);
  b.writeInt32BE(pid, 0);
  return P.message('A', Buffer.concat([b, P.cstr(channel), P.cstr(payload)]));
}

// Routes the notifications in the output of `client`'s turn. Returns the
// output for the client itself, the SQL to run to restore the session's
// listens (or null).
export function afterTurn(client, out, status, allClients) {
  const relisten = applyPending(client, out, status, allClients);
  if (out.indexOf(0x41) < 0) return { out, relisten }; // fast path: no 'A' byte at all
  const kept = [];
  let changed = false;
  P.forEachMessage(out, (type, body, whole) => {
    if (type !== 0x41 /* A */) { kept.push(whole); return; }
    changed = true;
    const end1 = body.indexOf(0, 4);
    const channel = body.toString('utf8', 4, end1);
    const payload = body.toString('utf8', end1 + 1, body.length - 1);
    const note = notification(client.vpid, channel, payload);
    for (const other of allClients) {
      if (other === client || other.closed || !other.ready || !other.channels.has(channel)) continue;
      other.send(note);
    }
    if (client.channels.has(channel)) kept.push(note);
  });
  return { out: changed ? Buffer.concat(kept) : out, relisten };
}
