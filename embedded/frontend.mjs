// Frontend (client -> server) messages: framing without quadratic buffer
// growth, and a structural check of every message body before it goes near
// PGlite. A server answers a malformed message with 08P01 and ends that
// connection; PGlite would throw (or abort the WebAssembly runtime) on some of
// them, which must never cost the other clients their connections.

export class ProtocolViolation extends Error {
  constructor(message) {
    super(message);
    this.code = '08P01';
  }
}

// Collects socket chunks and hands out whole frames. Chunks are kept in a list
// and joined once per frame, so a large message arriving in many small chunks
// costs linear time and one copy (Buffer.concat on every chunk was quadratic).
export class FrameReader {
  constructor() {
    this.chunks = [];
    this.length = 0;
  }

  push(chunk) {
    if (!chunk.length) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  // The first n bytes (n <= length) as one Buffer, without consuming them.
  peek(n) {
    if (this.chunks[0].length >= n) return this.chunks[0].subarray(0, n);
    const parts = [];
    let got = 0;
    for (const c of this.chunks) {
      parts.push(c);
      got += c.length;
      if (got >= n) break;
    }
    return Buffer.concat(parts, got).subarray(0, n);
  }

  // Consumes and returns n bytes (n <= length) as one Buffer of its own.
  take(n) {
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0];
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.length -= n;
    return out;
  }
}

// Reads a message body the way PostgreSQL's pq_getmsg* functions do and
// throws ProtocolViolation where the server would say "invalid message format"
// or "insufficient data left in message".
class BodyReader {
  constructor(body, type) {
    this.body = body;
    this.pos = 0;
    this.type = type;
  }

  fail(what) {
    throw new ProtocolViolation(`invalid ${what} in message type "${this.type}"`);
  }

  need(n) {
    if (n < 0 || this.pos + n > this.body.length) this.fail('length (insufficient data left)');
  }

  int16() { this.need(2); const v = this.body.readUInt16BE(this.pos); this.pos += 2; return v; }

  int32() { this.need(4); const v = this.body.readInt32BE(this.pos); this.pos += 4; return v; }

  byte() { this.need(1); return this.body[this.pos++]; }

  skip(n) { this.need(n); this.pos += n; }

  cstr() {
    const end = this.body.indexOf(0, this.pos);
    if (end < 0) this.fail('string (no terminator)');
    const s = this.body.subarray(this.pos, end);
    this.pos = end + 1;
    return s;
  }

  end() {
    if (this.pos !== this.body.length) this.fail('message format (trailing bytes)');
  }
}

function formatCodes(r, count) {
  for (let i = 0; i < count; i++) {
    const f = r.int16();
    if (f !== 0 && f !== 1) throw new ProtocolViolation(`unsupported format code: ${f}`);
  }
}

function values(r, count) {
  for (let i = 0; i < count; i++) {
    const len = r.int32();
    if (len === -1) continue;
    if (len < -1) r.fail('parameter length');
    r.skip(len);
  }
}

// Throws ProtocolViolation unless `msg` (type byte + length + body) is a
// well-formed frontend message of the types this server accepts after login.
export function checkMessage(msg) {
  const type = String.fromCharCode(msg[0]);
  const r = new BodyReader(msg.subarray(5), type);
  switch (type) {
    case 'Q': case 'f':
      r.cstr(); break;
    case 'P': {
      r.cstr(); r.cstr();
      const n = r.int16();
      r.skip(4 * n);
      break;
    }
    case 'B': {
      r.cstr(); r.cstr();
      const nfmt = r.int16();
      formatCodes(r, nfmt);
      const nparams = r.int16();
      if (nfmt > 1 && nfmt !== nparams) {
        throw new ProtocolViolation(`bind message has ${nfmt} parameter formats but ${nparams} parameters`);
      }
      values(r, nparams);
      formatCodes(r, r.int16());
      break;
    }
    case 'D': case 'C': {
      const kind = r.byte();
      if (kind !== 0x53 && kind !== 0x50) {
        throw new ProtocolViolation(`invalid ${type === 'D' ? 'DESCRIBE' : 'CLOSE'} message subtype ${kind}`);
      }
      r.cstr();
      break;
    }
    case 'E':
      r.cstr(); r.int32(); break;
    case 'F': {
      r.int32();
      const nfmt = r.int16();
      formatCodes(r, nfmt);
      values(r, r.int16());
      formatCodes(r, 1);
      break;
    }
    case 'S': case 'H': case 'c': case 'X':
      break;
    case 'd': case 'p':
      return; // any bytes
    default:
      throw new ProtocolViolation(`invalid frontend message type ${msg[0]}`);
  }
  r.end();
}
