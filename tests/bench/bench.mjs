// `make bench` (through .ci/bench.sh): browser benchmarks of realtime-client against socket.io 4
// and the raw WebSocket, every number a ratio measured in the same run.
//
// Method. The page (page/bench.js) runs each case itself, in a headless Chromium started as a
// plain process (child_process.spawn of /usr/bin/chromium --headless=new with a fresh
// --user-data-dir, no --remote-debugging-*): no DevTools client is attached, so nothing is told
// about every WebSocket frame (a CDP client on the page alone cut the raw WebSocket's throughput
// from 42.5k to 18k messages per second). The page POSTs its measurements to this process's
// HTTP server, which also serves the page, the packed realtime-client as npm installed it
// (node_modules/realtime-client) and socket.io-client bundled by esbuild (build/vendor); then
// Chromium is killed. One Chromium per case.
//
// Servers, all on 127.0.0.1, each run by its own fault proxy (tests/fault-proxy, spawn mode):
//   rc    target/server/realtime-server --allow-loopback-origins   (the reference server)
//   ws    node servers.mjs --kind ws        a minimal `ws` echo server: the limit
//   sio   node servers.mjs --kind socketio  socket.io 4
// Latency and throughput go to the servers directly (the proxy's address printed as `upstream`);
// the fault cases (WebSocket refused or silent) and the restarts go through the proxies.
//
// Rounds. BENCH_ROUNDS=N (default 3) runs every case N times in one invocation against the same
// servers, one round after another (round 1: every case; round 2: every case; ...), so that slow
// phases of a shared machine spread over all clients. Each ratio is taken within a round (both
// figures from that round) and the table shows the median over the rounds with the spread
// (lowest-highest round); every round's figures are in the JSON. The targets (targets.mjs) are
// judged on those medians.
//
// Usage: node bench.mjs   env: BENCH_QUICK=1 (10x fewer messages and connections), BENCH_ROUNDS,
//   REALTIME_SERVER_BIN, FAULT_PROXY_BIN, CHROMIUM, BENCH_OUT (JSON path), BENCH_ONLY (a regex on
//   case ids, for development), BENCH_COMMAND (the command line to print), BENCH_PROFILE=1 (the
//   round trip cases run under the JS Self-Profiling API; a table of where the samples fell, by
//   client, summed over the rounds; `make bench-profile`).
import { execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import { dirname, extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

import { browserTargetRows, formatTargets, median, spread } from './targets.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '../..');
const quick = process.env.BENCH_QUICK === '1';
const scale = quick ? 10 : 1;
const RTT_N = 10000 / scale;
const BURST_N = 100000 / scale;
const FIRST_REPS = quick ? 5 : 20;
const FAULT_REPS = quick ? 3 : 10;
const RESTART_REPS = quick ? 3 : 10;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? '3');
if (!Number.isInteger(ROUNDS) || ROUNDS < 1 || ROUNDS > 20) {
    console.error(`bench: BENCH_ROUNDS must be an integer from 1 to 20, not '${process.env.BENCH_ROUNDS}'`);
    process.exit(2);
}
// The reference server ends a session whose unsent messages exceed 10,000 (its replay limit,
// PROTOCOL §4): a blind 100,000-message burst to one browser does that. So its burst is published
// in batches of this many, the page asking for the next one whenever it has received one more,
// i.e. at most two batches in flight: a flow-controlled backend.
const BURST_WINDOW_BATCH = 4000;
const CASE_TIMEOUT_MS = quick ? 60000 : 240000;
const serverBin = process.env.REALTIME_SERVER_BIN ?? join(repoRoot, 'target/server/realtime-server');
const proxyBin = process.env.FAULT_PROXY_BIN ?? join(repoRoot, 'target/debug/fault-proxy');
const chromiumBin = process.env.CHROMIUM ?? '/usr/bin/chromium';
const outPath = resolve(repoRoot, process.env.BENCH_OUT ?? 'target/bench/results.json');
const only = process.env.BENCH_ONLY ? new RegExp(process.env.BENCH_ONLY) : null;
const profiling = process.env.BENCH_PROFILE === '1';
const CHROMIUM_FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run'];

const say = (message) => console.log(`bench: ${message}`);
const children = new Set();
function stopChild(child) {
    if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    return new Promise((done) => {
        const timer = setTimeout(() => { try { process.kill(-child.pid, 'SIGKILL'); } catch {} }, 3000);
        child.once('exit', () => { clearTimeout(timer); done(); });
        // Each child leads its own process group (detached): that reaches Chromium's helpers and
        // a fault proxy's server too, and nothing this process did not start.
        try { process.kill(-child.pid, 'SIGTERM'); } catch { clearTimeout(timer); done(); }
    });
}
async function stopAll() {
    await Promise.all([...children].map(stopChild));
}
for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => { stopAll().finally(() => process.exit(130)); });
}

// ---- The harness's HTTP server: pages, packages, results. ----

const CONTENT_TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
    '.wasm': 'application/wasm', '.json': 'application/json', '.map': 'application/json' };
const ROOTS = [
    ['/realtime-client/', join(here, 'node_modules/realtime-client')],
    ['/vendor/', join(here, 'build/vendor')],
    ['/', join(here, 'page')],
];
const waiting = new Map(); // run id -> resolve(result body)

function serveFile(pathname, response) {
    const [prefix, root] = ROOTS.find(([p]) => pathname.startsWith(p));
    const relative = pathname.slice(prefix.length) || 'index.html';
    const file = normalize(join(root, relative));
    if (!file.startsWith(root + sep)) return response.writeHead(403).end();
    let body;
    try { body = readFileSync(file); } catch { return response.writeHead(404).end('not found\n'); }
    // Cross-origin isolated (COOP + COEP), so that performance.now() has 5 µs resolution rather
    // than 100 µs: a loopback round trip takes 100-200 µs.
    response.writeHead(200, { 'content-type': CONTENT_TYPES[extname(file)] ?? 'application/octet-stream',
        'cache-control': 'no-store', 'cross-origin-opener-policy': 'same-origin',
        'cross-origin-embedder-policy': 'require-corp', ...(profiling ? { 'document-policy': 'js-profiling' } : {}) });
    response.end(body);
}

const harness = http.createServer((request, response) => {
    const url = new URL(request.url, 'http://127.0.0.1');
    if (request.method === 'POST' && url.pathname === '/publish') {
        // The page asks for a burst to its room; it is published from here (a backend), so the
        // browser only receives.
        publishBurst(url.searchParams.get('room'), Number(url.searchParams.get('n'))).then(
            (requests) => response.writeHead(200, { 'content-type': 'text/plain' }).end(`${requests}\n`),
            (error) => response.writeHead(500, { 'content-type': 'text/plain' }).end(`${error}\n`));
        return;
    }
    if (request.method === 'POST' && url.pathname === '/result') {
        const chunks = [];
        request.on('data', (chunk) => chunks.push(chunk));
        request.on('end', () => {
            response.writeHead(204).end();
            const resolveRun = waiting.get(url.searchParams.get('run'));
            if (resolveRun) resolveRun(JSON.parse(Buffer.concat(chunks).toString()));
        });
        return;
    }
    if (request.method !== 'GET') return response.writeHead(405).end();
    serveFile(decodeURIComponent(url.pathname), response);
});
await new Promise((done) => harness.listen(0, '127.0.0.1', done));
const harnessOrigin = `http://127.0.0.1:${harness.address().port}`;

// ---- The reference server's burst: POST /realtime/publish with Content-Type
// application/x-realtime-frames, a batch of up to 10,000 msg frames (their s is ignored) per
// request, requests one after another. ----

const PUBLISH_BATCH = 10000; // the server's most per request
const frame = Buffer.from(`msg s=1 k=t n=64\n${'x'.repeat(64)}`);
async function publishBurst(room, n) {
    if (!room || !(n > 0)) throw new Error('publish: room and n needed');
    let requests = 0;
    for (let sent = 0; sent < n; sent += PUBLISH_BATCH) {
        const count = Math.min(PUBLISH_BATCH, n - sent);
        const response = await fetch(`${proxies.rc.upstream}/realtime/publish?room=${encodeURIComponent(room)}`, {
            method: 'POST', headers: { 'content-type': 'application/x-realtime-frames' }, body: Buffer.concat(Array(count).fill(frame)) });
        const text = await response.text();
        if (response.status !== 202) throw new Error(`publish: ${response.status} ${text}`);
        requests += 1;
    }
    return requests;
}

// ---- Servers behind fault proxies. ----

function startProxy(name, command) {
    const child = spawn(proxyBin, ['--listen', '127.0.0.1:0', '--control', '127.0.0.1:0', '--spawn-upstream', '--', ...command],
        { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let log = '';
    const found = {};
    return new Promise((done, fail) => {
        const timer = setTimeout(() => fail(new Error(`${name}: no listening lines within 60 s:\n${log}`)), 60000);
        const onData = (chunk) => {
            log = (log + chunk).slice(-20000);
            for (const match of log.matchAll(/^(proxy|control|upstream) listening on (http:\/\/\S+)$/gm)) found[match[1]] = match[2];
            if (found.proxy && found.control && found.upstream) {
                clearTimeout(timer);
                done({ name, child, proxy: found.proxy, control: found.control, upstream: found.upstream, log: () => log });
            }
        };
        child.stdout.on('data', onData);
        child.stderr.on('data', onData);
        child.once('exit', (code) => { clearTimeout(timer); fail(new Error(`${name}: fault proxy exited (${code}):\n${log}`)); });
    });
}

async function control(proxy, path) {
    const response = await fetch(`${proxy.control}${path}`, { method: 'POST' });
    if (!response.ok) throw new Error(`${proxy.name} ${path}: ${response.status} ${await response.text()}`);
}

// ---- One case: a plain Chromium process on the page, until it POSTs its result. ----

async function runInChromium(query) {
    const run = randomUUID();
    const url = `${harnessOrigin}/index.html?${new URLSearchParams({ run, ...query })}`;
    const profile = mkdtempSync(join(os.tmpdir(), 'bench-chromium-'));
    const result = new Promise((done) => waiting.set(run, done));
    const child = spawn(chromiumBin, ['--headless=new', ...CHROMIUM_FLAGS, '--no-default-browser-check', '--disable-extensions',
        '--mute-audio', `--user-data-dir=${profile}`, '--enable-logging=stderr', '--v=0', url],
    { detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
    children.add(child);
    let log = '';
    child.stderr.on('data', (chunk) => { log = (log + chunk).slice(-8000); });
    const exited = new Promise((done) => child.once('exit', (code, signal) => done({ exited: `${code ?? signal}` })));
    let timer;
    const timeout = new Promise((done) => { timer = setTimeout(() => done({ timeout: true }), CASE_TIMEOUT_MS); });
    const outcome = await Promise.race([result, exited, timeout]);
    clearTimeout(timer);
    waiting.delete(run);
    await stopChild(child);
    children.delete(child);
    rmSync(profile, { recursive: true, force: true });
    if (outcome.ok) return outcome;
    const consoleLines = log.split('\n').filter((line) => /CONSOLE|ERROR/.test(line)).slice(-15).join('\n  ');
    const why = outcome.timeout ? `no result within ${CASE_TIMEOUT_MS / 1000} s` : outcome.exited ? `Chromium exited (${outcome.exited})` : outcome.error;
    return { ok: false, error: `${why}\n  ${consoleLines}` };
}

// ---- The plan. ----

const CLIENT_LABELS = {
    raw: 'raw WebSocket',
    'sio-ws': 'socket.io (websocket only)',
    sio: 'socket.io (default: polling, upgrade)',
    'rc-websocket': 'RealtimeClient websocket',
    'rc-sse': 'RealtimeClient sse',
    'rc-long-polling': 'RealtimeClient long-polling',
    rc: 'RealtimeClient (default ladder)',
    'rc-remembered': 'RealtimeClient (ladder, rung remembered)',
};
const RC_TRANSPORTS = ['rc-websocket', 'rc-sse', 'rc-long-polling'];
const METRICS = [
    { id: 'rtt-p50', title: `round trip p50, ${RTT_N} sequential 64 B ping-pongs`, unit: 'ms', lower: true, case: 'rtt', pick: (r) => r.p50Ms, clients: ['raw', 'sio-ws', ...RC_TRANSPORTS] },
    { id: 'rtt-p99', title: 'round trip p99 (same runs)', unit: 'ms', lower: true, case: 'rtt', derived: 'rtt-p50', pick: (r) => r.p99Ms, clients: ['raw', 'sio-ws', ...RC_TRANSPORTS] },
    { id: 'burst', title: `receive, server burst of ${BURST_N} x 64 B (raw WS and socket.io: one message per frame; reference server: batch publish of ${BURST_WINDOW_BATCH} msgs per request, at most ${2 * BURST_WINDOW_BATCH} unreceived)`, unit: 'msg/s', lower: false, case: 'burst', pick: (r) => r.messagesPerSecond, clients: ['raw', 'sio-ws', ...RC_TRANSPORTS] },
    { id: 'echo', title: `receive, echo stream: the client fires ${BURST_N} x 64 B, time to the last echo`, unit: 'msg/s', lower: false, case: 'echo', pick: (r) => r.messagesPerSecond, clients: ['raw', 'sio-ws', ...RC_TRANSPORTS] },
    { id: 'send', title: `send, ${BURST_N} x 64 B until acknowledged (raw: server count; socket.io: acks; RealtimeClient: last send() resolved)`, unit: 'msg/s', lower: false, case: 'send', pick: (r) => r.messagesPerSecond, clients: ['raw', 'sio-ws', ...RC_TRANSPORTS] },
    { id: 'first', title: `first message, WebSocket working, direct (median of ${FIRST_REPS} connections)`, unit: 'ms', lower: true, case: 'first', via: 'direct', clients: ['raw', 'sio-ws', 'sio', 'rc-websocket', 'rc'] },
    { id: 'first-proxy', title: `first message through the fault proxy, passing (median of ${FAULT_REPS})`, unit: 'ms', lower: true, case: 'first', via: 'proxy', mode: null, clients: ['raw', 'sio-ws', 'sio', 'rc'] },
    { id: 'first-refused', title: `first message, WebSocket refused by the proxy (median of ${FAULT_REPS})`, unit: 'ms', lower: true, case: 'first', via: 'proxy', mode: 'websocket=refuse', clients: ['raw', 'sio-ws', 'sio', 'rc', 'rc-remembered'] },
    { id: 'first-silent', title: `first message, WebSocket accepted but silent (median of ${FAULT_REPS})`, unit: 'ms', lower: true, case: 'first', via: 'proxy', mode: 'websocket=silent', clients: ['raw', 'sio-ws', 'sio', 'rc', 'rc-remembered'] },
    { id: 'reconnect', title: `reconnect: server crashed and restarted, from back to open (median of ${RESTART_REPS})`, unit: 'ms', lower: true, case: 'reconnect', via: 'proxy', clients: ['sio', 'rc'], pickSample: (s) => s.fromBackMs },
    { id: 'reconnect-crash', title: 'reconnect: from the crash to open (same runs)', unit: 'ms', lower: true, case: 'reconnect', via: 'proxy', derived: 'reconnect', clients: ['sio', 'rc'], pickSample: (s) => s.fromCrashMs },
];

function kindOf(client) {
    return client === 'raw' ? 'ws' : client.startsWith('sio') ? 'sio' : 'rc';
}

// ---- Run. ----

function chromiumVersion() {
    try { return execFileSync(chromiumBin, ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim(); } catch { return 'unknown'; }
}
const machine = {
    nproc: os.availableParallelism(),
    cpu: (readFileSync('/proc/cpuinfo', 'utf8').match(/^model name\s*:\s*(.*)$/m) ?? [])[1] ?? 'unknown',
    chromium: chromiumVersion(),
    node: process.version,
    date: new Date().toISOString(),
    command: process.env.BENCH_COMMAND ?? `node ${process.argv.slice(1).join(' ')}`,
    quick,
    rounds: ROUNDS,
};
say(`machine: nproc ${machine.nproc}, CPU ${machine.cpu}, ${machine.chromium}, Node ${machine.node}`);
say(`date ${machine.date}; command: ${machine.command}${quick ? ' (BENCH_QUICK=1: 10x fewer messages)' : ''}; ${ROUNDS} round(s)`);

const proxies = {};
let exitCode = 0;
const rounds = []; // per round: metric id -> client -> { value, detail, samples? }
const raw = [];
try {
    [proxies.rc, proxies.ws, proxies.sio] = await Promise.all([
        // Every bench client connects from 127.0.0.1 (through the proxy): the per-IP caps and
        // rates of a public server are lifted (test-only loosening); the total caps still hold.
        startProxy('rc', [serverBin, '--listen', '127.0.0.1:0', '--allow-loopback-origins', '--max-connections-per-ip', '1000000',
            '--max-sessions-per-ip', '1000000', '--max-streams-per-ip', '1000000',
            '--new-sessions-per-sec', '1000000', '--new-sessions-burst', '1000000',
            '--messages-per-sec', '1000000', '--messages-burst', '1000000',
            '--bytes-per-sec', '1073741824', '--bytes-burst', '1073741824']),
        startProxy('ws', [process.execPath, join(here, 'servers.mjs'), '--kind', 'ws', '--listen', '127.0.0.1:0']),
        startProxy('sio', [process.execPath, join(here, 'servers.mjs'), '--kind', 'socketio', '--listen', '127.0.0.1:0']),
    ]);
    for (const p of Object.values(proxies)) say(`${p.name}: server ${p.upstream}, fault proxy ${p.proxy}, control ${p.control}`);
    const urlFor = (client, base) => {
        const kind = kindOf(client);
        if (kind === 'ws') return base.replace(/^http/, 'ws') + '/';
        if (kind === 'sio') return base;
        return `${base}/realtime`;
    };
    for (let round = 1; round <= ROUNDS; round += 1) {
        if (ROUNDS > 1) say(`round ${round} of ${ROUNDS}`);
        const results = {};
        rounds.push(results);
        const caseResults = new Map(); // case id -> page result, this round
        for (const metric of METRICS) {
            results[metric.id] = {};
            for (const client of metric.clients) {
                const via = metric.via ?? 'direct';
                const caseId = metric.derived ? `${metric.derived}/${client}` : `${metric.id}/${client}`;
                if (only && !only.test(caseId)) continue;
                let page = caseResults.get(caseId);
                if (!page) {
                    const proxy = proxies[kindOf(client)];
                    const n = metric.case === 'rtt' ? RTT_N : BURST_N;
                    const reps = metric.case === 'reconnect' ? RESTART_REPS : metric.id === 'first' ? FIRST_REPS : FAULT_REPS;
                    if (metric.mode) await control(proxy, `/mode?${metric.mode}`);
                    const started = Date.now();
                    try {
                        page = await runInChromium({ case: metric.case, client, url: urlFor(client, via === 'proxy' ? proxy.proxy : proxy.upstream),
                            n: String(n), reps: String(reps), control: proxy.control, batch: String(BURST_WINDOW_BATCH),
                            ...(profiling && metric.case === 'rtt' ? { profile: '1' } : {}),
                            timeout: String(metric.case === 'reconnect' ? 10000 : metric.id === 'first' ? 3000 : 2000) });
                    } finally {
                        if (metric.mode) await control(proxy, '/reset');
                    }
                    caseResults.set(caseId, page);
                    raw.push({ round, case: caseId, seconds: (Date.now() - started) / 1000, ...page });
                    say(`${ROUNDS > 1 ? `round ${round} ` : ''}${caseId}: ${page.ok ? 'done' : 'FAILED'} in ${((Date.now() - started) / 1000).toFixed(1)} s${page.ok ? '' : `: ${page.error}`}`);
                    if (!page.ok) exitCode = 1;
                }
                if (!page.ok) { results[metric.id][client] = { value: null, detail: 'failed' }; continue; }
                if (metric.case === 'first') {
                    const samples = page.result.samples;
                    const arrived = samples.filter((s) => s.ms !== null);
                    const transports = [...new Set(arrived.map((s) => s.transport))].join('/');
                    const max = arrived.length ? ` (max ${format(Math.max(...arrived.map((s) => s.ms)), 'ms')})` : '';
                    const detail = arrived.length === samples.length ? `via ${transports}${max}`
                        : arrived.length === 0 ? `never: ${samples[0]?.note}` : `${arrived.length}/${samples.length} arrived, via ${transports}`;
                    results[metric.id][client] = { value: median(arrived.map((s) => s.ms)), detail, samples: samples.map((s) => s.ms) };
                } else if (metric.case === 'reconnect') {
                    const values = page.result.samples.map(metric.pickSample);
                    const missed = values.filter((v) => v === null).length;
                    const reopened = values.filter((v) => v !== null);
                    const detail = `${reopened.length ? `max ${format(Math.max(...reopened), 'ms')}` : ''}${missed ? `; ${missed} not reopened within 10 s` : ''}`;
                    results[metric.id][client] = { value: median(values), detail, samples: values };
                } else {
                    results[metric.id][client] = { value: metric.pick(page.result), detail: '' };
                }
            }
        }
    }
} catch (error) {
    console.error(`bench: ${error.stack ?? error}`);
    for (const p of Object.values(proxies)) console.error(`bench: ${p.name} proxy log:\n${p.log()}`);
    exitCode = 1;
} finally {
    await stopAll();
    harness.close();
}

// ---- The table: each value, its ratio to the raw WebSocket and RealtimeClient vs socket.io, ----
// ---- each ratio within a round, then the median over the rounds (spread: lowest-highest). ----

function format(value, unit) {
    if (value === null || value === undefined) return '—';
    if (unit === 'msg/s') return `${Math.round(value).toLocaleString('en-US')}`;
    return value < 10 ? value.toFixed(3) : value.toFixed(1);
}
/** The socket.io client a RealtimeClient figure is compared with (the default ladder against socket.io's default). */
function socketIoFor(client, row) {
    const order = client === 'rc' || client === 'rc-remembered' ? ['sio', 'sio-ws'] : ['sio-ws', 'sio'];
    return order.find((name) => row[name]) ?? null;
}
/** Per round, value / reference value (null where either is missing). */
function ratiosOver(metricId, client, reference) {
    return rounds.map((round) => {
        const a = round[metricId]?.[client]?.value ?? null;
        const b = reference ? round[metricId]?.[reference]?.value ?? null : null;
        return a === null || b === null || b === 0 ? null : a / b;
    });
}
const ratioText = (stats) => {
    if (stats.median === null) return '—';
    return ROUNDS > 1 ? `${stats.median.toFixed(2)}x (${stats.min.toFixed(2)}-${stats.max.toFixed(2)})` : `${stats.median.toFixed(2)}x`;
};

const aggregate = {}; // metric id -> client -> { value (median), values per round, ratios }
const lines = [];
for (const metric of METRICS) {
    const present = metric.clients.filter((client) => rounds.some((round) => round[metric.id]?.[client]));
    if (present.length === 0) continue;
    aggregate[metric.id] = {};
    const ratioWidth = ROUNDS > 1 ? 21 : 11;
    lines.push('', `${metric.title} [${metric.unit}, ${metric.lower ? 'lower' : 'higher'} is better${ROUNDS > 1 ? `; median of ${ROUNDS} rounds` : ''}]`);
    lines.push(`  ${'client'.padEnd(40)} ${'value'.padStart(12)} ${'vs raw WS'.padStart(ratioWidth)} ${'vs socket.io'.padStart(ratioWidth)}  note`);
    const anyRound = Object.assign({}, ...rounds.map((round) => round[metric.id] ?? {}));
    for (const client of present) {
        const values = rounds.map((round) => round[metric.id]?.[client]?.value ?? null);
        const vsRaw = spread(ratiosOver(metric.id, client, anyRound.raw ? 'raw' : null));
        const socketIo = client.startsWith('rc') ? socketIoFor(client, anyRound) : null;
        const vsSocketIo = spread(ratiosOver(metric.id, client, socketIo));
        const details = rounds.map((round) => round[metric.id]?.[client]?.detail).filter(Boolean);
        aggregate[metric.id][client] = { value: median(values), values, vsRaw, vsSocketIo: socketIo ? { against: socketIo, ...vsSocketIo } : null,
            perRound: rounds.map((round) => round[metric.id]?.[client] ?? null) };
        const perRound = ROUNDS > 1 ? `rounds ${values.map((v) => format(v, metric.unit)).join(' / ')}` : '';
        const note = [perRound, details[details.length - 1] ?? ''].filter(Boolean).join('; ');
        lines.push(`  ${CLIENT_LABELS[client].padEnd(40)} ${format(median(values), metric.unit).padStart(12)} ${ratioText(vsRaw).padStart(ratioWidth)}` +
            ` ${(client.startsWith('rc') ? ratioText(vsSocketIo) : '').padStart(ratioWidth)}  ${note}`);
    }
}
// The profile (BENCH_PROFILE=1): per client, where the samples of its round trip runs fell,
// summed over the rounds, as shares of all samples and of the busy (non-idle) ones.
const profileLines = [];
for (const client of ['raw', 'sio-ws', ...RC_TRANSPORTS]) {
    const runs = raw.filter((run) => run.case === `rtt-p50/${client}` && run.result?.profile);
    if (runs.length === 0) continue;
    const counts = {};
    let samples = 0;
    let inClient = 0;
    let trips = 0;
    for (const { result } of runs) {
        samples += result.profile.samples;
        inClient += result.profile.inClient;
        trips += result.n;
        for (const [kind, count] of Object.entries(result.profile.counts)) counts[kind] = (counts[kind] ?? 0) + count;
    }
    const busy = samples - counts.idle;
    const pct = (count, of) => (of ? `${((100 * count) / of).toFixed(1)}%` : '—');
    const parts = Object.entries(counts).filter(([kind, count]) => kind !== 'idle' && count > 0).map(([kind, count]) => `${kind} ${pct(count, busy)}`);
    const functions = new Map();
    for (const { result } of runs) for (const [name, count] of result.profile.top ?? []) functions.set(name, (functions.get(name) ?? 0) + count);
    const top = [...functions].sort((a, b) => b[1] - a[1]).slice(0, 8).map(([name, count]) => `${name} ${pct(count, busy)}`);
    profileLines.push(`  ${CLIENT_LABELS[client].padEnd(28)} ${String(samples).padStart(7)} samples (${(samples / trips).toFixed(2)} per round trip); ` +
        `idle ${pct(counts.idle, samples)}; of the busy ones: ${parts.join(', ')}; package on the stack ${pct(inClient, busy)}`,
        `    most often on top (of the busy samples): ${top.join('; ')}`);
}
if (profileLines.length) {
    lines.push('', `round trip profile (BENCH_PROFILE=1, JS Self-Profiling API, top frame of each sample, summed over ${ROUNDS} round(s); ` +
        'idle: no JS on the stack, i.e. the event loop waiting or the browser working):', ...profileLines);
}
const targets = browserTargetRows(rounds, Object.fromEntries(METRICS.map((metric) => [metric.id, { unit: metric.unit }])));
console.log(`\nrealtime-client browser benchmarks (${quick ? 'BENCH_QUICK=1' : 'full'}, ${ROUNDS} round(s)); ratios are value / raw WebSocket value and RealtimeClient / socket.io, ` +
    `both from the same round${ROUNDS > 1 ? '; median over the rounds (lowest-highest round)' : ''}`);
console.log(`machine: nproc ${machine.nproc}; CPU ${machine.cpu}; ${machine.chromium}; Node ${machine.node}`);
console.log(`date: ${machine.date}; command: ${machine.command}`);
console.log(lines.join('\n'));
console.log(`\nbrowser targets (tests/bench/targets.mjs; ${ROUNDS > 1 ? `median of ${ROUNDS} rounds` : 'one round: BENCH_ROUNDS=3 for the median the targets ask for'}):`);
console.log(formatTargets(targets));
mkdirSync(dirname(outPath), { recursive: true });
writeFileSync(outPath, JSON.stringify({ machine,
    config: { RTT_N, BURST_N, FIRST_REPS, FAULT_REPS, RESTART_REPS, rounds: ROUNDS, chromiumFlags: CHROMIUM_FLAGS },
    // Per metric and client: the median over the rounds, every round's value, the ratios' median and spread.
    metrics: METRICS.map(({ id, title, unit, lower }) => ({ id, title, unit, lowerIsBetter: lower, clients: aggregate[id] ?? {} })),
    targets,
    // Every page's raw result, each with its round.
    runs: raw }, null, 2) + '\n');
console.log(`\nbench: results written to ${outPath}`);
process.exit(exitCode);
