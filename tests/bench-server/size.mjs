// Size that a user ships, measured the same way for realtime-client and the libraries it is
// compared with (`.ci/bench-size.sh` runs this):
//
//   node size.mjs PKG_DIR OUT_JSON
//
// - Each library is bundled by esbuild from a one-line entry that imports what an app needs
//   (minified, ESM, platform browser, target es2022, legal comments dropped, no source maps),
//   so tree shaking and minification are those of a production build.
//   realtime-client: `export { RealtimeClient } from 'PKG_DIR/index.js'` (the package's entry:
//   index.js + the wasm-bindgen glue), plus `realtime_client_bg.wasm`, which the entry loads by
//   `new URL(..., import.meta.url)` and a bundler copies as an asset, unchanged.
//   socket.io-client 4: `export { io } from 'socket.io-client'`.
//   @microsoft/signalr 8: `export { HubConnectionBuilder } from '@microsoft/signalr'`.
//   centrifuge 5 (Centrifugo's client, JSON protocol): `export { Centrifuge } from 'centrifuge'`.
// - Every file is compressed on its own: `gzip -9` (GNU gzip, as .ci/package.sh measures the
//   size budget; Node's zlib at level 9 comes out ~2% larger on the wasm) and brotli quality 11
//   by Node's zlib (window 22, the defaults otherwise; no brotli CLI is installed here). A total
//   is the sum over a library's files, as a browser fetches them.
// - Also the package as `make package` counts it against .ci/size-budget (.ci/package.sh): the
//   files as packed, not bundled, each `gzip -9 -c FILE` (the header holds the file name), for
//   the bound in tests/bench/targets.mjs.
// - Prints a table and writes OUT_JSON.

import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { availableParallelism, cpus, release } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import { brotliCompressSync, constants } from 'node:zlib';
import { build, version as esbuildVersion } from 'esbuild';

import { formatTargets, sizeTargetRows } from '../bench/targets.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const [pkgDirArgument, outJson] = process.argv.slice(2);
if (!pkgDirArgument || !outJson) {
    console.error('usage: node size.mjs PKG_DIR OUT_JSON');
    process.exit(2);
}
const pkgDir = resolve(pkgDirArgument);

function packageVersion(directory) {
    return JSON.parse(readFileSync(join(directory, 'package.json'), 'utf8')).version;
}

function sizes(bytes) {
    return {
        raw: bytes.length,
        gzip: execFileSync('gzip', ['-9', '-c'], { input: bytes, maxBuffer: 64 << 20 }).length,
        brotli: brotliCompressSync(bytes, {
            params: {
                [constants.BROTLI_PARAM_QUALITY]: 11,
                [constants.BROTLI_PARAM_SIZE_HINT]: bytes.length,
            },
        }).length,
    };
}

async function bundle(entry) {
    const result = await build({
        stdin: { contents: entry, resolveDir: here, loader: 'js', sourcefile: 'entry.js' },
        bundle: true,
        minify: true,
        format: 'esm',
        platform: 'browser',
        target: 'es2022',
        legalComments: 'none',
        write: false,
        logLevel: 'warning',
    });
    if (result.outputFiles.length !== 1) throw new Error(`esbuild wrote ${result.outputFiles.length} files for ${entry}`);
    return Buffer.from(result.outputFiles[0].contents);
}

const libraries = [
    {
        name: 'realtime-client',
        version: packageVersion(pkgDir),
        entry: `export { RealtimeClient } from ${JSON.stringify(join(pkgDir, 'index.js'))};`,
        assets: [['realtime_client_bg.wasm', readFileSync(join(pkgDir, 'realtime_client_bg.wasm'))]],
    },
    {
        name: 'socket.io-client',
        version: packageVersion(join(here, 'node_modules', 'socket.io-client')),
        entry: `export { io } from 'socket.io-client';`,
        assets: [],
    },
    {
        name: '@microsoft/signalr',
        version: packageVersion(join(here, 'node_modules', '@microsoft', 'signalr')),
        entry: `export { HubConnectionBuilder } from '@microsoft/signalr';`,
        assets: [],
    },
    {
        name: 'centrifuge',
        version: packageVersion(join(here, 'node_modules', 'centrifuge')),
        entry: `export { Centrifuge } from 'centrifuge';`,
        assets: [],
    },
];

// The `make package` formula (.ci/package.sh): gzip -9 of each packed file, by name.
const packageFiles = ['realtime_client_bg.wasm', 'realtime_client.js', 'index.js'].map((file) => ({
    file,
    gzip: execFileSync('gzip', ['-9', '-c', file], { cwd: pkgDir, maxBuffer: 64 << 20 }).length,
}));
const packageFormula = {
    method: 'gzip -9 -c of each file as packed in pkg/ (.ci/package.sh, checked against .ci/size-budget)',
    files: packageFiles,
    total: packageFiles.reduce((sum, file) => sum + file.gzip, 0),
};

const results = [];
for (const library of libraries) {
    const files = [{ file: 'bundle.js (esbuild, minified)', ...sizes(await bundle(library.entry)) }];
    for (const [file, bytes] of library.assets) files.push({ file, ...sizes(bytes) });
    const total = { raw: 0, gzip: 0, brotli: 0 };
    for (const file of files) for (const key of Object.keys(total)) total[key] += file[key];
    results.push({ name: library.name, version: library.version, entry: library.entry.replace(pkgDir, 'pkg'), files, total });
}

const ours = results[0].total;
for (const result of results) {
    result.ratio_realtime_client_to_this = {
        gzip: +(ours.gzip / result.total.gzip).toFixed(2),
        brotli: +(ours.brotli / result.total.brotli).toFixed(2),
    };
}

const report = {
    // The run: set by .ci/bench-size.sh (BENCH_*), else read here.
    date: process.env.BENCH_DATE ?? new Date().toISOString(),
    command: process.env.BENCH_COMMAND ?? `node ${process.argv.slice(1).join(' ')}`,
    machine: {
        nproc: Number(process.env.BENCH_NPROC ?? availableParallelism()),
        cpu: process.env.BENCH_CPU ?? cpus()[0]?.model ?? 'unknown',
        kernel: release(),
    },
    method: 'esbuild bundle (minify, esm, browser, es2022, no legal comments) of a one-line entry; wasm as is; each file gzip -9 (GNU gzip) and brotli -q 11 (Node zlib); totals are sums',
    esbuild: esbuildVersion,
    node: process.version,
    gzip: execFileSync('gzip', ['--version'], { encoding: 'utf8' }).split('\n')[0],
    brotli: process.versions.brotli,
    libraries: results,
    package: packageFormula,
};
mkdirSync(dirname(resolve(outJson)), { recursive: true });
writeFileSync(outJson, JSON.stringify(report, null, 2) + '\n');

const pad = (text, width) => String(text).padEnd(width);
const num = (value) => value.toLocaleString('en-US');
const row = (cells) => console.log(cells.map(([text, width], index) => (index < 2 ? pad(text, width) : String(text).padStart(width))).join('  ').trimEnd());
row([['library', 34], ['file', 30], ['raw B', 9], ['gzip B', 8], ['brotli B', 8], ['ours/this gz', 12], ['ours/this br', 12]]);
for (const result of results) {
    for (const file of result.files) {
        row([[`${result.name} ${result.version}`, 34], [file.file, 30], [num(file.raw), 9], [num(file.gzip), 8], [num(file.brotli), 8], ['', 12], ['', 12]]);
    }
    row([[`${result.name} ${result.version}`, 34], ['TOTAL', 30], [num(result.total.raw), 9], [num(result.total.gzip), 8], [num(result.total.brotli), 8],
        [result.ratio_realtime_client_to_this.gzip.toFixed(2), 12], [result.ratio_realtime_client_to_this.brotli.toFixed(2), 12]]);
}
console.log(`realtime-client as make package counts it: ${packageFiles.map((f) => `${f.file} ${num(f.gzip)}`).join(' + ')} = ${num(packageFormula.total)} B gzip -9`);
console.log(`\nsize targets (tests/bench/targets.mjs):\n${formatTargets(sizeTargetRows(report))}`);
