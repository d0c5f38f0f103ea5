// Combines the load generator's results of one `.ci/bench-server.sh` run into OUT_JSON and
// prints the table: every number beside the other server's from the same run, and their ratio.
//
//   node server-report.mjs RESULTS_DIR OUT_JSON
//
// RESULTS_DIR holds idle-realtime.json, idle-socketio.json, fanout-{realtime,socketio}-N.json and
// fanout-batch-{realtime,socketio}-N.json (one per round; the median round counts). The run's description comes from BENCH_* variables.

import { readdirSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

const [resultsDir, outJson] = process.argv.slice(2);
if (!resultsDir || !outJson) {
    console.error('usage: node server-report.mjs RESULTS_DIR OUT_JSON');
    process.exit(2);
}
const read = (name) => JSON.parse(readFileSync(join(resultsDir, name), 'utf8'));
const median = (values) => {
    const sorted = [...values].sort((a, b) => a - b);
    const middle = Math.floor(sorted.length / 2);
    return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};
const ratio = (a, b) => (b > 0 ? +(a / b).toFixed(2) : null);

const idle = { realtime: read('idle-realtime.json'), socketio: read('idle-socketio.json') };
const rounds = (prefix) =>
    readdirSync(resultsDir)
        .filter((name) => name.startsWith(prefix) && name.endsWith('.json'))
        .sort()
        .map(read);
function fanoutOf(prefix) {
    const result = {};
    for (const protocol of ['realtime', 'socketio']) {
        const runs = rounds(`${prefix}-${protocol}-`);
        if (runs.length === 0) throw new Error(`no ${prefix} results for ${protocol} in ${resultsDir}`);
        result[protocol] = {
            rounds: runs,
            median_deliveries_per_second: Math.round(median(runs.map((run) => run.deliveries_per_second))),
            median_publishes_per_second: +median(runs.map((run) => run.publishes_per_second)).toFixed(1),
        };
    }
    result.ratio_deliveries_per_second_realtime_to_socketio = ratio(result.realtime.median_deliveries_per_second, result.socketio.median_deliveries_per_second);
    return result;
}
const fanout = fanoutOf('fanout');
const fanoutBatch = fanoutOf('fanout-batch');

const report = {
    date: process.env.BENCH_DATE,
    command: process.env.BENCH_COMMAND,
    machine: { nproc: Number(process.env.BENCH_NPROC), cpu: process.env.BENCH_CPU, kernel: process.env.BENCH_KERNEL },
    load_average: { start: process.env.BENCH_LOADAVG_START, end: process.env.BENCH_LOADAVG_END },
    quick: process.env.BENCH_QUICK === '1',
    servers: {
        realtime: process.env.BENCH_REALTIME_SERVER,
        socketio: process.env.BENCH_SOCKETIO_SERVER,
    },
    method: {
        load_generator: 'tests/loadgen (tokio + tokio-tungstenite), the same for both servers, on the same machine as the server',
        idle: 'RSS (VmRSS) of the server process before and after opening the sessions and settling; per session = difference / sessions held. The socket.io server gets a full GC (POST /bench/gc) before each reading.',
        fanout: 'all sessions in one room; one HTTP publish request per message over keep-alive connections (reference: POST /realtime/publish, socket.io: POST /bench/publish -> io.to(room).emit); rate = sessions x messages / (first publish -> last delivery); median of the rounds, each on a fresh server',
        fanout_batch: 'the same with many messages per request (reference: batch publish, msg frames as application/x-realtime-frames; socket.io: POST /bench/publish-batch, a JSON array, one io.to(room).emit per element)',
    },
    idle: {
        ...idle,
        ratio_rss_per_session_realtime_to_socketio: ratio(idle.realtime.rss_per_session_bytes, idle.socketio.rss_per_session_bytes),
    },
    fanout,
    fanout_batch: fanoutBatch,
};
mkdirSync(dirname(resolve(outJson)), { recursive: true });
writeFileSync(outJson, JSON.stringify(report, null, 2) + '\n');

const num = (value) => Math.round(value).toLocaleString('en-US');
const kb = (bytes) => `${(bytes / 1000).toFixed(1)} KB`;
const mb = (kib) => `${((kib * 1024) / 1e6).toFixed(1)} MB`;
const rows = [
    ['metric', 'realtime-server', 'socket.io', 'ratio rt/sio'],
    [`idle: sessions held (of ${idle.realtime.sessions_requested})`, num(idle.realtime.held), num(idle.socketio.held), ratio(idle.realtime.held, idle.socketio.held)],
    ['idle: RSS per session', kb(idle.realtime.rss_per_session_bytes), kb(idle.socketio.rss_per_session_bytes), report.idle.ratio_rss_per_session_realtime_to_socketio],
    ['idle: RSS before -> after', `${mb(idle.realtime.rss_before_kib)} -> ${mb(idle.realtime.rss_after_kib)}`, `${mb(idle.socketio.rss_before_kib)} -> ${mb(idle.socketio.rss_after_kib)}`, ratio(idle.realtime.rss_after_kib, idle.socketio.rss_after_kib)],
    ['idle: heartbeats answered before the reading', num(idle.realtime.pongs_sent), num(idle.socketio.pongs_sent), ''],
    ['idle: sessions opened per second', num(idle.realtime.connects_per_second), num(idle.socketio.connects_per_second), ratio(idle.realtime.connects_per_second, idle.socketio.connects_per_second)],
];
for (const [label, result] of [['1 msg/request', fanout], [`${fanoutBatch.realtime.rounds[0].batch} msgs/request`, fanoutBatch]]) {
    const first = result.realtime.rounds[0];
    rows.push(
        [`fan-out ${label}: deliveries/s (${first.sessions} x ${first.messages}, median of ${result.realtime.rounds.length})`, num(result.realtime.median_deliveries_per_second), num(result.socketio.median_deliveries_per_second), result.ratio_deliveries_per_second_realtime_to_socketio],
        [`fan-out ${label}: each round`, result.realtime.rounds.map((run) => num(run.deliveries_per_second)).join(' '), result.socketio.rounds.map((run) => num(run.deliveries_per_second)).join(' '), ''],
        [`fan-out ${label}: messages published/s (median)`, num(result.realtime.median_publishes_per_second), num(result.socketio.median_publishes_per_second), ratio(result.realtime.median_publishes_per_second, result.socketio.median_publishes_per_second)],
    );
}
const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => String(row[column] ?? '').length)));
for (const row of rows) {
    console.log(row.map((cell, column) => (column === 0 ? String(cell).padEnd(widths[column]) : String(cell ?? '').padStart(widths[column]))).join('  '));
}
