// The server's second acceptor: a child process that shares the server's
// listening socket (sent over IPC, like a cluster worker).
//
// PGlite runs every statement synchronously on the server's thread, so while
// a statement runs the server cannot accept the connection that carries a
// CancelRequest. This process can: it reads the first packet of each
// connection it accepts (answering SSL/GSS encryption requests with 'N', as
// the server does) and
//   * a CancelRequest: appends its 8 bytes (pid, secret) to the cancel file,
//     which the engine's wait loop reads while the statement runs
//     (interrupt.mjs), rings the server over IPC, and closes the connection;
//   * anything else: hands the socket and the bytes read so far back to the
//     server, which serves it like a connection it accepted itself.

import fs from 'node:fs';

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;

let cancelFd = null;

process.on('message', (m, server) => {
  if (!m || m.type !== 'listen' || !server) return;
  cancelFd = fs.openSync(m.cancelFile, 'a');
  server.on('connection', onConnection);
  process.send({ type: 'ready' });
});
process.on('disconnect', () => process.exit(0)); // the server is gone

function onConnection(socket) {
  let buf = Buffer.alloc(0);
  const onData = (chunk) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    while (buf.length >= 8) {
      const len = buf.readInt32BE(0);
      const code = buf.readInt32BE(4);
      if (len === 8 && (code === SSL_REQUEST || code === GSSENC_REQUEST)) {
        socket.write('N');
        buf = buf.subarray(8);
        continue;
      }
      if (len === 16 && code === CANCEL_REQUEST) {
        if (buf.length < 16) return;
        fs.writeSync(cancelFd, buf.subarray(8, 16));
        process.send({ type: 'cancel' });
        socket.end();
        return;
      }
      break;
    }
    if (buf.length < 8) return;
    // A startup packet (or garbage): the server's to answer.
    socket.removeListener('data', onData);
    socket.pause();
    process.send({ type: 'connection', head: buf.toString('base64') }, socket);
  };
  socket.on('data', onData);
  socket.on('error', () => socket.destroy());
}
