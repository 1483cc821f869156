// Per-client character encodings. PGlite cannot run PostgreSQL's encoding
// conversions (their modules are not in the WebAssembly build: the first one
// aborts the runtime), so the engine session always speaks UTF8 and this
// server converts each client's messages to and from the encoding the client
// chose, where a server would convert inside the backend:
//   * SET client_encoding (and RESET, SHOW, a startup packet's
//     client_encoding) is kept in the session setting rmp.client_encoding
//     (guard.mjs rewrites the statements), so it is transactional, saved and
//     restored at hand-over like any other SET, and reported to the client
//     with ParameterStatus like a server does;
//   * from the ParameterStatus that tells a client its new encoding on, its
//     messages are converted (clientToServer) and so is everything it is sent
//     (Converter), message by message, the way the backend's pq_* routines
//     convert the strings of each message.
// The conversions are iconv-lite's (npm), which covers every encoding below;
// the ones it does not have are refused with the server's own 0A000 error.

import iconv from 'iconv-lite';

// PostgreSQL encoding name -> iconv-lite name (null: not converted here).
const CODECS = new Map([
  ['UTF8', null], ['SQL_ASCII', null],
  ['LATIN1', 'iso-8859-1'], ['LATIN2', 'iso-8859-2'], ['LATIN3', 'iso-8859-3'], ['LATIN4', 'iso-8859-4'],
  ['LATIN5', 'iso-8859-9'], ['LATIN6', 'iso-8859-10'], ['LATIN7', 'iso-8859-13'], ['LATIN8', 'iso-8859-14'],
  ['LATIN9', 'iso-8859-15'], ['LATIN10', 'iso-8859-16'],
  ['ISO_8859_5', 'iso-8859-5'], ['ISO_8859_6', 'iso-8859-6'], ['ISO_8859_7', 'iso-8859-7'], ['ISO_8859_8', 'iso-8859-8'],
  ['WIN866', 'cp866'], ['WIN874', 'windows-874'], ['WIN1250', 'windows-1250'], ['WIN1251', 'windows-1251'],
  ['WIN1252', 'windows-1252'], ['WIN1253', 'windows-1253'], ['WIN1254', 'windows-1254'], ['WIN1255', 'windows-1255'],
  ['WIN1256', 'windows-1256'], ['WIN1257', 'windows-1257'], ['WIN1258', 'windows-1258'],
  ['KOI8R', 'koi8-r'], ['KOI8U', 'koi8-u'],
  ['EUC_JP', 'euc-jp'], ['SJIS', 'cp932'], ['EUC_KR', 'euc-kr'], ['UHC', 'cp949'], ['EUC_CN', 'gb2312'],
  ['GBK', 'gbk'], ['GB18030', 'gb18030'], ['BIG5', 'big5'],
]);
// Encodings PostgreSQL knows that are not converted here.
const UNSUPPORTED = new Set(['EUC_TW', 'EUC_JIS_2004', 'SHIFT_JIS_2004', 'JOHAB', 'MULE_INTERNAL']);

// PostgreSQL's own names and aliases (encnames.c), as clean_encoding_name
// leaves them: lower case, letters and digits only.
const ALIASES = new Map([
  ['abc', 'WIN1258'], ['alt', 'WIN866'], ['big5', 'BIG5'], ['euccn', 'EUC_CN'], ['eucjis2004', 'EUC_JIS_2004'],
  ['eucjp', 'EUC_JP'], ['euckr', 'EUC_KR'], ['euctw', 'EUC_TW'], ['gb18030', 'GB18030'], ['gbk', 'GBK'],
  ['iso88591', 'LATIN1'], ['iso885910', 'LATIN6'], ['iso885913', 'LATIN7'], ['iso885914', 'LATIN8'],
  ['iso885915', 'LATIN9'], ['iso885916', 'LATIN10'], ['iso88592', 'LATIN2'], ['iso88593', 'LATIN3'],
  ['iso88594', 'LATIN4'], ['iso88595', 'ISO_8859_5'], ['iso88596', 'ISO_8859_6'], ['iso88597', 'ISO_8859_7'],
  ['iso88598', 'ISO_8859_8'], ['iso88599', 'LATIN5'], ['johab', 'JOHAB'], ['koi8', 'KOI8R'], ['koi8r', 'KOI8R'],
  ['koi8u', 'KOI8U'], ['latin1', 'LATIN1'], ['latin2', 'LATIN2'], ['latin3', 'LATIN3'], ['latin4', 'LATIN4'],
  ['latin5', 'LATIN5'], ['latin6', 'LATIN6'], ['latin7', 'LATIN7'], ['latin8', 'LATIN8'], ['latin9', 'LATIN9'],
  ['latin10', 'LATIN10'], ['mskanji', 'SJIS'], ['muleinternal', 'MULE_INTERNAL'], ['shiftjis', 'SJIS'],
  ['shiftjis2004', 'SHIFT_JIS_2004'], ['sjis', 'SJIS'], ['sqlascii', 'SQL_ASCII'], ['tcvn', 'WIN1258'],
  ['tcvn5712', 'WIN1258'], ['uhc', 'UHC'], ['unicode', 'UTF8'], ['utf8', 'UTF8'], ['vscii', 'WIN1258'],
  ['win', 'WIN1251'], ['win1250', 'WIN1250'], ['win1251', 'WIN1251'], ['win1252', 'WIN1252'],
  ['win1253', 'WIN1253'], ['win1254', 'WIN1254'], ['win1255', 'WIN1255'], ['win1256', 'WIN1256'],
  ['win1257', 'WIN1257'], ['win1258', 'WIN1258'], ['win866', 'WIN866'], ['win874', 'WIN874'],
  ['win932', 'SJIS'], ['win936', 'GBK'], ['win949', 'UHC'], ['win950', 'BIG5'],
  ['windows1250', 'WIN1250'], ['windows1251', 'WIN1251'], ['windows1252', 'WIN1252'], ['windows1253', 'WIN1253'],
  ['windows1254', 'WIN1254'], ['windows1255', 'WIN1255'], ['windows1256', 'WIN1256'], ['windows1257', 'WIN1257'],
  ['windows1258', 'WIN1258'], ['windows866', 'WIN866'], ['windows874', 'WIN874'], ['windows932', 'SJIS'],
  ['windows936', 'GBK'], ['windows949', 'UHC'], ['windows950', 'BIG5'],
]);

// What SHOW client_encoding runs: the client's encoding ('' after a RESET
// ALL without one in the startup packet is UTF8).
export const SHOW_SQL = "SELECT COALESCE(NULLIF(pg_catalog.current_setting('rmp.client_encoding', true), ''), 'UTF8') AS client_encoding";

export class EncodingError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

// The PostgreSQL name of a client_encoding value, as SET client_encoding
// accepts it. Throws EncodingError with the server's code and message for a
// name PostgreSQL does not know (22023) or one not converted here (0A000).
export function canonical(value) {
  const clean = String(value).toLowerCase().replace(/[^a-z0-9]/g, '');
  const name = ALIASES.get(clean);
  if (!name) throw new EncodingError('22023', `invalid value for parameter "client_encoding": "${value}"`);
  if (UNSUPPORTED.has(name) || !CODECS.has(name)) {
    throw new EncodingError('0A000', `conversion between ${name} and UTF8 is not supported on the embedded server`);
  }
  return name;
}

// The codec for what the client was last told its encoding is; null for
// UTF8 and SQL_ASCII (bytes pass unchanged) and for any value not known here.
export function codecFor(reported) {
  if (!reported) return null;
  const clean = String(reported).toLowerCase().replace(/[^a-z0-9]/g, '');
  const name = ALIASES.get(clean);
  const iconvName = name ? CODECS.get(name) : null;
  return iconvName ? { name, iconv: iconvName } : null;
}

const hexBytes = (buf) => [...buf].map((b) => '0x' + b.toString(16).padStart(2, '0')).join(' ');

// Client bytes -> UTF8. Throws EncodingError 22021 for bytes that are not
// valid in the client's encoding (decoded to U+FFFD where the original was
// not one: encode(decode(x)) differs from x).
export function toUtf8(codec, bytes) {
  const text = iconv.decode(bytes, codec.iconv);
  if (text.includes('\ufffd')) {
    const back = iconv.encode(text, codec.iconv);
    if (!back.equals(bytes)) {
      let i = 0;
      while (i < bytes.length && i < back.length && bytes[i] === back[i]) i++;
      throw new EncodingError('22021', `invalid byte sequence for encoding "${codec.name}": ${hexBytes(bytes.subarray(i, i + 2))}`);
    }
  }
  return Buffer.from(text, 'utf8');
}

// UTF8 bytes -> client bytes. Throws EncodingError 22P05 for a character the
// client's encoding has no equivalent for.
export function fromUtf8(codec, bytes) {
  const text = bytes.toString('utf8');
  const out = iconv.encode(text, codec.iconv);
  if (out.includes(0x3f) /* '?': what iconv-lite puts for an unmappable character */) {
    const back = iconv.decode(out, codec.iconv);
    if (back !== text) {
      let i = 0;
      while (i < text.length && back[i] === text[i]) i++;
      const ch = String.fromCodePoint(text.codePointAt(i));
      throw new EncodingError('22P05', `character with byte sequence ${hexBytes(Buffer.from(ch, 'utf8'))} `
        + `in encoding "UTF8" has no equivalent in encoding "${codec.name}"`);
    }
  }
  return out;
}

// A text COPY's data from the client: a character may be split between two
// CopyData messages, so the decoder keeps state (write() per message, end()).
export function copyDecoder(codec) {
  return iconv.getDecoder(codec.iconv);
}

// ------------------------------------------------------------ messages --

function cstrings(body, offset, count) {
  const out = [];
  let i = offset;
  for (let k = 0; k < count; k++) {
    const end = body.indexOf(0, i);
    out.push(body.subarray(i, end));
    i = end + 1;
  }
  return { strings: out, next: i };
}

function message(type, parts) {
  const body = Buffer.concat(parts);
  const m = Buffer.alloc(5 + body.length);
  m[0] = type;
  m.writeInt32BE(4 + body.length, 1);
  body.copy(m, 5);
  return m;
}

const Z = Buffer.from([0]);
const withNul = (b) => [b, Z];

// Converts the strings of one frontend message (Q, P, B, D, C, E and the
// CopyData of a text COPY) from the client's encoding to UTF8. Function
// calls (F) and binary parameters pass unchanged.
export function clientToServer(codec, msg) {
  const type = msg[0];
  const body = msg.subarray(5);
  const conv = (b) => toUtf8(codec, b);
  switch (String.fromCharCode(type)) {
    case 'Q':
      return message(type, withNul(conv(body.subarray(0, body.indexOf(0)))));
    case 'P': {
      const { strings: [name, sql], next } = cstrings(body, 0, 2);
      return message(type, [...withNul(conv(name)), ...withNul(conv(sql)), body.subarray(next)]);
    }
    case 'D': case 'C':
      return message(type, [body.subarray(0, 1), ...withNul(conv(body.subarray(1, body.indexOf(0, 1))))]);
    case 'E': {
      const end = body.indexOf(0);
      return message(type, [...withNul(conv(body.subarray(0, end))), body.subarray(end + 1)]);
    }
    case 'B': {
      const { strings: [portal, stmt], next } = cstrings(body, 0, 2);
      let i = next;
      const nfmt = body.readInt16BE(i);
      const formats = [];
      for (let k = 0; k < nfmt; k++) formats.push(body.readInt16BE(i + 2 + 2 * k));
      i += 2 + 2 * nfmt;
      const head = body.subarray(next, i);
      const nparams = body.readInt16BE(i);
      const parts = [...withNul(conv(portal)), ...withNul(conv(stmt)), head, body.subarray(i, i + 2)];
      i += 2;
      for (let k = 0; k < nparams; k++) {
        const len = body.readInt32BE(i);
        const fmt = nfmt === 0 ? 0 : nfmt === 1 ? formats[0] : formats[k];
        if (len < 0 || fmt !== 0) {
          parts.push(body.subarray(i, i + 4 + Math.max(len, 0)));
        } else {
          const value = conv(body.subarray(i + 4, i + 4 + len));
          const l = Buffer.alloc(4);
          l.writeInt32BE(value.length);
          parts.push(l, value);
        }
        i += 4 + Math.max(len, 0);
      }
      parts.push(body.subarray(i));
      return message(type, parts);
    }
    default:
      return msg;
  }
}

// Text types whose binary form is the text itself (PostgreSQL converts those
// in binary results too): text, varchar, bpchar, name, unknown, json, xml.
const TEXT_OIDS = new Set([25, 1043, 1042, 19, 705, 114, 142]);

// Converts the engine's answers to one client, message by message. Keeps
// what it must know between answers: the column formats of the rows being
// sent (RowDescription, or the Bind that started the portal) and whether a
// COPY TO STDOUT is text. An unmappable character in a row fails like on a
// server: ErrorResponse 22P05 instead of the rest of that result.
export class Converter {
  constructor() {
    this.columns = null;    // [{ convert: bool }] for the DataRows being sent
    this.binaryResults = false; // the client asked for binary results at some Bind
    this.copyText = false;  // CopyOutResponse said text
    this.failed = false;    // dropping the rest of a result after 22P05
  }

  // A Bind asking for binary results: rows that come without a
  // RowDescription (a portal executed without Describe) are then passed
  // unchanged, since which of their columns are text is not known here.
  noteBind(msg) {
    const body = msg.subarray(5);
    const { next } = cstrings(body, 0, 2);
    let i = next;
    const nfmt = body.readInt16BE(i);
    i += 2 + 2 * nfmt;
    const nparams = body.readInt16BE(i);
    i += 2;
    for (let k = 0; k < nparams; k++) i += 4 + Math.max(body.readInt32BE(i), 0);
    const nres = body.readInt16BE(i);
    for (let k = 0; k < nres; k++) if (body.readInt16BE(i + 2 + 2 * k) !== 0) this.binaryResults = true;
  }

  convert(codec, buf) {
    const parts = [];
    let i = 0;
    let changed = false;
    while (i + 5 <= buf.length) {
      const end = i + 1 + buf.readInt32BE(i + 1);
      const msg = buf.subarray(i, end);
      i = end;
      let out;
      try {
        out = this.one(codec, msg);
      } catch (err) {
        if (!(err instanceof EncodingError)) throw err;
        out = errorMessage(err);
        this.failed = true;
      }
      if (out !== msg) changed = true;
      if (out) parts.push(out);
    }
    return changed ? Buffer.concat(parts) : buf;
  }

  one(codec, msg) {
    const type = String.fromCharCode(msg[0]);
    const body = msg.subarray(5);
    const conv = (b) => fromUtf8(codec, b);
    if (this.failed) {
      // the rest of the failed result; the answer goes on from its end
      if ('CsIZ'.includes(type)) { this.failed = false; this.columns = null; }
      if (type === 'Z') return msg;
      return null;
    }
    switch (type) {
      case '2':
        this.columns = this.binaryResults ? { unknown: true } : null;
        return msg;
      case 'T': {
        const n = body.readInt16BE(0);
        let k = 2;
        const parts = [body.subarray(0, 2)];
        const cols = [];
        for (let c = 0; c < n; c++) {
          const end = body.indexOf(0, k);
          parts.push(conv(body.subarray(k, end)), Z, body.subarray(end + 1, end + 19));
          cols.push({ oid: body.readInt32BE(end + 7), format: body.readInt16BE(end + 17) });
          k = end + 19;
        }
        this.columns = { cols };
        return message(msg[0], parts);
      }
      case 'D': {
        const n = body.readInt16BE(0);
        const parts = [body.subarray(0, 2)];
        let k = 2;
        for (let c = 0; c < n; c++) {
          const len = body.readInt32BE(k);
          const value = body.subarray(k + 4, k + 4 + Math.max(len, 0));
          if (len < 0 || !this.textColumn(c)) {
            parts.push(body.subarray(k, k + 4 + Math.max(len, 0)));
          } else {
            const v = conv(value);
            const l = Buffer.alloc(4);
            l.writeInt32BE(v.length);
            parts.push(l, v);
          }
          k += 4 + Math.max(len, 0);
        }
        return message(msg[0], parts);
      }
      case 'H':
        this.copyText = body[0] === 0;
        return msg;
      case 'd':
        return this.copyText ? message(msg[0], [conv(body)]) : msg;
      case 'C': case 'E': case 'N': case 'S': case 'A': {
        if (type === 'C') { this.columns = null; this.copyText = false; }
        if (type === 'A') return message(msg[0], [body.subarray(0, 4), ...mapStrings(body.subarray(4), (b) => conv(b))]);
        // Errors, notices and command tags must always arrive: a character
        // with no equivalent becomes '?' there, as the backend does.
        const lossy = (b) => iconv.encode(b.toString('utf8'), codec.iconv);
        if (type === 'E' || type === 'N') {
          // fields: a type byte, then the text
          return message(msg[0], mapStrings(body, (b) => (b.length ? Buffer.concat([b.subarray(0, 1), lossy(b.subarray(1))]) : b)));
        }
        return message(msg[0], mapStrings(body, lossy));
      }
      default:
        return msg;
    }
  }

  textColumn(c) {
    const cols = this.columns;
    if (!cols) return true;
    if (cols.cols) {
      const col = cols.cols[c];
      return !col || col.format === 0 || TEXT_OIDS.has(col.oid);
    }
    return false; // binary results asked for, no RowDescription: which columns are text is unknown
  }
}

// Every NUL-terminated string of a message body mapped by fn(bytes).
function mapStrings(body, fn) {
  const out = [];
  let i = 0;
  while (i < body.length) {
    const end = body.indexOf(0, i);
    if (end < 0) { out.push(body.subarray(i)); break; }
    out.push(fn(body.subarray(i, end)), Z);
    i = end + 1;
  }
  return out;
}

function errorMessage(err) {
  const fields = Buffer.concat([
    Buffer.from('SERROR\0VERROR\0C' + err.code + '\0M'), Buffer.from(err.message, 'utf8'), Z, Z,
  ]);
  return message(0x45, [fields]);
}
