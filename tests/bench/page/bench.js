// @ts-check
// The benchmark page. It runs one case with one client, in a Chromium that has no DevTools client
// attached (bench.mjs starts it as a plain process), and POSTs its measurements to the harness
// that served it (POST /result?run=ID, JSON). All times are performance.now() in this page.
//
// Query parameters: run (id), case (rtt | burst | echo | send | first | reconnect), client
// (raw | sio | sio-ws | rc | rc-websocket | rc-sse | rc-long-polling), url (the server), n
// (messages), reps (connections for first/reconnect), control (the fault proxy's control URL,
// reconnect only), timeout (ms per connection for first/reconnect), profile (1: run the case under
// the JS Self-Profiling API and add the samples' shares to the result; the harness then serves
// the page with `Document-Policy: js-profiling`).
import { RealtimeClient } from 'realtime-client';
import { io } from 'socket.io-client';

const PAYLOAD = 'x'.repeat(64);
const params = new URLSearchParams(location.search);
const runId = params.get('run') ?? '';
const benchCase = params.get('case') ?? '';
const clientName = params.get('client') ?? '';
const serverUrl = params.get('url') ?? '';
const n = Number(params.get('n') ?? '0');
const reps = Number(params.get('reps') ?? '1');
const control = params.get('control') ?? '';
const perConnectionTimeoutMs = Number(params.get('timeout') ?? '3000');

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A promise with its resolve function.
 * @template T
 * @returns {{ promise: Promise<T>, resolve: (value: T) => void }}
 */
function deferred() {
    /** @type {(value: T) => void} */
    let resolve = () => {};
    /** @type {Promise<T>} */
    const promise = new Promise((r) => { resolve = r; });
    return { promise, resolve };
}

/** A fresh room per client, so that nothing else reaches it. */
function realtimeUrl(room = newRoom()) {
    const url = new URL(serverUrl);
    url.searchParams.set('room', room);
    return url.href;
}
function newRoom() {
    return `bench-${Math.random().toString(36).slice(2)}`;
}

/**
 * RealtimeClient options for a client name: rc-TRANSPORT forces one, rc is the default ladder.
 * The outbox holds a whole burst (the default 10,000 would refuse the 100,000 sends of 'echo'
 * and 'send', which fire them all at once).
 * @param {string} name
 */
function realtimeOptions(name) {
    /** @type {{ outbox: { maxMessages: number, maxBytes: number }, transports?: ('websocket' | 'sse' | 'long-polling')[] }} */
    const options = { outbox: { maxMessages: Math.max(10000, n + 100), maxBytes: 1 << 30 } };
    const transport = name.slice('rc-'.length);
    if (transport === 'websocket' || transport === 'sse' || transport === 'long-polling') {
        options.transports = [transport];
    }
    return options;
}

/** @param {string} name */
function socketIoOptions(name) {
    // sio: socket.io's default (HTTP long polling first, then the upgrade to WebSocket);
    // sio-ws: WebSocket only, its fastest configuration.
    return name === 'sio-ws' ? { transports: ['websocket'], forceNew: true } : { forceNew: true };
}

/**
 * @typedef {object} Adapter
 * @property {(data: string) => Promise<void> | void} send   sends one message to be echoed
 * @property {(listener: (data: unknown) => void) => void} onMessage   echoes and burst messages
 * @property {() => void} close
 * @property {WebSocket} [ws]
 * @property {import('socket.io-client').Socket} [socket]
 * @property {RealtimeClient} [client]
 * @property {string} [room]
 * @property {Promise<never>} [failed]   rejects when the session ends or resets mid-benchmark
 */

/**
 * Opens a client and resolves once it is connected.
 * @param {string} name
 * @returns {Promise<Adapter>}
 */
async function openAdapter(name) {
    if (name === 'raw') {
        const ws = new WebSocket(serverUrl);
        ws.binaryType = 'arraybuffer';
        await new Promise((resolve, reject) => {
            ws.onopen = resolve;
            ws.onerror = () => reject(new Error('raw WebSocket failed to open'));
        });
        return {
            ws,
            send: (data) => ws.send(data),
            onMessage: (listener) => { ws.onmessage = (event) => listener(event.data); },
            close: () => ws.close(),
        };
    }
    if (name === 'sio' || name === 'sio-ws') {
        const socket = io(serverUrl, socketIoOptions(name));
        await new Promise((resolve, reject) => {
            socket.once('connect', () => resolve(undefined));
            socket.once('connect_error', (error) => reject(error));
        });
        return {
            socket,
            send: (data) => { socket.emit('echo', data); },
            onMessage: (listener) => {
                socket.on('echo', listener);
                socket.on('m', listener);
            },
            close: () => socket.close(),
        };
    }
    if (name.startsWith('rc')) {
        const room = newRoom();
        const client = new RealtimeClient(realtimeUrl(room), realtimeOptions(name));
        client.on('error', (error) => console.error('realtime-client error event:', error));
        /** @type {Promise<never>} */
        const failed = new Promise((_resolve, reject) => {
            client.on('close', ({ code, reason }) => reject(new Error(`session closed: ${code} ${reason}`)));
            client.on('reset', ({ reason }) => reject(new Error(`session reset: ${reason}`)));
        });
        failed.catch(() => {});
        await client.connect();
        return {
            client,
            room,
            failed,
            send: (data) => client.send(data),
            onMessage: (listener) => { client.on('message', (data) => listener(data)); },
            close: () => client.close(),
        };
    }
    throw new Error(`unknown client ${name}`);
}

/**
 * Sequential ping-pongs: send, await the echo, repeat.
 * @param {Adapter} adapter
 */
async function roundTrips(adapter) {
    /** @type {((value: unknown) => void) | null} */
    let next = null;
    adapter.onMessage(() => {
        const resolve = next;
        next = null;
        resolve?.(undefined);
    });
    const samples = new Float64Array(n);
    for (let i = 0; i < n; i += 1) {
        const echoed = new Promise((resolve) => { next = resolve; });
        const started = performance.now();
        const sent = adapter.send(PAYLOAD);
        if (sent) sent.catch((error) => console.error('send failed', error));
        await echoed;
        samples[i] = performance.now() - started;
    }
    const sorted = Array.from(samples).sort((a, b) => a - b);
    const at = (/** @type {number} */ q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
    return { p50Ms: at(0.5), p99Ms: at(0.99), meanMs: sorted.reduce((a, b) => a + b, 0) / sorted.length, n };
}

/**
 * Runs `body` under the JS Self-Profiling API (1 ms asked; Chromium samples at its own floor) and
 * returns its result with `profile`: sample counts by where the sampled top frame was (the
 * package's wasm, its JS glue, socket.io, this page, other) and `idle` (no JS on the stack: the
 * event loop waiting, or the browser's own work), plus `inClient`: samples with a frame of the
 * package (wasm or glue) anywhere on the stack, and `top`: the 12 functions most often on top.
 * @template T
 * @param {() => Promise<T>} body
 */
async function profiled(body) {
    // @ts-ignore: not in TypeScript's DOM library
    const profiler = new Profiler({ sampleInterval: 1, maxBufferSize: 1000000 });
    const result = await body();
    const trace = await profiler.stop();
    /** @param {string} url */
    const kind = (url) => url.endsWith('.wasm') ? 'wasm'
        : url.includes('/realtime-client/') ? 'glue'
        : url.includes('/vendor/') ? 'socket.io'
        : url.includes('bench.js') ? 'page' : 'other';
    /** @type {Record<string, number>} */
    const counts = { idle: 0, wasm: 0, glue: 0, 'socket.io': 0, page: 0, other: 0 };
    let inClient = 0;
    /** @type {Map<string, number>} */
    const functions = new Map();
    for (const sample of trace.samples) {
        if (sample.stackId === undefined) { counts.idle += 1; continue; }
        let stack = trace.stacks[sample.stackId];
        const top = trace.frames[stack.frameId];
        const where = top.resourceId === undefined ? 'other' : kind(trace.resources[top.resourceId]);
        counts[where] += 1;
        const name = `${where} ${top.name || '(anonymous)'}${top.line === undefined ? '' : `:${top.line}:${top.column}`}`;
        functions.set(name, (functions.get(name) ?? 0) + 1);
        for (;;) {
            const frame = trace.frames[stack.frameId];
            if (frame.resourceId !== undefined && ['wasm', 'glue'].includes(kind(trace.resources[frame.resourceId]))) { inClient += 1; break; }
            if (stack.parentId === undefined) break;
            stack = trace.stacks[stack.parentId];
        }
    }
    const top = [...functions].sort((a, b) => b[1] - a[1]).slice(0, 12);
    return { ...result, profile: { samples: trace.samples.length, counts, inClient, top, resources: trace.resources } };
}

/**
 * Counts incoming messages until `count` arrived; `start` triggers them. Messages per second from
 * just before `start` to the arrival of the last one.
 * @param {Adapter} adapter
 * @param {() => Promise<unknown> | void} start
 */
async function receiveRate(adapter, start) {
    const done = deferred();
    let received = 0;
    adapter.onMessage(() => {
        received += 1;
        if (received === n) done.resolve(performance.now());
    });
    const started = performance.now();
    await start();
    const finished = await (adapter.failed ? Promise.race([done.promise, adapter.failed]) : done.promise);
    const seconds = (finished - started) / 1000;
    return { messagesPerSecond: n / seconds, seconds, n };
}

/** @param {Adapter} adapter */
async function burst(adapter) {
    if (adapter.ws) {
        const ws = adapter.ws;
        return receiveRate(adapter, () => ws.send(`#burst ${n}`));
    }
    if (adapter.socket) {
        const socket = adapter.socket;
        return receiveRate(adapter, () => { socket.emit('burst', n); });
    }
    const room = adapter.room;
    if (room) {
        // The harness publishes it (POST /realtime/publish, a batch of msg frames per request),
        // one batch per request from here, at most two batches not yet received (see bench.mjs).
        const batch = Number(params.get('batch') ?? '4000');
        const batches = Math.ceil(n / batch);
        let requested = 0;
        /** @type {Promise<void>} */
        let chain = Promise.resolve();
        const request = () => {
            if (requested >= batches) return;
            const count = Math.min(batch, n - requested * batch);
            requested += 1;
            chain = chain.then(async () => {
                const response = await fetch(`/publish?room=${room}&n=${count}`, { method: 'POST' });
                if (!response.ok) throw new Error(`publish: ${response.status} ${await response.text()}`);
            });
            chain.catch((error) => console.error(String(error)));
        };
        let received = 0;
        adapter.onMessage(() => {
            received += 1;
            if (received % batch === 0) request();
        });
        return receiveRate(adapter, () => { request(); request(); });
    }
    throw new Error('no burst for this client');
}

/**
 * The client sends n messages at once and the server echoes each back to it.
 * @param {Adapter} adapter
 */
async function echoStream(adapter) {
    /** @type {Promise<void>[]} */
    const acknowledged = [];
    const result = await receiveRate(adapter, () => {
        for (let i = 0; i < n; i += 1) {
            const sent = adapter.send(PAYLOAD);
            if (sent) acknowledged.push(sent);
        }
    });
    await Promise.all(acknowledged);
    return result;
}

/**
 * n messages from the client until all are acknowledged.
 * @param {Adapter} adapter
 */
async function sendRate(adapter) {
    const started = performance.now();
    if (adapter.ws) {
        const ws = adapter.ws;
        const done = deferred();
        ws.onmessage = (event) => { if (String(event.data).startsWith('#done')) done.resolve(undefined); };
        ws.send(`#count ${n}`);
        for (let i = 0; i < n; i += 1) ws.send(PAYLOAD);
        await done.promise;
    } else if (adapter.socket) {
        const socket = adapter.socket;
        const done = deferred();
        let acks = 0;
        const onAck = () => {
            acks += 1;
            if (acks === n) done.resolve(undefined);
        };
        for (let i = 0; i < n; i += 1) socket.emit('m', PAYLOAD, onAck);
        await done.promise;
    } else if (adapter.client) {
        const client = adapter.client;
        /** @type {Promise<void>[]} */
        const acknowledged = new Array(n);
        for (let i = 0; i < n; i += 1) acknowledged[i] = client.send(PAYLOAD);
        await Promise.race([Promise.all(acknowledged), adapter.failed]);
    }
    const seconds = (performance.now() - started) / 1000;
    return { messagesPerSecond: n / seconds, seconds, n };
}

/**
 * One fresh connection: from creating the client (which is when socket.io and the raw WebSocket
 * start connecting; RealtimeClient's connect() follows at once) to the echo of a message sent
 * right away (queued by socket.io and RealtimeClient, sent on open for the raw WebSocket).
 * @param {string} name
 * @returns {Promise<{ ms: number | null, transport: string | null, note: string }>}
 */
async function firstMessage(name) {
    if (name !== 'rc-remembered') {
        // RealtimeClient remembers the rung that worked for an endpoint in sessionStorage, for
        // later clients and page views in this tab: forget it, so that every connection is a
        // first visit. rc-remembered keeps it (the harness runs one uncounted connection first).
        sessionStorage.clear();
    }
    const token = `first-${Math.random().toString(36).slice(2)}`.padEnd(64, '.');
    const got = deferred();
    /** @type {string[]} */
    const notes = [];
    /** @type {() => string | null} */
    let transport = () => null;
    /** @type {() => void} */
    let close = () => {};
    const started = performance.now();
    if (name === 'raw') {
        const ws = new WebSocket(serverUrl);
        ws.onopen = () => ws.send(token);
        ws.onmessage = () => got.resolve(performance.now());
        ws.onerror = () => notes.push(`error after ${Math.round(performance.now() - started)} ms`);
        transport = () => 'websocket';
        close = () => ws.close();
    } else if (name === 'sio' || name === 'sio-ws') {
        const socket = io(serverUrl, { ...socketIoOptions(name), reconnectionDelayMax: 2000 });
        socket.on('echo', () => got.resolve(performance.now()));
        socket.on('connect_error', () => notes.push(`connect_error after ${Math.round(performance.now() - started)} ms`));
        socket.emit('echo', token);
        transport = () => socket.io.engine?.transport?.name ?? null;
        close = () => socket.close();
    } else {
        const client = new RealtimeClient(fixedRoomUrl, realtimeOptions(name));
        client.on('message', () => got.resolve(performance.now()));
        client.connect().catch(() => {});
        client.send(token).catch(() => {});
        transport = () => client.transport;
        close = () => client.close();
    }
    const arrived = await Promise.race([got.promise, sleep(perConnectionTimeoutMs).then(() => null)]);
    const result = {
        ms: arrived === null ? null : arrived - started,
        transport: transport(),
        note: arrived === null ? `none within ${perConnectionTimeoutMs} ms${notes.length ? `; ${notes[0]}` : ''}` : '',
    };
    close();
    await sleep(50);
    return result;
}

/**
 * The fault proxy crashes and restarts the server (POST /restart-upstream answers once the new
 * process listens): time from that answer ("back") to the session being open again, and from
 * the request (the crash) to open.
 * @param {string} name
 */
async function reconnects(name) {
    /** @type {{ fromBackMs: number | null, fromCrashMs: number | null, crashToBackMs: number, events: string[] }[]} */
    const samples = [];
    for (let i = 0; i < reps; i += 1) {
        // A fresh client each time: one that has just reconnected keeps counting attempts (its
        // counter resets after 5 s up), and restarts closer together would measure that backoff.
        /** @type {string[]} what the client said (kept in the JSON) */
        const events = [];
        const opened = deferred();
        /** @type {(() => void) | null} */
        let onOpen = null;
        /** @type {() => void} */
        let close;
        if (name === 'sio' || name === 'sio-ws') {
            const socket = io(serverUrl, socketIoOptions(name));
            await new Promise((resolve) => socket.once('connect', () => resolve(undefined)));
            socket.on('connect', () => onOpen?.());
            socket.io.on('reconnect_attempt', (attempt) => events.push(`reconnect_attempt ${attempt}`));
            close = () => socket.close();
        } else if (name.startsWith('rc')) {
            const client = new RealtimeClient(realtimeUrl(), realtimeOptions(name));
            await client.connect();
            client.on('open', () => onOpen?.());
            client.on('reconnecting', ({ attempt, delayMs, reason }) => events.push(`reconnecting ${attempt} in ${delayMs} ms: ${reason}`));
            client.on('transport', ({ from, to, reason }) => events.push(`transport ${from} -> ${to}: ${reason}`));
            close = () => client.close();
        } else {
            throw new Error(`no reconnect for ${name}`);
        }
        await sleep(300);
        onOpen = () => opened.resolve(performance.now());
        const crashed = performance.now();
        const response = await fetch(`${control}/restart-upstream`, { method: 'POST' });
        const back = performance.now();
        if (!response.ok) throw new Error(`restart-upstream: ${response.status} ${await response.text()}`);
        const open = await Promise.race([opened.promise, sleep(perConnectionTimeoutMs).then(() => null)]);
        samples.push({ fromBackMs: open === null ? null : open - back, fromCrashMs: open === null ? null : open - crashed,
            crashToBackMs: back - crashed, events });
        close();
    }
    return { samples };
}

/** One room for all connections of a 'first' case (the rung memory is kept per endpoint). */
const fixedRoomUrl = serverUrl.startsWith('http') ? realtimeUrl() : '';

async function run() {
    // Set by the harness's COOP/COEP headers; without it performance.now() is coarsened to 100 µs.
    if (!crossOriginIsolated) throw new Error('the page is not cross-origin isolated: timings would be coarse');
    if (benchCase === 'first') {
        const samples = [];
        if (clientName === 'rc-remembered') await firstMessage(clientName);
        for (let i = 0; i < reps; i += 1) samples.push(await firstMessage(clientName));
        return { samples };
    }
    if (benchCase === 'reconnect') return reconnects(clientName);
    const adapter = await openAdapter(clientName);
    try {
        switch (benchCase) {
            case 'rtt': return params.get('profile') === '1' ? await profiled(() => roundTrips(adapter)) : await roundTrips(adapter);
            case 'burst': return await burst(adapter);
            case 'echo': return await echoStream(adapter);
            case 'send': return await sendRate(adapter);
            default: throw new Error(`unknown case ${benchCase}`);
        }
    } finally {
        adapter.close();
    }
}

/** @param {object} body */
async function report(body) {
    document.getElementById('status')?.replaceChildren(JSON.stringify(body));
    await fetch(`/result?run=${encodeURIComponent(runId)}`, { method: 'POST', body: JSON.stringify(body) });
}

run().then(
    (result) => report({ ok: true, result, userAgent: navigator.userAgent }),
    (error) => report({ ok: false, error: String(error?.stack ?? error) }),
);
