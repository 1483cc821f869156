// Memory bounds: a client's queue of messages waiting for the session is
// bounded (its socket stops being read while the queue is full), and COPY
// FROM STDIN data is spooled to a file that PGlite reads with COPY ... FROM
// 'file' instead of being held in memory (it used to be held about three
// times: the chunks, a Blob, and PGlite's ArrayBuffer behind /dev/blob).

import fs from 'node:fs';
import path from 'node:path';

export const QUEUE_MAX_BYTES = 8 * 1024 * 1024;
export const QUEUE_MAX_MESSAGES = 20000;

export function queued(client, item) {
  client.pending.push(item);
  client.pendingBytes += item.msg ? item.msg.length : 0;
  if (!client.paused && (client.pendingBytes > QUEUE_MAX_BYTES || client.pending.length > QUEUE_MAX_MESSAGES)) {
    client.paused = true;
    client.socket.pause();
  }
}

export function dequeued(client, item) {
  client.pendingBytes -= item.msg ? item.msg.length : 0;
  if (client.paused && client.pendingBytes <= QUEUE_MAX_BYTES / 2 && client.pending.length <= QUEUE_MAX_MESSAGES / 2) {
    client.paused = false;
    if (!client.closed) client.socket.resume();
  }
}

// The spool directory lives inside the data directory because that is what
// PGlite mounts (at `engineDir`); it is emptied at every start.
const SPOOL = 'rmp_copy';

export function resetSpool(dataDir) {
  const dir = path.join(dataDir, SPOOL);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
}

let spoolCounter = 0;

export class CopySpool {
  constructor(dataDir, engineDir) {
    const name = `copy-${process.pid}-${++spoolCounter}`;
    this.hostPath = path.join(dataDir, SPOOL, name);
    this.enginePath = `${engineDir}/${SPOOL}/${name}`;
    this.fd = fs.openSync(this.hostPath, 'w', 0o600);
    this.bytes = 0;
  }

  write(data) {
    fs.writeSync(this.fd, data);
    this.bytes += data.length;
  }

  finish() {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }

  remove() {
    this.finish();
    fs.rmSync(this.hostPath, { force: true });
  }
}
