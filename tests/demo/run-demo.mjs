// The demo page (www/public/index.html) in headless Chromium, clicked through like a person would.
// Two pages (separate browser contexts), each ONE client connection carrying every room and the
// live feed, each signed in with its name field (the server runs with --demo-auth: the page's
// `token` function POSTs the name to /realtime/demo-token) as "alice" and "bob":
// - every message from the other page shows the other's verified subject (`info.from`), and each
//   page says "Signed in as" its own; at Disconnect/Connect Alice signs in again under a new name
//   through the name field, and after the server restart (a new demo secret) her message shows
//   that subject on Bob's page, not the other name then typed in her field without Connect;
// - both open a fresh room by deep link (?room=R1) and add a second one (R2) with the room form;
// - Alice chats in R1 while Bob is in R2: Bob's R1 shows an unread count, which clears when he
//   selects it; the same the other way round for Bob's messages in R2;
// - the feed (the server's --demo-feed clock) shows ticks at consecutive offsets on both pages;
// - Alice clicks "Drop connection" (the server breaks her transport off, POST /realtime/kick);
//   while she reconnects, Bob sends 3 messages to R1 and 2 to R2; Alice is open again with the
//   same session, every room and the feed show "resumed", and each room holds each message
//   exactly once and in order (their channel offsets are 1..N, none missing or doubled); her
//   unread count for R2 is the 2 sent there while she was away; the feed's offsets run on
//   without a gap across the drop.
// - Alice clicks "Reset session" (kick with reset=1: the server forgets her session): her fresh
//   session recovers every room and the feed from the channels' history ("recovered"), with
//   what Bob sent meanwhile, still exactly once.
// - Alice clicks Disconnect, Bob writes, Alice clicks Connect: the new client subscribes from the
//   positions the page saw, and every room shows "recovered" with Bob's message, once.
// - With SERVER_BIN (as .ci/demo-test.sh runs it): the server is restarted on the same address
//   (in memory, so sessions and histories are gone): both pages get a fresh session, every room
//   and the feed show "gap" (history lost), and the chat goes on in the same rooms.
// Screenshots of both pages (and Alice's at a phone's width) go to SHOT_DIR.
//
// Usage: ADMIN_TOKEN=TOKEN node run-demo.mjs BASE_URL SHOT_DIR
//   BASE_URL     a reference server started with --static-dir www/public --allow-kick, that admin token
//                (kick needs it), --demo-feed clock and --demo-auth, e.g. http://127.0.0.1:8080
//   ADMIN_TOKEN  handed to the pages as `make demo` does, in the URL's fragment (#admin=TOKEN);
//                the run checks that the page takes it out of its address and its share link.
//   SERVER_BIN, SERVER_PID, SERVER_LOG  optional: the server's binary, the pid of the running one
//                (stopped with SIGTERM for the restart; the new one runs with the same flags on the
//                same address and is stopped when this script exits) and the log its stderr goes to.
// Every wait is bounded and fails with a message that says what did not happen.

import { spawn } from 'node:child_process';
import { openSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const [baseUrl, shotDir] = process.argv.slice(2);
const adminToken = process.env.ADMIN_TOKEN || '';
if (!baseUrl || !shotDir || !adminToken) {
  console.error('usage: ADMIN_TOKEN=TOKEN node run-demo.mjs BASE_URL SHOT_DIR');
  process.exit(2);
}

const WAIT_MS = 10_000; // any single step
const TOTAL_MS = 120_000; // the whole run
const VIEWPORT = { width: 1280, height: 1000 };
const NARROW = { width: 390, height: 844 }; // a phone
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

// What a page shows: per room its chat bubbles by kind (with their channel offsets), unread count
// and outcome badge; the feed; the live panel; the event log (oldest first).
function snapshot() {
  const texts = (root, selector) => Array.from(root.querySelectorAll(selector), (node) => node.textContent);
  const rooms = {};
  for (const button of document.querySelectorAll('#room-list .room-button')) {
    const name = button.dataset.room;
    const list = document.querySelector(`#rooms-messages .messages[data-room="${CSS.escape(name)}"]`);
    const unread = button.querySelector('.unread');
    rooms[name] = {
      selected: button.getAttribute('aria-current') === 'true',
      visible: Boolean(list && !list.hidden),
      outcome: button.querySelector('.outcome').dataset.outcome,
      unread: unread.hidden ? 0 : Number(unread.dataset.count),
      own: list ? texts(list, '.message.own .message-text') : [],
      others: list ? texts(list, '.message:not(.own):not(.system) .message-text') : [],
      authors: list ? texts(list, '.message:not(.own):not(.system) .message-author') : [],
      system: list ? texts(list, '.message.system .message-text') : [],
      offsets: list ? Array.from(list.querySelectorAll('.message:not(.system)'), (node) => node.dataset.offset ?? null) : [],
      unsettled: list ? list.querySelectorAll('.message.pending, .message.failed').length : 0,
    };
  }
  return {
    state: document.getElementById('state-pill').dataset.state,
    transport: document.getElementById('stat-transport').textContent,
    session: document.getElementById('stat-session').textContent,
    resumed: document.getElementById('stat-resumes').textContent,
    reconnects: document.getElementById('stat-reconnects').textContent,
    outbox: document.getElementById('stat-outbox').textContent,
    title: document.getElementById('room-title').textContent,
    signedIn: document.getElementById('signed-in').textContent,
    subject: document.getElementById('signed-in').dataset.subject,
    rooms,
    feed: {
      outcome: document.getElementById('feed-outcome').dataset.outcome,
      now: document.getElementById('feed-now').textContent,
      // Newest first; a note (a gap, a recovery) has no offset.
      items: Array.from(document.querySelectorAll('#feed-list li'), (item) => (item.dataset.offset === undefined ? item.textContent : Number(item.dataset.offset))),
    },
    log: Array.from(document.querySelectorAll('#event-log li'), (item) => [
      item.dataset.event,
      item.querySelector('.log-detail').textContent,
    ]).reverse(),
    status: document.getElementById('status').textContent,
  };
}

// Opens the demo on `room` signed in as `subject`: the name the page remembers (localStorage, as
// after an earlier visit) fills its name field, and the page signs in with it when it connects.
async function openPage(browser, room, name, subject) {
  const context = await browser.newContext({ viewport: VIEWPORT, colorScheme: 'light' });
  await context.addInitScript((subject) => localStorage.setItem('realtime-demo-name', subject), subject);
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (error) => problems.push(`uncaught: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console: ${message.text()}`);
  });
  const fragment = `#admin=${encodeURIComponent(adminToken)}`;
  const response = await page.goto(`${baseUrl}/?room=${encodeURIComponent(room)}${fragment}`, { timeout: WAIT_MS });
  if (!response || !response.ok()) fail(`${name}: the demo page answered ${response ? response.status() : 'nothing'}`);
  await waitInPage(
    page,
    `${name}: signed in as ${subject} and open`,
    (subject) =>
      document.getElementById('signed-in').dataset.subject === subject &&
      document.getElementById('signed-in').textContent === `Signed in as ${subject}` &&
      document.getElementById('state-pill').dataset.state === 'open' &&
      document.getElementById('name-input').value === subject,
    subject,
    snapshot,
  );
  return { page, name, subject, problems };
}

// The server's demo sign-in, as the page uses it: a token for a valid name, 400 for another.
async function checkDemoSignIn() {
  const post = (name) =>
    fetch(`${baseUrl}/realtime/demo-token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name }) });
  const good = await post('carol');
  const body = good.ok ? await good.json() : null;
  if (!body || body.subject !== 'carol' || typeof body.token !== 'string' || body.token.split('.').length !== 3) {
    fail(`POST /realtime/demo-token answered ${good.status} ${JSON.stringify(body)}: is the server running with --demo-auth?`);
  }
  const bad = await post(' not<valid> ');
  if (bad.status !== 400) fail(`POST /realtime/demo-token with an invalid name answered ${bad.status}, expected 400`);
}

// Sends through the page's own form, to the selected room.
async function send(page, text) {
  await page.fill('#message-input', text);
  await page.press('#message-input', 'Enter');
}

const roomButton = (room) => `#room-list .room-button[data-room="${room}"]`;

async function selectRoom({ page, name }, room) {
  await page.click(roomButton(room));
  await waitInPage(
    page,
    `${name}: #${room} selected (its messages shown, its unread count cleared)`,
    (room) => {
      const button = document.querySelector(`#room-list .room-button[data-room="${room}"]`);
      const list = document.querySelector(`#rooms-messages .messages[data-room="${room}"]`);
      return button.getAttribute('aria-current') === 'true' && !list.hidden && button.querySelector('.unread').hidden &&
        document.getElementById('room-title').textContent === room;
    },
    room,
    snapshot,
  );
}

// Waits until `room` of the page shows `count` unread messages.
async function waitUnread({ page, name }, room, count) {
  await waitInPage(
    page,
    `${name}: #${room} showing ${count} unread`,
    ([room, count]) => {
      const badge = document.querySelector(`#room-list .room-button[data-room="${room}"] .unread`);
      return !badge.hidden && badge.dataset.count === String(count) && badge.textContent === String(count);
    },
    [room, count],
    snapshot,
  );
}

// Waits until every room in `rooms` shows the outcome badge `outcome`.
async function waitOutcome({ page, name }, rooms, outcome) {
  await waitInPage(
    page,
    `${name}: ${rooms.map((room) => `#${room}`).join(', ')} showing "${outcome}"`,
    ([rooms, outcome]) =>
      rooms.every((room) => document.querySelector(`#room-list .room-button[data-room="${room}"] .outcome`).dataset.outcome === outcome),
    [rooms, outcome],
    snapshot,
  );
}

// Waits until the page's feed lists at least `count` ticks, the newest at `atLeast` or later.
async function waitFeed({ page, name }, count, atLeast = 0) {
  await waitInPage(
    page,
    `${name}: the feed showing ${count} ticks${atLeast ? ` up to offset ${atLeast} or later` : ''}`,
    ([count, atLeast]) => {
      const ticks = Array.from(document.querySelectorAll('#feed-list li.feed-tick'), (item) => Number(item.dataset.offset));
      return ticks.length >= count && ticks[0] >= atLeast;
    },
    [count, atLeast],
    snapshot,
  );
}

// The feed's list is newest first: offsets one apart, nothing else (a gap's note) between them.
function feedProblem(name, items) {
  const offsets = items.filter((item) => typeof item === 'number');
  if (offsets.length !== items.length) return `${name}'s feed has a note among its ticks: ${JSON.stringify(items)}`;
  if (!offsets.every((offset, index) => index === 0 || offset === offsets[index - 1] - 1)) {
    return `${name}'s feed offsets are not consecutive: ${JSON.stringify(offsets)}`;
  }
  return null;
}

const sameList = (actual, expected) =>
  actual.length === expected.length && actual.every((value, index) => value === expected[index]);

// Every message of a room (own and others) names its channel offset, and they are 1..total:
// none missing, none twice.
function offsetProblem(who, room, view, total) {
  const offsets = view.rooms[room].offsets;
  if (offsets.some((offset) => offset === null)) return `${who}'s #${room} has a message without an offset: ${JSON.stringify(offsets)}`;
  const sorted = offsets.map(Number).sort((x, y) => x - y);
  const expected = Array.from({ length: total }, (_, index) => index + 1);
  return sameList(sorted, expected) ? null : `${who}'s #${room} offsets are ${JSON.stringify(sorted)}, expected ${JSON.stringify(expected)}`;
}

async function checkPng(file, fullPage = false, viewport = VIEWPORT) {
  const bytes = await readFile(file).catch(() => fail(`no screenshot at ${file}`));
  const signature = '89504e470d0a1a0a';
  if (bytes.subarray(0, 8).toString('hex') !== signature) fail(`${file} is not a PNG`);
  const width = bytes.readUInt32BE(16);
  const height = bytes.readUInt32BE(20);
  if (width !== viewport.width || (fullPage ? height < viewport.height : height !== viewport.height)) {
    fail(`${file} is ${width}x${height}, expected the viewport`);
  }
  // A blank or single-colour page compresses to a few KB; the demo with text is far larger.
  if (bytes.length < (viewport === VIEWPORT ? 30_000 : 15_000)) fail(`${file} is only ${bytes.length} bytes: the page looks empty`);
  return `${width}x${height}, ${bytes.length} bytes`;
}

// The server restarted by this script: stopped at the end of the run (its pipe would keep this
// process alive), and on a hard exit (the overall timeout) too.
let restarted = null;
process.on('exit', () => {
  if (restarted && restarted.exitCode === null) restarted.kill('SIGTERM');
});

async function stopRestarted() {
  const child = restarted;
  if (!child || child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  // It sends every transport its going-away close and exits; a stuck one is killed.
  const timer = setTimeout(() => child.kill('SIGKILL'), WAIT_MS);
  await exited;
  clearTimeout(timer);
}

// Stops the server (SIGTERM: it tells every transport to come back in a second) and starts a new
// one with the same flags on the same address, once the old one has let go of the port.
async function restartServer() {
  const { SERVER_BIN: bin, SERVER_PID: pid, SERVER_LOG: log } = process.env;
  const address = new URL(baseUrl).host;
  process.kill(Number(pid), 'SIGTERM');
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const refused = await fetch(`${baseUrl}/`).then(() => false, () => true);
    if (refused) break;
    if (Date.now() > deadline) fail(`the server (pid ${pid}) still answers ${WAIT_MS / 1000} s after SIGTERM`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  // The old process may hold the port a moment longer: a failed bind is retried until the deadline.
  for (;;) {
    const args = ['--listen', address, '--static-dir', path.resolve('www/public'), '--allow-kick', '--demo-feed', 'clock', '--demo-auth'];
    const stderr = log ? openSync(log, 'a') : 'inherit';
    const child = spawn(bin, args, { env: { ...process.env, REALTIME_ADMIN_TOKEN: adminToken }, stdio: ['ignore', 'pipe', stderr] });
    const line = await new Promise((resolve) => {
      const lines = createInterface({ input: child.stdout });
      lines.once('line', resolve);
      child.once('exit', () => resolve(null));
    });
    if (line === `listening on ${baseUrl}`) {
      restarted = child;
      return;
    }
    if (Date.now() > deadline) fail(`the restarted server did not listen on ${address} (it said ${JSON.stringify(line)})`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
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
    await stopRestarted();
  }
}

async function run(browser) {
  const tag = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  const [r1, r2] = [`demo-${tag}-a`, `demo-${tag}-b`];
  await checkDemoSignIn();
  const [a, b] = await Promise.all([openPage(browser, r1, 'Alice', 'alice'), openPage(browser, r1, 'Bob', 'bob')]);
  timed(`two pages open on room ${r1} (deep link), signed in as alice and bob`);

  for (const { page, name } of [a, b]) {
    await waitInPage(page, `${name}: the client connecting`, () => document.getElementById('state-pill').dataset.state === 'open', null, snapshot);
  }
  for (const page of [a, b]) await waitOutcome(page, ['lobby', 'random', 'help', r1], 'live');
  for (const { page, name } of [a, b]) {
    const shareLink = await page.evaluate(() => document.getElementById('share-link').href);
    if (page.url().includes(adminToken) || shareLink.includes(adminToken)) {
      fail(`${name}: the admin token is still in the page's address or share link (${page.url()}, ${shareLink})`);
    }
    if (new URL(page.url()).searchParams.get('room') !== r1 || new URL(shareLink).searchParams.get('room') !== r1) {
      fail(`${name}: the deep-linked room is not in the address and share link (${page.url()}, ${shareLink})`);
    }
    const view = await page.evaluate(snapshot);
    if (!view.rooms[r1] || !view.rooms[r1].selected || !view.rooms[r1].visible) fail(`${name}: the deep link did not select #${r1}: ${JSON.stringify(view.rooms)}`);
  }
  const [sessionA, sessionB] = await Promise.all([a.page.evaluate(snapshot), b.page.evaluate(snapshot)]);
  if (sessionA.session === sessionB.session) fail('both pages show the same session id');
  timed(`both open with 4 rooms and the feed: Alice over ${sessionA.transport}, Bob over ${sessionB.transport}`);

  // The second room, added by name through the room form (which selects it), on both pages.
  for (const page of [a, b]) {
    await page.page.fill('#add-room-input', r2);
    await page.page.press('#add-room-input', 'Enter');
    await waitOutcome(page, [r2], 'live');
  }
  await selectRoom(a, r1);
  const addressA = new URL(a.page.url()).searchParams.get('room');
  const addressB = new URL(b.page.url()).searchParams.get('room');
  if (addressA !== r1 || addressB !== r2) fail(`?room= does not follow the selection: Alice ${addressA}, Bob ${addressB}`);
  timed(`#${r2} added on both pages; Alice in #${r1}, Bob in #${r2}`);

  // Alice writes in R1 while Bob is in R2: an unread count on Bob's R1, cleared when he looks.
  const fromAlice = ['Hi Bob, are you there?', 'I am about to lose my connection.', 'Watch this.'];
  for (const text of fromAlice) await send(a.page, text);
  await waitUnread(b, r1, fromAlice.length);
  const bobBefore = await b.page.evaluate(snapshot);
  if (bobBefore.rooms[r2].unread !== 0 || bobBefore.rooms[r1].others.length !== fromAlice.length) {
    fail(`Bob, before looking: ${JSON.stringify(bobBefore.rooms)}`);
  }
  timed(`Bob's #${r1} shows ${fromAlice.length} unread`);

  const fromBob = ['Over here in the other room.', 'Come and see.'];
  for (const text of fromBob) await send(b.page, text);
  await waitUnread(a, r2, fromBob.length);
  await selectRoom(b, r1);
  await selectRoom(a, r2);
  await selectRoom(a, r1);
  const [readA, readB] = [await a.page.evaluate(snapshot), await b.page.evaluate(snapshot)];
  for (const [ok, message] of [
    [sameList(readB.rooms[r1].others, fromAlice), `Bob's #${r1} shows ${JSON.stringify(readB.rooms[r1].others)}`],
    [sameList(readA.rooms[r2].others, fromBob), `Alice's #${r2} shows ${JSON.stringify(readA.rooms[r2].others)}`],
    [readA.rooms[r2].unread === 0 && readB.rooms[r1].unread === 0, 'an unread count did not clear'],
  ]) {
    if (!ok) fail(message);
  }
  timed(`unread counts shown and cleared on selecting: Alice's #${r2} (2), Bob's #${r1} (3)`);

  // The feed: the server's ticks, one a second, at consecutive offsets on both pages.
  for (const page of [a, b]) await waitFeed(page, 3);
  for (const [name, view] of [['Alice', await a.page.evaluate(snapshot)], ['Bob', await b.page.evaluate(snapshot)]]) {
    const problem = feedProblem(name, view.feed.items);
    if (problem) fail(problem);
    if (!/^\d\d:\d\d:\d\d/.test(view.feed.now)) fail(`${name}'s feed shows the time ${JSON.stringify(view.feed.now)}`);
  }
  const feedBeforeDrop = (await a.page.evaluate(snapshot)).feed.items[0];
  timed(`the feed ticks on both pages (Alice's newest at offset ${feedBeforeDrop})`);

  await a.page.click('#drop-button');
  await waitInPage(
    a.page,
    "Alice's client reporting the lost connection ('reconnecting')",
    () => document.querySelector('#event-log li[data-event="reconnecting"]') !== null,
    null,
    snapshot,
  );
  timed('Alice dropped her connection and is reconnecting');

  // Bob's messages go out at once through the page's own form (3 in R1, then he switches to R2
  // and sends 2), so they reach the server while Alice is still away (her first retry waits a
  // random 0-500 ms) and come to her by the resume.
  const awayR1 = [1, 2, 3].map((n) => `Message ${n} of 3 in the first room while Alice is away`);
  const awayR2 = [1, 2].map((n) => `Message ${n} of 2 in the second room while Alice is away`);
  await b.page.evaluate(([r2, awayR1, awayR2]) => {
    const input = document.getElementById('message-input');
    const form = document.getElementById('composer');
    const submit = (text) => {
      input.value = text;
      form.requestSubmit();
    };
    awayR1.forEach(submit);
    document.querySelector(`#room-list .room-button[data-room="${r2}"]`).click();
    awayR2.forEach(submit);
  }, [r2, awayR1, awayR2]);
  const aliceWhileBobSent = await a.page.evaluate(() => document.getElementById('state-pill').dataset.state);
  timed(`Bob sent 3 messages to #${r1} and 2 to #${r2} (Alice's state then: ${aliceWhileBobSent})`);

  await waitInPage(
    a.page,
    "Alice's client opening again with a resumed session",
    () =>
      document.getElementById('state-pill').dataset.state === 'open' &&
      Number(document.getElementById('stat-resumes').textContent) >= 1,
    null,
    snapshot,
  );
  await waitOutcome(a, ['lobby', 'random', 'help', r1, r2], 'resumed');
  timed('Alice is open again: every room shows "resumed"');

  // Everything delivered and acknowledged on both sides: the lists are final.
  const expected = {
    Alice: { [r1]: { own: fromAlice, others: awayR1 }, [r2]: { own: [], others: [...fromBob, ...awayR2] } },
    Bob: { [r1]: { own: awayR1, others: fromAlice }, [r2]: { own: [...fromBob, ...awayR2], others: [] } },
  };
  for (const { page, name } of [a, b]) {
    await waitInPage(
      page,
      `${name}: every message shown in both rooms and every own message delivered`,
      (rooms) => {
        const count = (room, selector) => document.querySelectorAll(`#rooms-messages .messages[data-room="${room}"] ${selector}`).length;
        return (
          Object.entries(rooms).every(
            ([room, { own, others }]) =>
              count(room, '.message.own') >= own.length && count(room, '.message:not(.own):not(.system)') >= others.length,
          ) &&
          document.querySelectorAll('#rooms-messages .message.pending').length === 0 &&
          document.getElementById('stat-outbox').textContent === '0'
        );
      },
      expected[name],
      snapshot,
    );
  }
  timed('all messages delivered and acknowledged');
  // The feed runs on across the drop: a few ticks past the one before it, none missing.
  await waitFeed(a, 4, feedBeforeDrop + 3);
  timed('the feed ran on past the drop');

  const [shotA, shotFull, shotB, shotNarrow] = ['chat.png', 'chat-full-page.png', 'chat-bob.png', 'chat-narrow.png'].map((name) =>
    path.join(shotDir, name),
  );
  await a.page.screenshot({ path: shotA });
  await a.page.screenshot({ path: shotFull, fullPage: true });
  await b.page.screenshot({ path: shotB });

  // Exactly once and in order, per room, with the channel's own offsets, and the feed's run.
  const [viewA, viewB] = [await a.page.evaluate(snapshot), await b.page.evaluate(snapshot)];
  const checks = [];
  for (const [name, view] of [['Alice', viewA], ['Bob', viewB]]) {
    const subject = name === 'Alice' ? a.subject : b.subject;
    checks.push([view.subject === subject && view.signedIn === `Signed in as ${subject}`, `${name}'s page says ${JSON.stringify(view.signedIn)}, expected signed in as ${subject}`]);
    for (const [room, { own, others }] of Object.entries(expected[name])) {
      const shown = view.rooms[room];
      checks.push([sameList(shown.others, others), `${name}'s #${room} shows others' messages ${JSON.stringify(shown.others)}, expected ${JSON.stringify(others)}`]);
      checks.push([sameList(shown.own, own), `${name}'s #${room} shows own messages ${JSON.stringify(shown.own)}, expected ${JSON.stringify(own)}`]);
      // The sender shown is the other page's verified subject (info.from), on every message.
      const other = name === 'Alice' ? b.subject : a.subject;
      checks.push([
        shown.authors.length === others.length && shown.authors.every((author) => author === other),
        `${name}'s #${room} shows authors ${JSON.stringify(shown.authors)}, expected ${others.length} times ${JSON.stringify(other)}`,
      ]);
      checks.push([shown.unsettled === 0, `${name}'s #${room} has a message still pending or failed`]);
      const problem = offsetProblem(name, room, view, own.length + others.length);
      checks.push([problem === null, problem]);
    }
    const problem = feedProblem(name, view.feed.items);
    checks.push([problem === null, problem]);
    for (const channel of [`#${r1}`, `#${r2}`, `feed #clock`]) {
      checks.push([view.log.some(([event, detail]) => event === 'subscribed' && detail.startsWith(`${channel} at offset`)), `${name}'s log has no 'subscribed' for ${channel}`]);
    }
    checks.push([!view.log.some(([event]) => event === 'gap' || event === 'reset'), `${name}'s log has a gap or a reset: ${JSON.stringify(view.log.filter(([event]) => event === 'gap' || event === 'reset'))}`]);
  }
  checks.push(
    // Alice is in R1: what Bob sent to R2 while she was away counts as unread, once.
    [viewA.rooms[r1].selected && viewA.rooms[r2].unread === awayR2.length, `Alice's #${r2} unread is ${viewA.rooms[r2].unread}, expected ${awayR2.length}`],
    [viewA.rooms[r1].unread === 0, `Alice's selected #${r1} shows ${viewA.rooms[r1].unread} unread`],
    [viewA.feed.outcome === 'resumed', `Alice's feed shows "${viewA.feed.outcome}", expected "resumed"`],
    [viewA.rooms[r1].system.some((text) => text.includes('session resumed')), `Alice's #${r1} does not say the session resumed: ${JSON.stringify(viewA.rooms[r1].system)}`],
    [viewA.session === sessionA.session, `Alice's session changed from ${sessionA.session} to ${viewA.session}: not resumed`],
    [viewA.resumed === '1' && viewA.reconnects === '1', `Alice: resumed ${viewA.resumed}, reconnects ${viewA.reconnects}, expected 1 and 1`],
    [viewA.log.some(([event]) => event === 'drop'), "Alice's event log has no 'drop'"],
    [viewA.log.some(([event, detail]) => event === 'open' && detail.includes('session resumed')), "Alice's log has no open with resumed: true"],
    [viewB.reconnects === '0', `Bob reconnected ${viewB.reconnects} times; only Alice was dropped`],
    [Object.values(viewB.rooms).every((room) => room.outcome === 'live') && viewB.feed.outcome === 'live', `Bob's channels: ${JSON.stringify(Object.fromEntries(Object.entries(viewB.rooms).map(([room, { outcome }]) => [room, outcome])))}`],
  );
  for (const { name, problems } of [a, b]) {
    const errors = (name === 'Alice' ? viewA : viewB).log.filter(([event]) => event === 'error');
    checks.push([errors.length === 0, `${name}'s event log has errors: ${JSON.stringify(errors)}`]);
    checks.push([problems.length === 0, `${name}'s page reported: ${problems.join(' | ')}`]);
  }
  const failed = checks.filter(([ok]) => !ok).map(([, message]) => message);
  if (failed.length > 0) fail(failed.join('\n  '));
  const reconnecting = viewA.log.find(([event]) => event === 'reconnecting');
  say(`Alice: ${reconnecting ? `reconnecting ${reconnecting[1]}` : ''}; back over ${viewA.transport}, same session ${viewA.session}`);
  timed('checked: every message exactly once and in order in both rooms on both pages, the feed without a gap');

  // Reset session: the server forgets Alice's session; the fresh one recovers every channel
  // from its history, and what Bob sends meanwhile comes exactly once.
  const resetsBefore = viewA.log.filter(([event]) => event === 'reset').length;
  await a.page.click('#reset-button');
  await waitInPage(
    a.page,
    "Alice's client telling of the fresh session ('reset')",
    (before) => document.querySelectorAll('#event-log li[data-event="reset"]').length > before,
    resetsBefore,
    snapshot,
  );
  const afterReset = 'Sent while Alice got a fresh session';
  await send(b.page, afterReset);
  await waitOutcome(a, ['lobby', 'random', 'help', r1, r2], 'recovered');
  await waitInPage(a.page, "Alice's feed showing \"recovered\"", () => document.getElementById('feed-outcome').dataset.outcome === 'recovered', null, snapshot);
  expected.Alice[r2].others.push(afterReset);
  expected.Bob[r2].own.push(afterReset);
  await waitInPage(
    a.page,
    `Alice's #${r2} showing Bob's message sent while her session was reset`,
    ([room, count]) => document.querySelectorAll(`#rooms-messages .messages[data-room="${room}"] .message:not(.own):not(.system)`).length >= count,
    [r2, expected.Alice[r2].others.length],
    snapshot,
  );
  await waitInPage(b.page, "Bob's message delivered", () => document.querySelectorAll('#rooms-messages .message.pending').length === 0, null, snapshot);
  {
    const view = await a.page.evaluate(snapshot);
    const shown = view.rooms[r2];
    const problem = offsetProblem('Alice', r2, view, expected.Alice[r2].others.length);
    const recoveredChecks = [
      [sameList(shown.others, expected.Alice[r2].others), `after the reset Alice's #${r2} shows ${JSON.stringify(shown.others)}`],
      [problem === null, problem],
      [shown.unread === awayR2.length + 1, `Alice's #${r2} unread is ${shown.unread}, expected ${awayR2.length + 1}`],
      [view.session !== viewA.session, 'Alice kept her session through a reset'],
      [!view.log.some(([event]) => event === 'gap'), `a gap after the reset: ${JSON.stringify(view.log.filter(([event]) => event === 'gap'))}`],
      [
        view.log.some(([event, detail]) => event === 'subscribed' && detail.startsWith(`#${r1} at offset ${fromAlice.length + awayR1.length} · recovered`)),
        `Alice's log has no recovered subscribe of #${r1} at offset ${fromAlice.length + awayR1.length}`,
      ],
    ];
    const failed = recoveredChecks.filter(([ok]) => !ok).map(([, message]) => message);
    if (failed.length > 0) fail(failed.join('\n  '));
  }
  timed('Reset session: every room and the feed recovered from history, nothing lost or doubled');

  // Disconnect, then Connect: a new client subscribes every channel from the last position the
  // page saw, so what Bob sent in between is recovered, once.
  await a.page.click('#disconnect-button');
  await waitInPage(a.page, "Alice's client closed by Disconnect", () => document.getElementById('state-pill').dataset.state === 'closed', null, snapshot);
  await waitOutcome(a, ['lobby', 'random', 'help', r1, r2], 'ended');
  const whileClosed = 'Sent while Alice was disconnected';
  await send(b.page, whileClosed);
  await waitInPage(b.page, "Bob's message delivered", () => document.querySelectorAll('#rooms-messages .message.pending').length === 0, null, snapshot);
  // Alice signs in again under another name through the name field: Connect fetches a token for
  // it, and what she sends from now on shows that verified subject on Bob's page.
  a.subject = 'Alice Liddell';
  await a.page.fill('#name-input', a.subject);
  await a.page.click('#connect-button');
  await waitInPage(
    a.page,
    `Alice signed in as ${a.subject} after Connect`,
    (subject) => document.getElementById('signed-in').dataset.subject === subject && document.getElementById('state-pill').dataset.state === 'open',
    a.subject,
    snapshot,
  );
  await waitOutcome(a, ['lobby', 'random', 'help', r1, r2], 'recovered');
  expected.Alice[r2].others.push(whileClosed);
  expected.Bob[r2].own.push(whileClosed);
  await waitInPage(
    a.page,
    `Alice's #${r2} showing Bob's message sent while she was disconnected`,
    ([room, count]) => document.querySelectorAll(`#rooms-messages .messages[data-room="${room}"] .message:not(.own):not(.system)`).length >= count,
    [r2, expected.Alice[r2].others.length],
    snapshot,
  );
  {
    const view = await a.page.evaluate(snapshot);
    const shown = view.rooms[r2];
    const problem = offsetProblem('Alice', r2, view, expected.Alice[r2].others.length);
    const reconnectChecks = [
      [sameList(shown.others, expected.Alice[r2].others), `after Connect Alice's #${r2} shows ${JSON.stringify(shown.others)}`],
      [problem === null, problem],
      [shown.unread === awayR2.length + 2, `Alice's #${r2} unread is ${shown.unread}, expected ${awayR2.length + 2}`],
      [view.log.some(([event, detail]) => event === 'unsubscribed' && detail.startsWith(`#${r2}: closed`)), `Alice's log has no unsubscribed of #${r2} at Disconnect`],
    ];
    const failed = reconnectChecks.filter(([ok]) => !ok).map(([, message]) => message);
    if (failed.length > 0) fail(failed.join('\n  '));
  }
  timed('Disconnect and Connect: a new client recovered every room from where the page was');

  if (process.env.SERVER_BIN && process.env.SERVER_PID) {
    const resets = await Promise.all([a, b].map(({ page }) => page.evaluate(() => document.querySelectorAll('#event-log li[data-event="reset"]').length)));
    await restartServer();
    timed('the server restarted on the same address (sessions and histories gone)');
    for (const [index, page] of [a, b].entries()) {
      await waitInPage(
        page.page,
        `${page.name}: a fresh session after the restart ('reset')`,
        (before) => document.querySelectorAll('#event-log li[data-event="reset"]').length > before && document.getElementById('state-pill').dataset.state === 'open',
        resets[index],
        snapshot,
      );
      await waitOutcome(page, ['lobby', 'random', 'help', r1, r2], 'gap');
      await waitInPage(page.page, `${page.name}'s feed showing "gap"`, () => document.getElementById('feed-outcome').dataset.outcome === 'gap', null, snapshot);
    }
    // The chat goes on in the same rooms, over the new server: Bob is in R2, so R1 counts it.
    // Alice types another name without Connect: she is still signed in as before, and that
    // verified subject, not what the field says, is the sender Bob sees.
    await a.page.fill('#name-input', 'mallory');
    const afterRestart = 'Still here after the restart?';
    await send(a.page, afterRestart);
    await waitUnread(b, r1, 1);
    const [restartA, restartB] = [await a.page.evaluate(snapshot), await b.page.evaluate(snapshot)];
    const restartChecks = [
      [restartB.rooms[r1].others.at(-1) === afterRestart, `Bob's #${r1} ends with ${JSON.stringify(restartB.rooms[r1].others.at(-1))}`],
      [restartB.rooms[r1].others.filter((text) => text === afterRestart).length === 1, `Bob's #${r1} shows the message after the restart more than once`],
      // The new server has a new demo secret: the page signed in again, as the same name.
      [restartB.rooms[r1].authors.at(-1) === a.subject, `Bob's #${r1} shows the message after the restart from ${JSON.stringify(restartB.rooms[r1].authors.at(-1))}, expected ${a.subject}`],
      [restartA.subject === a.subject && restartB.subject === b.subject, `after the restart the pages are signed in as ${restartA.subject} and ${restartB.subject}`],
    ];
    for (const [name, view] of [['Alice', restartA], ['Bob', restartB]]) {
      for (const room of [r1, r2]) {
        restartChecks.push([view.rooms[room].system.some((text) => text.startsWith(`Gap in #${room}`)), `${name}'s #${room} does not tell of the gap: ${JSON.stringify(view.rooms[room].system)}`]);
      }
      restartChecks.push([view.log.some(([event, detail]) => event === 'gap' && detail.startsWith(`#${r1}: history lost`)), `${name}'s log has no gap of #${r1}`]);
      restartChecks.push([!view.log.some(([event]) => event === 'error'), `${name}'s log has errors: ${JSON.stringify(view.log.filter(([event]) => event === 'error'))}`]);
    }
    for (const { name, problems } of [a, b]) restartChecks.push([problems.length === 0, `${name}'s page reported: ${problems.join(' | ')}`]);
    const failed = restartChecks.filter(([ok]) => !ok).map(([, message]) => message);
    if (failed.length > 0) fail(failed.join('\n  '));
    const shotRestart = path.join(shotDir, 'chat-restart-bob.png');
    await b.page.screenshot({ path: shotRestart });
    timed(`server restart: every room and the feed show "gap" on both pages, the chat goes on (${shotRestart}: ${await checkPng(shotRestart)})`);
  } else {
    say('no SERVER_BIN and SERVER_PID: the server restart is not tried');
  }

  // The same page at a phone's width: the rooms above the chat, everything reachable.
  await a.page.setViewportSize(NARROW);
  await waitInPage(
    a.page,
    "Alice's page laid out for a narrow screen (no sideways scrolling of the page)",
    () => document.documentElement.scrollWidth <= window.innerWidth,
    null,
    () => ({ scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth }),
  );
  await a.page.screenshot({ path: shotNarrow });
  const pngs = [await checkPng(shotA), await checkPng(shotFull, true), await checkPng(shotB), await checkPng(shotNarrow, false, NARROW)];
  timed(`screenshots: ${shotA} (${pngs[0]}), ${shotFull} (${pngs[1]}), ${shotB} (${pngs[2]}), ${shotNarrow} (${pngs[3]})`);
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
