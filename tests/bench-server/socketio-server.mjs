// The socket.io 4 comparison server of `.ci/bench-server.sh`: the same job as the reference
// server's part in the benchmark, in socket.io's idiom, with socket.io's defaults.
//
//   node --expose-gc socketio-server.mjs [--listen 127.0.0.1:0] [--ping-interval-ms 25000]
//
// - Socket.IO on the default path `/socket.io/` (Engine.IO v4; defaults: WebSocket without
//   per-message deflate; pingInterval 25 s unless --ping-interval-ms). A client joins the room
//   named by its `room` query parameter (default `lobby`), as a reference-server session does.
// - `POST /bench/publish?room=R` (a JSON body): `io.to(R).emit('msg', body)`, answers 202 with
//   the room's size (deliveries). One request per message, like `POST /realtime/publish` on the reference
//   server, so both sides pay the same HTTP cost per message.
// - `POST /bench/publish-batch?room=R` (a JSON array): one `io.to(R).emit('msg', element)` per
//   element, in order; answers 202 with room size x elements (deliveries, as the reference
//   server's batch publish answers).
// - `POST /bench/gc`: a full garbage collection (needs --expose-gc), answers 204. The load
//   generator calls it before each memory reading, so the RSS counts live objects rather than
//   garbage waiting for the collector (a favour to Node: the Rust server has no collector).
// - Prints `listening on http://ADDR` once bound, like the reference server. Everything stays on
//   the address given (127.0.0.1 by default).

import { createServer } from 'node:http';
import { Server } from 'socket.io';

function flag(name, fallback) {
    const index = process.argv.indexOf(name);
    return index >= 0 && index + 1 < process.argv.length ? process.argv[index + 1] : fallback;
}
const listen = flag('--listen', '127.0.0.1:0');
const pingInterval = Number(flag('--ping-interval-ms', '25000'));
if (!Number.isInteger(pingInterval) || pingInterval < 100) {
    console.error('--ping-interval-ms must be an integer >= 100');
    process.exit(2);
}
const colon = listen.lastIndexOf(':');
const host = listen.slice(0, colon);
const port = Number(listen.slice(colon + 1));

const httpServer = createServer((request, response) => {
    const url = new URL(request.url, 'http://bench.invalid');
    const batch = url.pathname === '/bench/publish-batch';
    if (request.method === 'POST' && (url.pathname === '/bench/publish' || batch)) {
        const room = url.searchParams.get('room');
        const chunks = [];
        request.on('data', (chunk) => chunks.push(chunk));
        request.on('end', () => {
            let body;
            try {
                body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
            } catch (error) {
                reply(response, 400, `bad json: ${error.message}`);
                return;
            }
            if (!room) {
                reply(response, 400, 'missing room parameter');
                return;
            }
            if (batch && !Array.isArray(body)) {
                reply(response, 400, 'a batch is a JSON array');
                return;
            }
            const messages = batch ? body : [body];
            for (const message of messages) io.to(room).emit('msg', message);
            // Deliveries made, as the reference server answers.
            reply(response, 202, String((io.sockets.adapter.rooms.get(room)?.size ?? 0) * messages.length));
        });
        return;
    }
    if (request.method === 'POST' && url.pathname === '/bench/gc') {
        request.resume();
        request.on('end', () => {
            if (typeof globalThis.gc === 'function') {
                globalThis.gc();
                reply(response, 204, '');
            } else {
                reply(response, 501, 'start node with --expose-gc');
            }
        });
        return;
    }
    reply(response, 404, 'not found');
});

// Every answer has a Content-Length (the load generator's HTTP client reads no chunked bodies).
function reply(response, status, text) {
    const body = Buffer.from(text, 'utf8');
    const headers = status === 204 ? {} : { 'content-type': 'text/plain', 'content-length': body.length };
    response.writeHead(status, headers).end(status === 204 ? undefined : body);
}
// Keep-alive connections of the publishers stay open for the whole run.
httpServer.keepAliveTimeout = 120_000;

const io = new Server(httpServer, { serveClient: false, pingInterval });
io.on('connection', (socket) => {
    const room = typeof socket.handshake.query.room === 'string' ? socket.handshake.query.room : 'lobby';
    socket.join(room);
});

httpServer.listen(port, host, () => {
    const address = httpServer.address();
    process.stdout.write(`listening on http://${address.address}:${address.port}\n`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => {
        io.close();
        process.exit(0);
    });
}
