// Tests of .ci/post-build.mjs on a small wasm-pack-shaped fixture (a wasm assembled by binaryen's
// wasm-as, a glue in the shape wasm-bindgen 0.2.129 writes): it processes the expected shape, and it
// fails, writing nothing, on each kind of change of wasm-bindgen's output it checks for.
// Run by `.ci/post-build.sh --test` (`make test-host`), which passes the tools in the environment.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath, pathToFileURL } from 'node:url';

const script = join(dirname(fileURLToPath(import.meta.url)), 'post-build.mjs');
const { WASM_IMPORT_NAMES_BIN: helper, NPM_TOOLS_DIR: npmTools } = process.env;
assert.ok(helper && npmTools, 'run through .ci/post-build.sh --test');

const MODULE = './fixture_bg.js';
const wat = (names) => `(module
 ${names.map((name, i) => `(import "${MODULE}" "${name}" (func $i${i} (param i32) (result i32)))`).join('\n ')}
 (func (export "fixture_run") (param i32) (result i32)
  ${names.map((_, i) => `(call $i${i}`).join(' ')} (local.get 0)${')'.repeat(names.length)}))`;
const NAMES = ['__wbg_double_0123456789abcdef', '__wbindgen_add_one'];
const glue = (keys = NAMES, extra = '') => `/* @ts-self-types="./fixture.d.ts" */
export class Fixture {
    run(x) {
        return wasm.fixture_run(x);
    }
}${extra}
function __wbg_get_imports() {
    const import0 = {
        __proto__: null,
        ${keys[0]}: function(arg0) {
            return arg0 * 2;
        },
${keys.slice(1).map((key) => `        ${key}: function(arg0) {\n            return arg0 + 1;\n        },\n`).join('')}    };
    return {
        __proto__: null,
        "${MODULE}": import0,
    };
}
let wasm;
function initSync(module) {
    if (!(module instanceof WebAssembly.Module)) module = new WebAssembly.Module(module.module ?? module);
    wasm = new WebAssembly.Instance(module, __wbg_get_imports()).exports;
    return wasm;
}
export { initSync };
`;

// A wasm-pack-like directory; returns its path.
// withNames: a name section in the wasm, as `make package` links it (step 0 then runs the helper).
function fixture({ names = NAMES, glueText = glue(), withNames = false } = {}) {
    const dir = mkdtempSync(join(tmpdir(), 'post-build-test-'));
    writeFileSync(join(dir, 'fixture.wat'), wat(names));
    execFileSync(join(npmTools, 'node_modules/.bin/wasm-as'), [join(dir, 'fixture.wat'), ...(withNames ? ['-g'] : []), '-o', join(dir, 'fixture_bg.wasm')]);
    writeFileSync(join(dir, 'fixture.js'), glueText);
    writeFileSync(join(dir, 'fixture.d.ts'), 'export class Fixture { run(x: number): number; }\n');
    writeFileSync(join(dir, 'fixture_bg.wasm.d.ts'), 'export const fixture_run: (a: number) => number;\n');
    return dir;
}
const run = (dir) => spawnSync(process.execPath, [script, dir, helper, npmTools], { encoding: 'utf8' });
const files = (dir) => ['fixture_bg.wasm', 'fixture.js'].map((name) => readFileSync(join(dir, name)).toString('base64'));

test('renames the imports, minifies the glue, and the pair still works', async () => {
    const dir = fixture();
    try {
        const result = run(dir);
        assert.equal(result.status, 0, result.stderr);
        const wasm = readFileSync(join(dir, 'fixture_bg.wasm'));
        const imports = WebAssembly.Module.imports(new WebAssembly.Module(wasm));
        assert.deepEqual(imports.map(({ module, name }) => `${module} ${name}`), ['w a', 'w b']);
        const processed = readFileSync(join(dir, 'fixture.js'), 'utf8');
        for (const name of [...NAMES, MODULE]) assert.ok(!processed.includes(name), `${name} left in the glue`);
        assert.ok(processed.length < glue().length);
        const module = await import(pathToFileURL(join(dir, 'fixture.js')).href);
        module.initSync({ module: wasm });
        assert.equal(new module.Fixture().run(5), 12); // (5 + 1) * 2
        assert.equal(module.Fixture.name, 'Fixture');
        // A second run refuses: the imports are no longer wasm-bindgen's.
        const again = run(dir);
        assert.notEqual(again.status, 0);
        assert.match(again.stderr, /already processed/);
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
});

test('with a name section, runs the helper on the wasm and ships no names', async () => {
    const dir = fixture({ withNames: true });
    try {
        const before = readFileSync(join(dir, 'fixture_bg.wasm'));
        assert.equal(WebAssembly.Module.customSections(new WebAssembly.Module(before), 'name').length, 1);
        const result = run(dir);
        assert.equal(result.status, 0, result.stderr);
        assert.match(result.stdout, /0 uncallable functions trapped \(none\)/);
        const wasm = readFileSync(join(dir, 'fixture_bg.wasm'));
        assert.equal(WebAssembly.Module.customSections(new WebAssembly.Module(wasm), 'name').length, 0);
        const module = await import(pathToFileURL(join(dir, 'fixture.js')).href);
        module.initSync({ module: wasm });
        assert.equal(new module.Fixture().run(5), 12);
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
});

// A glue that imports a snippet (#[wasm_bindgen(module = ...)]), as wasm-bindgen writes it.
const SNIPPET = './snippets/fixture-0123456789abcdef/src/tag.js';
const snippetGlue = () =>
    `import { tag, untag as local } from '${SNIPPET}';\n` +
    glue().replace('return wasm.fixture_run(x);', 'return local(tag(wasm.fixture_run(x)));');
const snippetSource = `// A snippet.
function secret(x) { return x * 1000; }
export function tag(x) { return secret(1) + x; }
export function untag(x) { return x - 1; }
`;
function withSnippet(dir, source = snippetSource) {
    mkdirSync(join(dir, dirname(SNIPPET)), { recursive: true });
    writeFileSync(join(dir, SNIPPET), source);
    return dir;
}

test('inlines a snippet into the glue and removes snippets/', async () => {
    const dir = withSnippet(fixture({ glueText: snippetGlue() }));
    try {
        const result = run(dir);
        assert.equal(result.status, 0, result.stderr);
        assert.ok(!existsSync(join(dir, 'snippets')), 'snippets/ left behind');
        const processed = readFileSync(join(dir, 'fixture.js'), 'utf8');
        assert.ok(!processed.includes('snippets'), 'the glue still imports the snippet');
        const module = await import(pathToFileURL(join(dir, 'fixture.js')).href);
        module.initSync({ module: readFileSync(join(dir, 'fixture_bg.wasm')) });
        assert.equal(new module.Fixture().run(5), 1011); // (5 + 1) * 2 + 1000 - 1
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
});

test('inlines a snippet whose names clash with the glue\'s in a function of its own', async () => {
    // `wasm` and `initSync` are the glue's too: declared at the top level, they would collide.
    const source = snippetSource.replace('function secret(x) { return x * 1000; }', 'const wasm = 1000;\nfunction initSync() { return wasm; }\nfunction secret(x) { return x * initSync(); }');
    const dir = withSnippet(fixture({ glueText: snippetGlue() }), source);
    try {
        const result = run(dir);
        assert.equal(result.status, 0, result.stderr);
        assert.ok(!existsSync(join(dir, 'snippets')), 'snippets/ left behind');
        const module = await import(pathToFileURL(join(dir, 'fixture.js')).href);
        module.initSync({ module: readFileSync(join(dir, 'fixture_bg.wasm')) });
        assert.equal(new module.Fixture().run(5), 1011);
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
});

const snippetRefusals = {
    'a snippet with another kind of export': { source: snippetSource + 'export const other = 1;\n', error: /an export other than/ },
    'a snippet that imports': { source: "import './x.js';\n" + snippetSource, error: /imports something/ },
    'a name the snippet does not export': { source: snippetSource.replace('export function untag', 'function untag'), error: /does not export it/ },
};
for (const [what, { source, error }] of Object.entries(snippetRefusals)) {
    test(`fails, writing nothing, on ${what}`, () => {
        const dir = withSnippet(fixture({ glueText: snippetGlue() }), source);
        try {
            const before = files(dir);
            const result = run(dir);
            assert.notEqual(result.status, 0, result.stdout);
            assert.match(result.stderr, error);
            assert.deepEqual(files(dir), before);
            assert.ok(existsSync(join(dir, SNIPPET)));
        } finally {
            rmSync(dir, { recursive: true, force: true });
        }
    });
}

const refusals = {
    'an import name used outside the imports object': {
        glueText: glue(NAMES, `\nconst alias = '${NAMES[0]}';`),
        error: /occurs 2 times in the glue/,
    },
    'an import the glue does not provide': { names: [...NAMES, '__wbg_gone_fedcba9876543210'], error: /missing __wbg_gone/ },
    'a key the wasm does not import': { glueText: glue([...NAMES, '__wbg_extra_00000000000000ff']), error: /not imported __wbg_extra/ },
    'another shape of the imports object': {
        glueText: glue().replace('const import0 = {', 'const imports = {'),
        error: /wasm-bindgen's output format changed/,
    },
    'another module name': { glueText: glue().replace(`"${MODULE}": import0`, '"wbg": import0'), error: /does not return/ },
    'an import that is not wasm-bindgen\'s': { names: [NAMES[0], 'console_log'], error: /unexpected import/ },
};
for (const [what, { names, glueText, error }] of Object.entries(refusals)) {
    test(`fails, writing nothing, on ${what}`, () => {
        const dir = fixture({ names, glueText });
        try {
            const before = files(dir);
            const result = run(dir);
            assert.notEqual(result.status, 0, result.stdout);
            assert.match(result.stderr, error);
            assert.deepEqual(files(dir), before);
        } finally {
            rmSync(dir, { recursive: true, force: true });
        }
    });
}
