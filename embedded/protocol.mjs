// PostgreSQL wire-protocol helpers: framing, message builders and the few
// message rewrites the embedded server needs. No I/O here.

export const SSL_REQUEST = 80877103;
export const GSSENC_REQUEST = 80877104;
export const CANCEL_REQUEST = 80877102;
export const PROTOCOL_3 = 196608;
export const MAX_MESSAGE = 1024 * 1024 * 1024; // PostgreSQL's own limit (MaxAllocSize)
export const MAX_STARTUP = 10000; // postmaster's MAX_STARTUP_PACKET_LENGTH

export function cstr(s) {
  return Buffer.concat([Buffer.from(s, 'utf8'), Buffer.from([0])]);
}

export function message(type, body = Buffer.alloc(0)) {
  const out = Buffer.allocUnsafe(5 + body.length);
  out.write(type, 0, 'latin1');
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

export const query = (sql) => message('Q', cstr(sql));
export const sync = () => message('S');
export const closeStatement = (name) => message('C', Buffer.concat([Buffer.from('S'), cstr(name)]));
export const commandComplete = (tag) => message('C', cstr(tag));
export const readyForQuery = (status) => message('Z', Buffer.from(status, 'latin1'));
export const authenticationOk = () => message('R', Buffer.from([0, 0, 0, 0]));
export const parameterStatus = (k, v) => message('S', Buffer.concat([cstr(k), cstr(v)]));

export function backendKeyData(pid, secret) {
  const b = Buffer.alloc(8);
  b.writeInt32BE(pid, 0);
  b.writeInt32BE(secret, 4);
  return message('K', b);
}

export function errorResponse(severity, code, text) {
  return message('E', Buffer.concat([
    Buffer.from('S'), cstr(severity), Buffer.from('V'), cstr(severity),
    Buffer.from('C'), cstr(code), Buffer.from('M'), cstr(text), Buffer.from([0]),
  ]));
}

export function copyInResponse(binary, ncols) {
  const b = Buffer.alloc(3 + 2 * ncols);
  b.writeInt8(binary ? 1 : 0, 0);
  b.writeInt16BE(ncols, 1);
  for (let i = 0; i < ncols; i++) b.writeInt16BE(binary ? 1 : 0, 3 + 2 * i);
  return message('G', b);
}

// Splits a buffer of backend messages and returns the status byte of the last
// ReadyForQuery ('I', 'T', 'E') or null when there is none.
export function lastReadyStatus(buf) {
  let status = null;
  let i = 0;
  while (i + 5 <= buf.length) {
    const len = buf.readInt32BE(i + 1);
    if (buf[i] === 0x5a /* Z */) status = String.fromCharCode(buf[i + 5]);
    i += 1 + len;
  }
  return status;
}

export function hasError(buf) {
  let i = 0;
  while (i + 5 <= buf.length) {
    if (buf[i] === 0x45 /* E */) return true;
    i += 1 + buf.readInt32BE(i + 1);
  }
  return false;
}

// Reads NUL-terminated strings from a message body.
export function readCStrings(body, count, offset = 0) {
  const out = [];
  let pos = offset;
  for (let n = 0; n < count; n++) {
    const end = body.indexOf(0, pos);
    if (end < 0) throw new Error('unterminated string in message');
    out.push(body.toString('utf8', pos, end));
    pos = end + 1;
  }
  return { strings: out, next: pos };
}

export function parseStartupParams(body) {
  // body starts after the protocol code
  const params = {};
  let pos = 0;
  while (pos < body.length && body[pos] !== 0) {
    const { strings, next } = readCStrings(body, 2, pos);
    params[strings[0]] = strings[1];
    pos = next;
  }
  return params;
}

// Rewrites the statement name inside Parse ('P'), Bind ('B'), Describe ('D')
// and Close ('C') messages so that each client's prepared statements live in
// their own namespace on the shared session. Returns { msg, name } where name
// is the client's original statement name ('' for the unnamed statement).
export function renameStatement(type, msg, prefix) {
  const body = msg.subarray(5);
  let pos = 0;
  let head = Buffer.alloc(0);
  if (type === 'B') {
    const portal = readCStrings(body, 1, 0);
    head = body.subarray(0, portal.next);
    pos = portal.next;
  } else if (type === 'D' || type === 'C') {
    if (body[0] !== 0x53 /* S */) return { msg, name: null };
    head = body.subarray(0, 1);
    pos = 1;
  }
  const { strings, next } = readCStrings(body, 1, pos);
  const name = strings[0];
  if (name === '') return { msg, name };
  const renamed = Buffer.concat([head, cstr(prefix + name), body.subarray(next)]);
  return { msg: message(type, renamed), name };
}

export function parseQueryText(msg) {
  const body = msg.subarray(5);
  const end = body.indexOf(0);
  return body.toString('utf8', 0, end < 0 ? body.length : end);
}

export function parseParseMessage(msg) {
  const { strings } = readCStrings(msg.subarray(5), 2, 0);
  return { name: strings[0], sql: strings[1] };
}

// Replaces the query text of a Parse message, keeping its name and parameter types.
export function replaceParseText(msg, text) {
  const body = msg.subarray(5);
  const { next: afterName } = readCStrings(body, 1, 0);
  const { next: afterText } = readCStrings(body, 1, afterName);
  return message('P', Buffer.concat([body.subarray(0, afterName), text, Buffer.from([0]), body.subarray(afterText)]));
}

// The fields of the first ErrorResponse in a buffer of backend messages
// ({ S, C, M, ... } by field code), or {}.
export function errorFields(buf) {
  let i = 0;
  while (i + 5 <= buf.length) {
    const len = buf.readInt32BE(i + 1);
    if (buf[i] === 0x45 /* E */) {
      const fields = {};
      let p = i + 5;
      while (p < i + 1 + len && buf[p] !== 0) {
        const end = buf.indexOf(0, p + 1);
        fields[String.fromCharCode(buf[p])] = buf.toString('utf8', p + 1, end);
        p = end + 1;
      }
      return fields;
    }
    i += 1 + len;
  }
  return {};
}

// Inserts messages right before the last ReadyForQuery (where a server puts
// ParameterStatus for settings changed by the statements just run).
export function insertBeforeLastReady(buf, extra) {
  let last = -1;
  let i = 0;
  while (i + 5 <= buf.length) {
    if (buf[i] === 0x5a /* Z */) last = i;
    i += 1 + buf.readInt32BE(i + 1);
  }
  if (last < 0) return Buffer.concat([buf, extra]);
  return Buffer.concat([buf.subarray(0, last), extra, buf.subarray(last)]);
}

// Calls fn(typeByte, body, wholeMessage) for each backend message in buf.
export function forEachMessage(buf, fn) {
  let i = 0;
  while (i + 5 <= buf.length) {
    const len = buf.readInt32BE(i + 1);
    fn(buf[i], buf.subarray(i + 5, i + 1 + len), buf.subarray(i, i + 1 + len));
    i += 1 + len;
  }
}

// The first column of the first DataRow of a simple query's answer, as text
// (null when there is none or it is NULL).
export function firstValue(buf) {
  let value = null;
  let found = false;
  forEachMessage(buf, (type, body) => {
    if (found || type !== 0x44 /* D */ || body.readInt16BE(0) < 1) return;
    found = true;
    const len = body.readInt32BE(2);
    if (len >= 0) value = body.toString('utf8', 6, 6 + len);
  });
  return value;
}
