// The two comparison servers of the benchmarks, one per process:
//
//   node servers.mjs --kind ws       --listen 127.0.0.1:0   the limit: a minimal `ws` echo server
//   node servers.mjs --kind socketio --listen 127.0.0.1:0   a socket.io 4 server
//
// Each prints `listening on http://ADDR` once bound, so that the fault proxy can run it itself
// (`fault-proxy --spawn-upstream -- node servers.mjs --kind ws --listen 127.0.0.1:0`) and restart
// it on the same port (`POST /restart-upstream`), like the reference server.
//
// Raw WebSocket protocol (text messages, one message per WebSocket frame):
//   anything not starting with '#'   echoed back as is
//   '#burst N'                       the server sends N 64-byte messages, one ws.send() each
//   '#count N'                       the server counts the next N messages (no echo) and then
//                                    sends '#done N'
// socket.io events:
//   'echo' (data)        -> emit('echo', data) to the sender
//   'burst' (n)          -> n x emit('m', 64-byte string)
//   'm' (data, ack)      -> ack() (one acknowledgement per message, socket.io's own mechanism)
import http from 'node:http';

import { Server as SocketIoServer } from 'socket.io';
import { WebSocketServer } from 'ws';

const PAYLOAD = 'x'.repeat(64);

function parseArgs(argv) {
    const options = { kind: null, listen: '127.0.0.1:0' };
    for (let i = 0; i < argv.length; i += 1) {
        const flag = argv[i];
        const value = argv[i + 1];
        if (flag === '--kind') options.kind = value;
        else if (flag === '--listen') options.listen = value;
        else if (flag.startsWith('--listen=')) { options.listen = flag.slice('--listen='.length); continue; }
        else throw new Error(`unknown flag ${flag}`);
        i += 1;
    }
    if (options.kind !== 'ws' && options.kind !== 'socketio') {
        throw new Error('usage: node servers.mjs --kind ws|socketio [--listen 127.0.0.1:0]');
    }
    const at = options.listen.lastIndexOf(':');
    const host = options.listen.slice(0, at);
    if (host !== '127.0.0.1') throw new Error('loopback only: --listen 127.0.0.1:PORT');
    return { kind: options.kind, host, port: Number(options.listen.slice(at + 1)) };
}

function serveRawWebSocket(server) {
    const wss = new WebSocketServer({ server, perMessageDeflate: false });
    wss.on('connection', (socket) => {
        let counting = 0;
        let counted = 0;
        socket.on('message', (data, isBinary) => {
            if (counting > 0) {
                counted += 1;
                if (counted === counting) {
                    socket.send(`#done ${counted}`);
                    counting = 0;
                }
                return;
            }
            const text = isBinary ? null : data.toString();
            if (text !== null && text.startsWith('#burst ')) {
                const n = Number(text.slice(7));
                for (let i = 0; i < n; i += 1) socket.send(PAYLOAD);
            } else if (text !== null && text.startsWith('#count ')) {
                counting = Number(text.slice(7));
                counted = 0;
            } else {
                socket.send(data, { binary: isBinary });
            }
        });
    });
}

function serveSocketIo(server) {
    // Loopback pages on another port: reflect the origin (CORS matters only for polling).
    const io = new SocketIoServer(server, { cors: { origin: true }, serveClient: false });
    io.on('connection', (socket) => {
        socket.on('echo', (data) => socket.emit('echo', data));
        socket.on('burst', (n) => {
            for (let i = 0; i < n; i += 1) socket.emit('m', PAYLOAD);
        });
        socket.on('m', (_data, ack) => {
            if (typeof ack === 'function') ack();
        });
    });
}

const { kind, host, port } = parseArgs(process.argv.slice(2));
const server = http.createServer((_request, response) => {
    response.writeHead(404, { 'content-type': 'text/plain' });
    response.end('not found\n');
});
if (kind === 'ws') serveRawWebSocket(server);
else serveSocketIo(server);
server.listen(port, host, () => {
    const address = server.address();
    console.log(`listening on http://${address.address}:${address.port}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
