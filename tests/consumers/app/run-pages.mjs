// Opens each consumer page given on the command line in headless Chromium (playwright-core
// driving the system's /usr/bin/chromium; no browser download) and waits, with a bounded
// timeout, for the page to report <body data-result="ok|fail">. Also checks that the page
// fetched exactly one .wasm file and that it was served as application/wasm (so the bundler
// emitted the asset and the URL it wrote resolves).
//
// Usage: node run-pages.mjs NAME=URL...   (env: CHROMIUM, PAGE_TIMEOUT_MS)
import { chromium } from 'playwright-core';

const pages = process.argv.slice(2).map((argument) => {
    const at = argument.indexOf('=');
    return { name: argument.slice(0, at), url: argument.slice(at + 1) };
});
if (pages.length === 0 || pages.some((page) => !page.name || !page.url)) {
    console.error('usage: node run-pages.mjs NAME=URL...');
    process.exit(2);
}
const timeoutMs = Number(process.env.PAGE_TIMEOUT_MS ?? 20000);

const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
        '--disable-sync', '--no-first-run'],
});
let failures = 0;
try {
    for (const { name, url } of pages) {
        const started = Date.now();
        const page = await browser.newPage();
        const log = [];
        const wasmResponses = [];
        page.on('console', (message) => log.push(`console.${message.type()}: ${message.text()}`));
        page.on('pageerror', (error) => log.push(`page error: ${error.stack ?? error}`));
        page.on('requestfailed', (request) => log.push(`request failed: ${request.url()} ${request.failure()?.errorText}`));
        page.on('response', (response) => {
            if (new URL(response.url()).pathname.endsWith('.wasm')) {
                wasmResponses.push(`${response.status()} ${response.headers()['content-type']} ${response.url()}`);
            }
        });
        let result = 'timeout';
        try {
            await page.goto(url);
            await page.waitForFunction(() => document.body?.dataset.result, null, { timeout: timeoutMs });
            result = await page.evaluate(() => document.body.dataset.result);
        } catch (error) {
            log.push(`runner: ${error.message.split('\n')[0]}`);
        }
        const title = await page.title().catch(() => '');
        const wasmOk = wasmResponses.length === 1 && / application\/wasm /.test(wasmResponses[0]) &&
            wasmResponses[0].startsWith('200 ');
        const ok = result === 'ok' && wasmOk;
        const seconds = ((Date.now() - started) / 1000).toFixed(1);
        console.log(`consumer ${name}: ${ok ? 'ok' : 'FAILED'} in ${seconds}s: ${title}`);
        console.log(`consumer ${name}: wasm fetched: ${wasmResponses.join('; ') || 'none'}`);
        if (!ok) {
            failures += 1;
            if (!wasmOk) log.push('runner: expected exactly one .wasm response, 200, application/wasm');
            const shown = log.length > 30 ? [...log.slice(0, 30), `... and ${log.length - 30} more`] : log;
            console.log(`consumer ${name}: ${url}\n  ${shown.join('\n  ')}`);
        }
        await page.close();
    }
} finally {
    await browser.close();
}
process.exit(failures === 0 ? 0 : 1);
