// The demo page (www/public/index.html) in headless Chromium, clicked through like a person would:
// two pages (separate browser contexts) chat in a fresh room; A sends 3 messages and B sees them;
// A clicks "Drop connection" (the server breaks its transport off, POST /realtime/kick); while A
// reconnects, B sends 5; A is open again with a resumed session and shows each of B's messages
// exactly once and in order, and B shows A's once. Screenshots of both pages go to SHOT_DIR.
//
// Usage: ADMIN_TOKEN=TOKEN node run-demo.mjs BASE_URL SHOT_DIR
//   BASE_URL     a reference server started with --static-dir www/public --allow-kick and that admin token
//                (kick needs it), e.g. http://127.0.0.1:8080
//   ADMIN_TOKEN  handed to the pages as `make demo` does, in the URL's fragment (#admin=TOKEN);
//                the run checks that the page takes it out of its address and its share link.
// Every wait is bounded and fails with a message that says what did not happen.

import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { chromium } from 'playwright-core';

const [baseUrl, shotDir] = process.argv.slice(2);
const adminToken = process.env.ADMIN_TOKEN || '';
if (!baseUrl || !shotDir || !adminToken) {
  console.error('usage: ADMIN_TOKEN=TOKEN node run-demo.mjs BASE_URL SHOT_DIR');
  process.exit(2);
}

const WAIT_MS = 10_000; // any single step
const TOTAL_MS = 60_000; // the whole run
const VIEWPORT = { width: 1280, height: 1000 };
const started = Date.now();
let stepStarted = started;

const say = (text) => console.log(`demo-test: ${text}`);
function timed(label) {
  const now = Date.now();
  say(`${label} (${now - stepStarted} ms, ${now - started} ms total)`);
  stepStarted = now;
}
class Failure extends Error {}
const fail = (text) => {
  throw new Failure(text);
};

const overall = setTimeout(() => {
  console.error(`demo-test: FAILED: the run took longer than ${TOTAL_MS / 1000} s`);
  process.exit(1);
}, TOTAL_MS);

// Waits for `predicate(arg)` (run in the page) to hold; on timeout says `what` did not happen and
// shows `describe(arg)`'s view of the page.
async function waitInPage(page, what, predicate, arg, describe) {
  try {
    await page.waitForFunction(predicate, arg, { timeout: WAIT_MS, polling: 20 });
  } catch (error) {
    const seen = describe ? await page.evaluate(describe, arg).catch(() => '?') : '';
    fail(`${what} did not happen within ${WAIT_MS / 1000} s${seen ? `; the page shows ${JSON.stringify(seen)}` : ''}`);
  }
}

// What a page shows: chat bubbles by kind, the live panel, the event log (oldest first).
function snapshot() {
  const texts = (selector) => Array.from(document.querySelectorAll(selector), (node) => node.textContent);
  return {
    state: document.getElementById('state-pill').dataset.state,
    transport: document.getElementById('stat-transport').textContent,
    session: document.getElementById('stat-session').textContent,
    resumed: document.getElementById('stat-resumes').textContent,
    reconnects: document.getElementById('stat-reconnects').textContent,
    messagesIn: document.getElementById('stat-in').textContent,
    messagesOut: document.getElementById('stat-out').textContent,
    own: texts('#messages .message.own .message-text'),
    others: texts('#messages .message:not(.own):not(.system) .message-text'),
    authors: texts('#messages .message:not(.own):not(.system) .message-author'),
    system: texts('#messages .message.system .message-text'),
    unsettled: document.querySelectorAll('#messages .message.pending, #messages .message.failed').length,
    log: Array.from(document.querySelectorAll('#event-log li'), (item) => [
      item.dataset.event,
      item.querySelector('.log-detail').textContent,
    ]).reverse(),
    status: document.getElementById('status').textContent,
  };
}

async function openPage(browser, room, name) {
  const context = await browser.newContext({ viewport: VIEWPORT, colorScheme: 'light' });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (error) => problems.push(`uncaught: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console: ${message.text()}`);
  });
  const fragment = `#admin=${encodeURIComponent(adminToken)}`;
  const response = await page.goto(`${baseUrl}/?room=${encodeURIComponent(room)}${fragment}`, { timeout: WAIT_MS });
  if (!response || !response.ok()) fail(`${name}: the demo page answered ${response ? response.status() : 'nothing'}`);
  await page.fill('#name-input', name);
  return { page, name, problems };
}

async function send(page, text) {
  await page.fill('#message-input', text);
  await page.press('#message-input', 'Enter');
}

const sameList = (actual, expected) =>
  actual.length === expected.length && actual.every((value, index) => value === expected[index]);

async function checkPng(file, fullPage = false) {
  const bytes = await readFile(file).catch(() => fail(`no screenshot at ${file}`));
  const signature = '89504e470d0a1a0a';
  if (bytes.subarray(0, 8).toString('hex') !== signature) fail(`${file} is not a PNG`);
  const width = bytes.readUInt32BE(16);
  const height = bytes.readUInt32BE(20);
  if (width !== VIEWPORT.width || (fullPage ? height < VIEWPORT.height : height !== VIEWPORT.height)) {
    fail(`${file} is ${width}x${height}, expected the viewport`);
  }
  // A blank or single-colour page compresses to a few KB; the demo with text is far larger.
  if (bytes.length < 30_000) fail(`${file} is only ${bytes.length} bytes: the page looks empty`);
  return `${width}x${height}, ${bytes.length} bytes`;
}

async function main() {
  await mkdir(shotDir, { recursive: true });
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    timeout: WAIT_MS * 2,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
  try {
    await run(browser);
  } finally {
    await browser.close();
  }
}

async function run(browser) {
  const room = `demo-test-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  const [a, b] = await Promise.all([openPage(browser, room, 'Alice'), openPage(browser, room, 'Bob')]);
  timed(`two pages open in room ${room}`);

  for (const { page, name } of [a, b]) {
    await waitInPage(page, `${name}: the client connecting`, () => document.getElementById('state-pill').dataset.state === 'open', null, snapshot);
  }
  for (const { page, name } of [a, b]) {
    const shareLink = await page.evaluate(() => document.getElementById('share-link').href);
    if (page.url().includes(adminToken) || shareLink.includes(adminToken)) {
      fail(`${name}: the admin token is still in the page's address or share link (${page.url()}, ${shareLink})`);
    }
  }
  const [sessionA, sessionB] = await Promise.all([a.page.evaluate(snapshot), b.page.evaluate(snapshot)]);
  if (sessionA.session === sessionB.session) fail('both pages show the same session id');
  timed(`both open: Alice over ${sessionA.transport}, Bob over ${sessionB.transport}`);

  const fromAlice = ['Hi Bob, are you there?', 'I am about to lose my connection.', 'Watch this.'];
  for (const text of fromAlice) await send(a.page, text);
  await waitInPage(
    b.page,
    "Bob seeing Alice's 3 messages",
    (expected) => {
      const others = Array.from(document.querySelectorAll('#messages .message:not(.own):not(.system) .message-text'), (node) => node.textContent);
      return others.length === expected.length && others.every((text, index) => text === expected[index]);
    },
    fromAlice,
    snapshot,
  );
  timed("Bob sees Alice's 3 messages");

  await a.page.click('#drop-button');
  await waitInPage(
    a.page,
    "Alice's client reporting the lost connection ('reconnecting')",
    () => document.querySelector('#event-log li[data-event="reconnecting"]') !== null,
    null,
    snapshot,
  );
  timed('Alice dropped her connection and is reconnecting');

  // Bob's 5 messages go out at once through the page's own form, so they reach the server while
  // Alice is still away (her first retry waits a random 0-500 ms) and come to her by the resume.
  const fromBob = [1, 2, 3, 4, 5].map((n) => `Message ${n} of 5 from Bob while Alice is away`);
  await b.page.evaluate((texts) => {
    const input = document.getElementById('message-input');
    const form = document.getElementById('composer');
    for (const text of texts) {
      input.value = text;
      form.requestSubmit();
    }
  }, fromBob);
  const aliceWhileBobSent = await a.page.evaluate(() => document.getElementById('state-pill').dataset.state);
  timed(`Bob sent 5 messages (Alice's state then: ${aliceWhileBobSent})`);

  await waitInPage(
    a.page,
    "Alice's client opening again with a resumed session",
    () =>
      document.getElementById('state-pill').dataset.state === 'open' &&
      Number(document.getElementById('stat-resumes').textContent) >= 1,
    null,
    snapshot,
  );
  timed('Alice is open again (resumed)');

  // Everything delivered and acknowledged on both sides: the lists are final.
  for (const [page, what, own, others] of [
    [a.page, 'Alice', fromAlice, fromBob],
    [b.page, 'Bob', fromBob, fromAlice],
  ]) {
    await waitInPage(
      page,
      `${what}: every message shown and every own message delivered`,
      ([ownExpected, othersExpected]) => {
        const count = (selector) => document.querySelectorAll(selector).length;
        return (
          count('#messages .message.own') >= ownExpected.length &&
          count('#messages .message:not(.own):not(.system)') >= othersExpected.length &&
          count('#messages .message.pending') === 0 &&
          document.getElementById('stat-outbox').textContent === '0'
        );
      },
      [own, others],
      snapshot,
    );
  }
  timed('all messages delivered and acknowledged');

  const [shotA, shotFull, shotB] = ['chat.png', 'chat-full-page.png', 'chat-bob.png'].map((name) => path.join(shotDir, name));
  await a.page.screenshot({ path: shotA });
  await a.page.screenshot({ path: shotFull, fullPage: true });
  await b.page.screenshot({ path: shotB });
  const pngs = [await checkPng(shotA), await checkPng(shotFull, true), await checkPng(shotB)];
  timed(`screenshots taken: ${shotA} (${pngs[0]}), ${shotFull} (${pngs[1]}), ${shotB} (${pngs[2]})`);

  // Exactly once and in order, in the chat and in the client's own counters.
  const [viewA, viewB] = [await a.page.evaluate(snapshot), await b.page.evaluate(snapshot)];
  const checks = [
    [sameList(viewA.others, fromBob), `Alice shows Bob's messages ${JSON.stringify(viewA.others)}, expected ${JSON.stringify(fromBob)}`],
    [viewA.authors.every((author) => author === 'Bob'), `Alice shows authors ${JSON.stringify(viewA.authors)}`],
    [sameList(viewA.own, fromAlice), `Alice shows her own messages ${JSON.stringify(viewA.own)}`],
    [sameList(viewB.others, fromAlice), `Bob shows Alice's messages ${JSON.stringify(viewB.others)}, expected ${JSON.stringify(fromAlice)}`],
    [sameList(viewB.own, fromBob), `Bob shows his own messages ${JSON.stringify(viewB.own)}`],
    // Each client also receives its own messages back from the room: 3 + 5 each, no more.
    [viewA.messagesIn === '8' && viewB.messagesIn === '8', `messages in: Alice ${viewA.messagesIn}, Bob ${viewB.messagesIn}, expected 8 each`],
    [viewA.messagesOut === '3' && viewB.messagesOut === '5', `messages out: Alice ${viewA.messagesOut}, Bob ${viewB.messagesOut}`],
    [viewA.session === sessionA.session, `Alice's session changed from ${sessionA.session} to ${viewA.session}: not resumed`],
    [viewA.resumed === '1' && viewA.reconnects === '1', `Alice: resumed ${viewA.resumed}, reconnects ${viewA.reconnects}, expected 1 and 1`],
    [viewA.log.some(([event]) => event === 'drop'), "Alice's event log has no 'drop'"],
    [viewA.log.some(([event, detail]) => event === 'open' && detail.includes('session resumed')), "Alice's log has no open with resumed: true"],
    [!viewA.log.some(([event]) => event === 'reset'), 'Alice got a reset: the session was not resumed'],
    [viewA.unsettled === 0 && viewB.unsettled === 0, 'a message is still pending or failed'],
    [viewB.reconnects === '0', `Bob reconnected ${viewB.reconnects} times; only Alice was dropped`],
  ];
  for (const { name, page, problems } of [a, b]) {
    const errors = (name === 'Alice' ? viewA : viewB).log.filter(([event]) => event === 'error');
    checks.push([errors.length === 0, `${name}'s event log has errors: ${JSON.stringify(errors)}`]);
    checks.push([problems.length === 0, `${name}'s page reported: ${problems.join(' | ')}`]);
    void page;
  }
  const failed = checks.filter(([ok]) => !ok).map(([, message]) => message);
  if (failed.length > 0) fail(failed.join('\n  '));
  const reconnecting = viewA.log.find(([event]) => event === 'reconnecting');
  say(`Alice: ${reconnecting ? `reconnecting ${reconnecting[1]}` : ''}; back over ${viewA.transport}, same session ${viewA.session}`);
  timed('checked: every message exactly once and in order on both pages');
}

try {
  await main();
  clearTimeout(overall);
  say(`PASSED in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} catch (error) {
  clearTimeout(overall);
  console.error(`demo-test: FAILED: ${error instanceof Failure ? error.message : error.stack || error}`);
  process.exit(1);
}
