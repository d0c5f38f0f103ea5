// The targets of `make bench`: every figure with a target, as a ratio beside that target and
// whether it is met. bench.mjs prints the browser rows at the end of its run (and stores them in
// target/bench/results.json); run as a script, this prints one table from the JSON files that
// `make bench` wrote (its last step):
//
//   node tests/bench/targets.mjs [RESULTS_JSON] [SIZE_JSON]
//       defaults: target/bench/results.json (.ci/bench.sh), target/bench/size.json
//       (.ci/bench-size.sh). A missing file is reported and its rows left out, and the exit
//       status is 1; a missed target is reported, not an error (exit 0).
//
// Every ratio is of two figures measured in the same run (the same round of the browser
// benchmarks), and the median over the rounds is what is compared with the target; the spread is
// the lowest and highest round. Two targets are bounds rather than ratios (the package's bytes,
// and the first message when the WebSocket is silent): they are shown as the figure divided by
// the bound, so that every row reads the same way. Edit the targets here, in one place.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package's gzipped bytes by the `make package` formula: at most this many. */
export const PACKAGE_BOUND_BYTES = 38000;
/** First message with the WebSocket upgraded and then silent: at most this many ms. */
export const FIRST_SILENT_BOUND_MS = 150;

// Browser targets, over bench.mjs's metrics and clients. `versus` is another client in the same
// round (a ratio) or `boundMs` (the figure over a bound). `higher`: the figure is a throughput, and
// the ratio must reach the bound rather than stay under it.
export const BROWSER_TARGETS = [
    { id: 'rtt-p50', figure: 'round trip p50: RealtimeClient (websocket) / raw WebSocket', metric: 'rtt-p50', client: 'rc-websocket', versus: 'raw', bound: 1.0, higher: false },
    { id: 'rtt-p99', figure: 'round trip p99: RealtimeClient (websocket) / socket.io (websocket)', metric: 'rtt-p99', client: 'rc-websocket', versus: 'sio-ws', bound: 1.0, higher: false },
    { id: 'send', figure: 'send until acknowledged, msg/s: RealtimeClient (websocket) / raw WebSocket', metric: 'send', client: 'rc-websocket', versus: 'raw', bound: 1.0, higher: true },
    { id: 'echo', figure: 'echo stream, msg/s: RealtimeClient (websocket) / raw WebSocket', metric: 'echo', client: 'rc-websocket', versus: 'raw', bound: 1.0, higher: true },
    { id: 'first-silent', figure: `first message, WebSocket silent: RealtimeClient (default ladder) / ${FIRST_SILENT_BOUND_MS} ms`, metric: 'first-silent', client: 'rc', boundMs: FIRST_SILENT_BOUND_MS, bound: 1.0, higher: false,
        // Shown beside it, same rounds: socket.io starting on HTTP long polling (it never waits on
        // the WebSocket) and RealtimeClient with the rung remembered from an earlier page.
        compare: [['sio', 'socket.io (default: polling first)'], ['rc-remembered', 'RealtimeClient with the rung remembered']] },
];

export function median(values) {
    const sorted = values.filter((v) => v !== null && v !== undefined && Number.isFinite(v)).sort((a, b) => a - b);
    if (sorted.length === 0) return null;
    const middle = Math.floor(sorted.length / 2);
    return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** { median, min, max, n } over the finite values. */
export function spread(values) {
    const present = values.filter((v) => v !== null && v !== undefined && Number.isFinite(v));
    return { median: median(present), min: present.length ? Math.min(...present) : null, max: present.length ? Math.max(...present) : null, n: present.length };
}

const fmtRatio = (value) => (value === null || value === undefined ? '—' : `${value.toFixed(2)}x`);
const fmtMs = (value) => (value === null || value === undefined ? '—' : value < 10 ? `${value.toFixed(3)} ms` : `${value.toFixed(1)} ms`);
const fmtRate = (value) => (value === null || value === undefined ? '—' : `${Math.round(value).toLocaleString('en-US')} msg/s`);
const fmtBytes = (value) => `${value.toLocaleString('en-US')} B`;

/**
 * The browser target rows from the rounds of one bench.mjs run.
 * @param {Array<Record<string, Record<string, { value: number | null }>>>} rounds   metric -> client -> entry, per round
 * @param {Record<string, { unit: string }>} units   metric id -> unit
 */
export function browserTargetRows(rounds, units) {
    const rows = [];
    for (const target of BROWSER_TARGETS) {
        const valueIn = (round, client) => round[target.metric]?.[client]?.value ?? null;
        if (!rounds.some((round) => round[target.metric]?.[target.client])) continue; // not run (BENCH_ONLY)
        const perRound = rounds.map((round) => {
            const value = valueIn(round, target.client);
            const reference = target.boundMs ?? valueIn(round, target.versus);
            return value === null || reference === null || reference === 0 ? null : value / reference;
        });
        const stats = spread(perRound);
        const unit = units[target.metric]?.unit;
        const fmt = unit === 'msg/s' ? fmtRate : fmtMs;
        const figures = spread(rounds.map((round) => valueIn(round, target.client)));
        let measured = fmt(figures.median);
        if (target.versus) measured += ` vs ${fmt(spread(rounds.map((round) => valueIn(round, target.versus))).median)}`;
        const notes = [];
        for (const [other, label] of target.compare ?? []) {
            const ratios = spread(rounds.map((round) => {
                const a = valueIn(round, target.client);
                const b = valueIn(round, other);
                return a === null || b === null || b === 0 ? null : a / b;
            }));
            const otherValue = spread(rounds.map((round) => valueIn(round, other))).median;
            notes.push(`${label} ${fmt(otherValue)}: ${fmtRatio(ratios.median)} of it`);
        }
        if (stats.n < rounds.length) notes.push(`${stats.n} of ${rounds.length} rounds measured`);
        rows.push(row(target.id, target.figure, measured, stats, target.bound, target.higher, notes.join('; '), rounds.length));
    }
    return rows;
}

/**
 * The size target rows from size.json (tests/bench-server/size.mjs).
 * @param {any} size
 */
export function sizeTargetRows(size) {
    const rows = [];
    const ours = size.libraries?.find((library) => library.name === 'realtime-client');
    if (!ours) return rows;
    for (const library of size.libraries) {
        if (library === ours) continue;
        const ratio = ours.total.gzip / library.total.gzip;
        rows.push(row(`size-vs-${library.name}`, `size as bundled, gzip -9: realtime-client / ${library.name} ${library.version}`,
            `${fmtBytes(ours.total.gzip)} vs ${fmtBytes(library.total.gzip)}`, { median: ratio, min: ratio, max: ratio, n: 1 }, null, false,
            `brotli 11: ${fmtRatio(ours.total.brotli / library.total.brotli)}`, 1));
    }
    if (size.package) {
        const ratio = size.package.total / PACKAGE_BOUND_BYTES;
        rows.push(row('size-package', `package, make package formula (gzip -9 of the wasm, realtime_client.js, index.js) / ${fmtBytes(PACKAGE_BOUND_BYTES)}`,
            `${fmtBytes(size.package.total)} (${size.package.files.map((f) => `${f.file} ${f.gzip.toLocaleString('en-US')}`).join(' + ')})`,
            { median: ratio, min: ratio, max: ratio, n: 1 }, 1.0, false, `${fmtBytes(Math.abs(size.package.total - PACKAGE_BOUND_BYTES))} ${size.package.total > PACKAGE_BOUND_BYTES ? 'over' : 'under'} the bound`, 1));
    }
    return rows;
}

function row(id, figure, measured, stats, bound, higher, note, rounds) {
    const met = bound === null || stats.median === null ? null : higher ? stats.median >= bound : stats.median <= bound;
    return { id, figure, measured, ratio: stats.median, min: stats.min, max: stats.max, roundsMeasured: stats.n, rounds,
        target: bound === null ? null : `${higher ? '≥' : '≤'} ${bound.toFixed(2)}x`, met, note };
}

/** The rows as a text table. */
export function formatTargets(rows) {
    const lines = [];
    const width = Math.max(40, ...rows.map((r) => r.figure.length));
    lines.push(`  ${'figure'.padEnd(width)}  ${'ratio'.padStart(6)}  ${'spread'.padEnd(13)}  ${'target'.padEnd(8)}  ${'met'.padEnd(7)}  figures (each the median of its rounds); note`);
    for (const r of rows) {
        const spreadText = r.rounds > 1 && r.min !== null ? `${r.min.toFixed(2)}-${r.max.toFixed(2)}` : '';
        const met = r.met === null ? (r.target ? 'no data' : '(shown)') : r.met ? 'met' : 'MISSED';
        lines.push(`  ${r.figure.padEnd(width)}  ${fmtRatio(r.ratio).padStart(6)}  ${spreadText.padEnd(13)}  ${(r.target ?? '—').padEnd(8)}  ${met.padEnd(7)}  ${r.measured}${r.note ? `; ${r.note}` : ''}`);
    }
    return lines.join('\n');
}

// ---- As a script: one table from the JSON files of the last `make bench`. ----

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
    const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
    const resultsPath = resolve(process.argv[2] ?? join(repoRoot, 'target/bench/results.json'));
    const sizePath = resolve(process.argv[3] ?? join(repoRoot, 'target/bench/size.json'));
    const rows = [];
    let missing = 0;
    console.log('\nbench: targets (each ratio from one run; browser figures: the median over the rounds, spread = lowest-highest round)');
    if (existsSync(resultsPath)) {
        const results = JSON.parse(readFileSync(resultsPath, 'utf8'));
        console.log(`bench: browser: ${results.machine.date}, ${results.config.rounds ?? 1} round(s)${results.machine.quick ? ', BENCH_QUICK=1' : ''}; command: ${results.machine.command}`);
        rows.push(...(results.targets ?? []));
    } else {
        console.log(`bench: browser: ${resultsPath} is missing (.ci/bench.sh writes it)`);
        missing += 1;
    }
    if (existsSync(sizePath)) {
        const size = JSON.parse(readFileSync(sizePath, 'utf8'));
        console.log(`bench: size: ${size.date}; command: ${size.command}`);
        rows.push(...sizeTargetRows(size));
    } else {
        console.log(`bench: size: ${sizePath} is missing (.ci/bench-size.sh writes it)`);
        missing += 1;
    }
    console.log(formatTargets(rows));
    const missed = rows.filter((r) => r.target && r.met !== true);
    console.log(`\nbench: ${rows.filter((r) => r.met === true).length} target(s) met, ${missed.length} missed or not measured${missed.length ? `: ${missed.map((r) => r.id).join(', ')}` : ''}`);
    process.exit(missing ? 1 : 0);
}
