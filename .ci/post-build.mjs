// Post-build step of wasm-pack's output (run by .ci/post-build.sh, which `make package`, `make size`,
// `make demo` and the demo test call right after wasm-pack): what ships gets smaller, its API not.
//
//   node .ci/post-build.mjs DIR WASM_IMPORT_NAMES_BIN NPM_TOOLS_DIR
//
// 1. Short import names. wasm-bindgen names each import `__wbg_<name>_<16 hex digits>` or
//    `__wbindgen_<name>`, and repeats the module name "./<crate>_bg.js" in every entry of the
//    wasm's import section; the glue spells each name once more as a key of its imports object.
//    Each import gets a name of one or two letters and the module becomes "w", in the wasm (by
//    .ci/wasm-import-names, which rewrites only the import section) and in the glue (the key, and
//    the module's key in the object __wbg_get_imports returns). Nothing else refers to those
//    names: the wasm looks its imports up by them, and the glue only builds the object.
// 2. The glue minified by terser (pinned in .ci/npm-tools/package-lock.json). Exported names are
//    never renamed, nor are properties (the methods and getters of RealtimeClient), and
//    keep_classnames keeps `RealtimeClient.name`. Before that, the JS snippets the glue imports
//    (DIR/snippets, #[wasm_bindgen(module = ...)]: src/client/hub.js) are inlined into it (1c
//    below) and DIR/snippets is removed.
//
// It refuses rather than guesses: before touching anything it checks that the glue has exactly the
// shape this step knows (the imports object and its return, each import name exactly once in the
// glue and as a key of that object, the keys and the wasm's imports the same set, no import name
// in the .d.ts files). A wasm-bindgen whose output differs fails the build here. After writing, it
// instantiates the processed wasm with the processed glue in Node (initSync: a missing or
// misspelt import is a LinkError) and compares the module's exports (names, class or function and
// arity, static and prototype members, class names) with those of the unprocessed glue.
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';

const [dirArg, helper, npmTools] = process.argv.slice(2);
if (!dirArg || !helper || !npmTools) {
    console.error('usage: node .ci/post-build.mjs DIR WASM_IMPORT_NAMES_BIN NPM_TOOLS_DIR');
    process.exit(2);
}
const requireTool = createRequire(join(resolve(npmTools), 'package.json'));
const { minify } = requireTool('terser');
// terser's parser, pinned by the same lock file: the top-level names of a snippet (1c).
const acorn = requireTool('acorn');
const dir = resolve(dirArg);
const say = (message) => console.log(`post-build: ${message}`);
const fail = (message) => {
    console.error(`post-build: ${message}`);
    // The scratch directory, once made (step 0).
    try { rmSync(work, { recursive: true, force: true }); } catch {}
    process.exit(1);
};

const wasmFiles = readdirSync(dir).filter((name) => name.endsWith('_bg.wasm'));
if (wasmFiles.length !== 1) fail(`expected one *_bg.wasm in ${dir}, found ${wasmFiles.length}`);
const stem = wasmFiles[0].slice(0, -'_bg.wasm'.length);
const wasmPath = join(dir, `${stem}_bg.wasm`);
const gluePath = join(dir, `${stem}.js`);
const typeFiles = [`${stem}.d.ts`, `${stem}_bg.wasm.d.ts`].map((name) => join(dir, name));
const MODULE = `./${stem}_bg.js`;
const NEW_MODULE = 'w';

const bindgenWasm = readFileSync(wasmPath);
const glue = readFileSync(gluePath, 'utf8');
const types = typeFiles.map((path) => readFileSync(path, 'utf8')).join('\n');
const gz = (data) => gzipSync(data, { level: 9 }).length;
const sizes = (wasmBytes, glueText) =>
    `wasm ${wasmBytes.length} B (${gz(wasmBytes)} B gz), glue ${Buffer.byteLength(glueText)} B (${gz(glueText)} B gz)`;
say(`${dir}: before: ${sizes(bindgenWasm, glue)} (wasm-bindgen's wasm, before wasm-opt)`);

// 0. Uncallable functions trapped, then wasm-opt (wasm-pack runs none: Cargo.toml says
// wasm-opt = false). The wasm cannot format (it holds no core::fmt::write: the panic handler
// traps without reading the message), yet each panic site stores a formatting method's table
// index in the message it builds, and wasm-opt keeps every function in the table: those methods
// and what they call (Formatter::pad, pad_integral, about 2.2 KB raw) stay for nothing; so do
// js-sys's JSPI waker functions, whose only maker went with the export wasm-bindgen deletes. The
// helper replaces their bodies by `unreachable` (it refuses a wasm that formats; see
// trap_uncallable in .ci/wasm-import-names). It finds them by the name section, which
// only `make package` keeps (.ci/package.sh links with --keep-section=name); the builds of
// `make size` and the demo have only the names wasm-bindgen gives its own shims, so nothing
// matches there and the step says "0 ... trapped" (no name section at all: skipped). Then wasm-opt with the
// flags below, which drops the names (no -g). --strip-producers drops the producers section
// (tool names and versions, nothing a runtime reads): -51 B gzipped. -O2 --flatten --rereloop
// -Oz -Oz instead of -Oz --converge: -198 B gzipped since channels; two more -Oz: -47 B (a fifth
// changes nothing) (README, "Keeping the wasm small", says how each was measured). Not applied:
// --strip-target-features (the section is gone).
const WASM_OPT_FLAGS = ['-O2', '--flatten', '--rereloop', '-Oz', '-Oz', '-Oz', '-Oz', '--low-memory-unused', '--enable-bulk-memory',
    '--enable-nontrapping-float-to-int', '--enable-sign-ext', '--enable-mutable-globals', '--strip-debug', '--strip-producers'];
const work = mkdtempSync(join(tmpdir(), 'post-build-'));
const optimizedPath = join(work, 'optimized.wasm');
let wasm;
{
    const named = WebAssembly.Module.customSections(new WebAssembly.Module(bindgenWasm), 'name').length > 0;
    let input = wasmPath;
    let trapped = [];
    if (named) {
        input = join(work, 'trapped.wasm');
        try {
            trapped = execFileSync(helper, ['--trap-uncallable', wasmPath, input], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
                .split('\n').filter(Boolean);
        } catch (error) {
            fail(`trapping the uncallable functions failed: ${error.message}`);
        }
    }
    try {
        execFileSync(join(resolve(npmTools), 'node_modules/.bin/wasm-opt'), [input, ...WASM_OPT_FLAGS, '-o', optimizedPath], { stdio: 'inherit' });
    } catch (error) {
        fail(`wasm-opt failed: ${error.message}`);
    }
    wasm = readFileSync(optimizedPath);
    if (WebAssembly.Module.customSections(new WebAssembly.Module(wasm), 'name').length) fail('wasm-opt kept the name section');
    const what = named ? `${trapped.length} uncallable functions trapped (${trapped.join(', ') || 'none'})` : 'no name section: nothing trapped';
    say(`${dir}: ${what}; wasm-opt ${WASM_OPT_FLAGS.join(' ')}: wasm ${wasm.length} B (${gz(wasm)} B gz)`);
}

// The wasm's imports, as V8 reads them.
const imports = WebAssembly.Module.imports(new WebAssembly.Module(wasm));
if (imports.length === 0) fail('the wasm imports nothing');
for (const { module, name, kind } of imports) {
    if (module !== MODULE || kind !== 'function' || !/^__wbg|^__wbindgen_/.test(name)) {
        const processed = module === NEW_MODULE ? ' (already processed? run wasm-pack again)' : '';
        fail(`unexpected import "${module}" "${name}" (${kind}): wasm-bindgen imports only functions named __wbg*/__wbindgen_* from "${MODULE}"${processed}`);
    }
}
const names = imports.map(({ name }) => name);
if (new Set(names).size !== names.length) fail('the wasm imports a name twice');

// The glue's imports object: `function __wbg_get_imports() { const import0 = { __proto__: null,
// KEY: function(...) {...}, ... }; return { __proto__: null, "MODULE": import0, }; }`.
const count = (text, needle) => text.split(needle).length - 1;
const head = 'function __wbg_get_imports() {\n    const import0 = {\n        __proto__: null,\n';
const tail = `\n    };\n    return {\n        __proto__: null,\n        "${MODULE}": import0,\n    };\n}\n`;
if (count(glue, head) !== 1) fail(`the glue has no single "${head.split('\n')[0]} const import0 = {" block: wasm-bindgen's output format changed`);
if (count(glue, tail) !== 1) fail(`the glue does not return { "${MODULE}": import0 } once: wasm-bindgen's output format changed`);
const start = glue.indexOf(head) + head.length;
const end = glue.indexOf(tail);
if (end < start) fail('the imports object ends before it starts');
const block = glue.slice(start, end);
const keys = [...block.matchAll(/^ {8}([A-Za-z_$][\w$]*): /gm)].map((match) => match[1]);
const missing = names.filter((name) => !keys.includes(name));
const extra = keys.filter((key) => !names.includes(key));
if (missing.length || extra.length || keys.length !== names.length) {
    fail(`the imports object's keys and the wasm's imports differ: missing ${missing.join(', ') || 'none'}; not imported ${extra.join(', ') || 'none'}`);
}
if (count(glue, `"${MODULE}"`) !== 1 || count(glue, `'${MODULE}'`) !== 0) fail(`"${MODULE}" occurs more than once in the glue`);
const token = (name) => new RegExp(`(?<![\\w$])${name.replace(/\$/g, '\\$')}(?![\\w$])`, 'g');
for (const name of names) {
    const inGlue = glue.match(token(name))?.length ?? 0;
    const asKey = count(block, `\n        ${name}: function(`) + (block.startsWith(`        ${name}: function(`) ? 1 : 0);
    if (inGlue !== 1 || asKey !== 1) fail(`${name} occurs ${inGlue} times in the glue, ${asKey} times as a key of the imports object (expected once, as that key)`);
    if (token(name).test(types)) fail(`${name} occurs in the .d.ts files`);
}

// Short names: a..z, A..Z, then two letters.
const letters = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';
const shortName = (index) =>
    index < letters.length ? letters[index] : letters[Math.floor(index / letters.length) - 1] + letters[index % letters.length];
const renames = new Map(names.map((name, index) => [name, shortName(index)]));

// 1a. The wasm.
try {
    const mapPath = join(work, 'imports.map');
    const renamedWasmPath = join(work, 'renamed.wasm');
    writeFileSync(mapPath, [...renames].map(([old, short]) => `${old} ${short}\n`).join(''));
    execFileSync(helper, [optimizedPath, renamedWasmPath, MODULE, NEW_MODULE, mapPath], { stdio: 'inherit' });
    const renamedWasm = readFileSync(renamedWasmPath);
    const renamedImports = WebAssembly.Module.imports(new WebAssembly.Module(renamedWasm));
    const expected = imports.map(({ name, kind }) => `${NEW_MODULE} ${renames.get(name)} ${kind}`).join('\n');
    if (renamedImports.map(({ module, name, kind }) => `${module} ${name} ${kind}`).join('\n') !== expected) {
        fail('the renamed wasm does not import the new names in the old order');
    }

    // 1b. The glue, only inside the imports object and its return.
    let renamedBlock = block;
    for (const [old, short] of renames) {
        renamedBlock = renamedBlock.replace(`        ${old}: function(`, `        ${short}: function(`);
    }
    const renamedTail = tail.replace(`"${MODULE}": import0`, `"${NEW_MODULE}": import0`);
    const renamedGlue = glue.slice(0, start) + renamedBlock + renamedTail + glue.slice(end + tail.length);
    for (const name of names) {
        if (token(name).test(renamedGlue)) fail(`${name} is still in the glue after renaming`);
    }

    // 1c. The JS snippets (#[wasm_bindgen(module = ...)]: src/client/hub.js) inlined into the glue,
    // which then needs no DIR/snippets/: one file fewer to fetch and to gzip. Each import
    // `import { a, b as c } from './snippets/...';` becomes the snippet, its `export function`s
    // plain functions, where the import stood (and `const c = b;`), or, should one of its
    // top-level names occur in the glue otherwise, `const { a, b: c } = (() => { <the same>
    // return { a, b }; })();`. A snippet of another shape (an import of its own, another kind of
    // export, a name it does not export) fails here.
    const snippetsDir = join(dir, 'snippets');
    const snippetImport = /^import \{([^}]*)\} from '(\.\/snippets\/[^']+\.js)';\n/gm;
    let inlinedGlue = renamedGlue;
    const snippetPaths = [];
    for (const [statement, list, relative] of renamedGlue.matchAll(snippetImport)) {
        const path = join(dir, relative);
        snippetPaths.push(path);
        const source = readFileSync(path, 'utf8');
        if (/^\s*import\b/m.test(source)) fail(`${relative} imports something: only self-contained snippets are inlined`);
        const exported = [...source.matchAll(/^export function ([A-Za-z_$][\w$]*)\(/gm)].map((match) => match[1]);
        const body = source.replace(/^export function /gm, 'function ');
        if (/^\s*export\b/m.test(body)) fail(`${relative} has an export other than \`export function name(\``);
        const specifiers = list.split(',').map((item) => item.trim()).filter(Boolean).map((item) => {
            const match = /^([A-Za-z_$][\w$]*)(?: as ([A-Za-z_$][\w$]*))?$/.exec(item);
            if (!match) fail(`cannot read the import specifier "${item}" of ${relative}`);
            if (!exported.includes(match[1])) fail(`the glue imports ${match[1]} from ${relative}, which does not export it`);
            return [match[1], match[2] ?? match[1]];
        });
        // Declared at the glue's top level when none of the snippet's top-level names occurs in
        // the glue but as a binding the glue imports under that very name (it refers to the
        // same function then); in a function of its own otherwise.
        // (A declaration that is not a plain name, `const { a } = ...`, counts as a clash.)
        const declared = [];
        let patterns = false;
        for (const node of acorn.parse(body, { ecmaVersion: 'latest', sourceType: 'module' }).body) {
            if (node.type === 'FunctionDeclaration' || node.type === 'ClassDeclaration') declared.push(node.id.name);
            if (node.type === 'VariableDeclaration') {
                for (const { id } of node.declarations) id.type === 'Identifier' ? declared.push(id.name) : (patterns = true);
            }
        }
        const rest = inlinedGlue.replace(statement, '');
        const shared = declared.filter((name) => token(name).test(rest));
        const clash = patterns || shared.some((name) => !specifiers.some(([imported, local]) => imported === name && local === name));
        let replacement;
        if (clash) {
            const bindings = specifiers.map(([name, local]) => (name === local ? name : `${name}: ${local}`)).join(', ');
            replacement = `const { ${bindings} } = (() => {\n${body}\nreturn { ${exported.join(', ')} };\n})();\n`;
        } else {
            const aliases = specifiers.filter(([name, local]) => name !== local).map(([name, local]) => `const ${local} = ${name};\n`);
            replacement = `${body}\n${aliases.join('')}`;
        }
        inlinedGlue = inlinedGlue.replace(statement, () => replacement);
    }
    if (inlinedGlue.includes('./snippets/')) fail('the glue still refers to ./snippets/ after inlining');
    const snippetFiles = existsSync(snippetsDir) ? readdirSync(snippetsDir, { recursive: true }).filter((name) => name.endsWith('.js')) : [];
    if (snippetFiles.length !== snippetPaths.length) fail(`${dir}/snippets holds ${snippetFiles.length} scripts, the glue imports ${snippetPaths.length}`);

    // 2. Minified, comments dropped (also the @ts-self-types pointer to the .d.ts, which only Deno
    // reads: npm consumers get the types from package.json; 28 B gzipped).
    const minified = await minify(inlinedGlue, {
        module: true,
        // hoist_funs: function declarations first in their scope, where JS hoists them anyway: -28 B gz.
        compress: { passes: 2, hoist_funs: true },
        mangle: true,
        keep_classnames: true,
        format: { comments: false },
    });
    if (!minified.code) fail('terser returned no code');
    const finalGlue = minified.code + '\n';
    // The generated glue (compared below) imports the snippets by relative path.
    if (snippetPaths.length) cpSync(snippetsDir, join(work, 'snippets'), { recursive: true });

    // The check: the processed pair instantiates, and the API is the same as the unprocessed one's.
    const originalCopy = join(work, 'original.mjs');
    const processedCopy = join(work, 'processed.mjs');
    writeFileSync(originalCopy, glue);
    writeFileSync(processedCopy, finalGlue);
    const original = await import(pathToFileURL(originalCopy).href);
    const processed = await import(pathToFileURL(processedCopy).href);
    try {
        processed.initSync({ module: renamedWasm });
    } catch (error) {
        fail(`the processed wasm does not instantiate with the processed glue: ${error}`);
    }
    const surface = (module) =>
        JSON.stringify(
            Object.keys(module)
                .sort()
                .map((key) => {
                    const value = module[key];
                    if (typeof value !== 'function') return [key, typeof value];
                    const members = (object) =>
                        object ? [...Object.getOwnPropertyNames(object), ...Object.getOwnPropertySymbols(object).map(String)].sort() : [];
                    // A class keeps its name (keep_classnames); a function's name is not API.
                    const isClass = /^class\b/.test(Function.prototype.toString.call(value));
                    return [key, isClass ? `class ${value.name}` : `function/${value.length}`, members(value), members(value.prototype)];
                }),
        );
    if (surface(original) !== surface(processed)) {
        fail(`the processed glue's exports differ from the generated one's:\n  generated: ${surface(original)}\n  processed: ${surface(processed)}`);
    }

    writeFileSync(wasmPath, renamedWasm);
    writeFileSync(gluePath, finalGlue);
    if (snippetPaths.length) {
        rmSync(snippetsDir, { recursive: true, force: true });
        say(`${dir}: inlined into the glue, ${dir}/snippets removed: ${snippetFiles.join(', ')}`);
    }
    say(`${dir}: ${names.length} imports renamed (module "${MODULE}" -> "${NEW_MODULE}"), glue minified; exports checked: ${Object.keys(processed).sort().join(', ')}`);
    say(`${dir}: after: ${sizes(renamedWasm, finalGlue)}`);
} finally {
    rmSync(work, { recursive: true, force: true });
}
