// `make bench-build` (and the first step of `make bench`): bundles socket.io-client into an ES
// module for the page (esbuild, minified like an app would ship it), checks the syntax of the
// harness scripts and type-checks the page against the installed packages (tsc --strict on
// JSDoc). Never runs a benchmark.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { build } from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const fail = (message) => {
    console.error(`bench-build: ${message}`);
    process.exit(1);
};

if (!existsSync(join(here, 'node_modules/realtime-client/index.js'))) {
    fail('realtime-client is not installed in tests/bench: .ci/bench.sh installs the packed tarball');
}
mkdirSync(join(here, 'build/vendor'), { recursive: true });
await build({
    entryPoints: [join(here, 'node_modules/socket.io-client/build/esm/index.js')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    outfile: join(here, 'build/vendor/socket.io-client.js'),
    logLevel: 'warning',
});
for (const script of ['bench.mjs', 'servers.mjs', 'build.mjs', 'targets.mjs', 'page/bench.js']) {
    execFileSync(process.execPath, ['--check', join(here, script)], { stdio: 'inherit' });
}
try {
    execFileSync(process.execPath, [join(here, 'node_modules/typescript/bin/tsc'), '-p', join(here, 'tsconfig.json')], {
        stdio: 'inherit',
    });
} catch {
    fail('tsc: page/bench.js does not type-check against the installed packages');
}
console.log('bench-build: socket.io-client bundled into build/vendor, scripts parse, page/bench.js type-checks');
