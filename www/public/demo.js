// Demo page for realtime-client: a multi-room chat and a live feed over ONE connection, plus a
// live view of that connection.
//
// Every room is a channel (`client.subscribe(room)`) of the same client; the selected room shows
// its messages and its composer publishes to it (`subscription.emit('chat', ...)`), the others
// count unread messages. The feed is one more channel, published by the server itself
// (`--demo-feed clock`, as `make demo` starts it). Each room and the feed show how they came
// through the last disconnect: resumed with the session, recovered from the channel's history,
// a gap (history lost, e.g. after a server restart), or subscribed again.
//
// Sign-in: the name field. `make demo` starts the server with --demo-auth (loopback only, never in
// production: anyone may sign in as any name), and the client's `token` option is a function that
// POSTs the name to /realtime/demo-token for a short-lived token, before every connect and for
// every in-band refresh. Each message shows its sender from `info.from`, the subject the server
// verified, never a name carried in the message itself.
//
// It uses only the public JS API of the package built into ./pkg by `make demo`.
// Every error ends up in the status line or the event log; nothing fails silently.

import init, { RealtimeClient } from './pkg/realtime_client.js';

const TRANSPORTS = ['websocket', 'sse', 'long-polling'];
const CONNECT_TIMEOUT_MS = 5000;
const MAX_LOG_ENTRIES = 200;
const MAX_MESSAGES = 500;
const MAX_FEED_ITEMS = 10;
// The rooms every page starts with; `?room=NAME` selects one (and adds it if it is new).
const DEFAULT_ROOMS = ['lobby', 'random', 'help'];
// Rooms a user may add on top (each is a channel of the session; the reference server allows 128).
const MAX_ADDED_ROOMS = 20;
// A room name: what `room=` accepted before channels (a channel name may also hold `/`).
const ROOM_NAME = /^[A-Za-z0-9_.:-]{1,64}$/;
// The feed's channel: what `make demo` passes to `--demo-feed`; `?feed=NAME` picks another.
const FEED_CHANNEL = (() => {
  const name = new URL(location.href).searchParams.get('feed');
  return name && /^[A-Za-z0-9_.:/-]{1,128}$/.test(name) ? name : 'clock';
})();

const $ = (id) => document.getElementById(id);
const ui = {
  statePill: $('state-pill'),
  statePillText: $('state-pill-text'),
  roomTitle: $('room-title'),
  roomOutcome: $('room-outcome'),
  roomList: $('room-list'),
  roomsMessages: $('rooms-messages'),
  addRoomForm: $('add-room-form'),
  addRoomInput: $('add-room-input'),
  feedChannel: $('feed-channel'),
  feedOutcome: $('feed-outcome'),
  feedNow: $('feed-now'),
  feedDetail: $('feed-detail'),
  feedList: $('feed-list'),
  shareLink: $('share-link'),
  composer: $('composer'),
  messageInput: $('message-input'),
  sendButton: $('send-button'),
  connectForm: $('connect-form'),
  nameInput: $('name-input'),
  signedIn: $('signed-in'),
  transportSelect: $('transport-select'),
  connectButton: $('connect-button'),
  disconnectButton: $('disconnect-button'),
  dropButton: $('drop-button'),
  resetButton: $('reset-button'),
  status: $('status'),
  eventLog: $('event-log'),
  clearLog: $('clear-log'),
  stats: {
    transport: $('stat-transport'),
    state: $('stat-state'),
    session: $('stat-session'),
    rtt: $('stat-rtt'),
    reconnects: $('stat-reconnects'),
    messagesIn: $('stat-in'),
    messagesOut: $('stat-out'),
    bytesIn: $('stat-bytes-in'),
    bytesOut: $('stat-bytes-out'),
    fallbacks: $('stat-fallbacks'),
    upgrades: $('stat-upgrades'),
    resumes: $('stat-resumes'),
    outbox: $('stat-outbox'),
  },
};

// The current client and the unsubscribe functions of its listeners. A new client is made
// for every connect (a closed client is not reused), and `generation` lets callbacks of an
// older client recognise that they are stale.
let client = null;
let unsubscribers = [];
let generation = 0;
let statsErrorShown = false;
// Opens of the current client that resumed its session (`open` with `resumed: true`).
let resumes = 0;
// A drop requested by the button and not yet followed by a reconnect (for the chat notice).
let dropPending = false;
// The subject of the current client's last demo token (what the server verifies it as), or null.
let signedInAs = null;
// Ids of chat messages this tab sent, so that the channel's echo (every subscriber gets a
// publish, the sender too) marks the pending bubble as delivered instead of showing it twice.
const pendingOwnMessages = new Map();

// name -> room: { name, button, badge, unreadBadge, list, empty, unread, channel }. The rooms
// outlive clients (a reconnect with another transport keeps the conversation on screen).
const rooms = new Map();
let selectedRoom = null;

// How a channel came through: the label its badge shows, and whether it is a warning.
const OUTCOMES = {
  idle: ['idle', ''],
  subscribing: ['joining…', ''],
  live: ['live', 'ok'],
  resumed: ['resumed', 'ok'],
  resubscribing: ['re-subscribing…', 'warn'],
  recovered: ['recovered', 'ok'],
  resubscribed: ['re-subscribed', 'warn'],
  gap: ['gap', 'warn'],
  retrying: ['retrying', 'warn'],
  ended: ['left', ''],
};

// ---------------------------------------------------------------------------------------
// Small helpers

function errorMessage(error) {
  if (error instanceof Error) return error.message || String(error);
  if (typeof error === 'string') return error;
  try {
    return JSON.stringify(error);
  } catch {
    return String(error);
  }
}

function setStatus(text, kind = 'info') {
  ui.status.textContent = text;
  ui.status.dataset.kind = kind;
}

function showError(context, error) {
  const text = `${context}: ${errorMessage(error)}`;
  setStatus(text, 'error');
  logEvent('error', text);
  console.error(context, error);
}

function timeOfDay(date = new Date()) {
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

function describe(value) {
  if (value === undefined) return '';
  if (typeof value === 'string') return value;
  if (value instanceof Uint8Array) {
    const shown = Array.from(value.subarray(0, 16), (b) => b.toString(16).padStart(2, '0'));
    return `${value.length} bytes [${shown.join(' ')}${value.length > 16 ? ' …' : ''}]`;
  }
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

function formatBytes(bytes) {
  if (typeof bytes !== 'number' || !Number.isFinite(bytes)) return '—';
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}

function formatCount(value) {
  return typeof value === 'number' && Number.isFinite(value) ? value.toLocaleString() : '—';
}

function randomId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

// ---------------------------------------------------------------------------------------
// Event log and chat rendering (textContent only: message text is untrusted)

function logEvent(name, detail = '') {
  const item = document.createElement('li');
  item.dataset.event = name;
  const time = document.createElement('span');
  time.className = 'log-time';
  time.textContent = timeOfDay();
  const label = document.createElement('span');
  label.className = 'log-name';
  label.textContent = name;
  const text = document.createElement('span');
  text.className = 'log-detail';
  text.textContent = detail;
  item.append(time, label, text);
  ui.eventLog.prepend(item);
  while (ui.eventLog.children.length > MAX_LOG_ENTRIES) ui.eventLog.lastElementChild.remove();
}

function appendMessage(room, { author, text, own = false, system = false, pending = false, offset }) {
  room.empty.hidden = true;
  const item = document.createElement('li');
  item.className = system ? 'message system' : own ? 'message own' : 'message';
  if (pending) item.classList.add('pending');
  if (offset !== undefined) item.dataset.offset = String(offset);

  if (!system) {
    const meta = document.createElement('div');
    meta.className = 'message-meta';
    const who = document.createElement('span');
    who.className = 'message-author';
    who.textContent = author;
    const when = document.createElement('time');
    when.textContent = timeOfDay();
    meta.append(who, when);
    item.append(meta);
  }
  const body = document.createElement('div');
  body.className = 'message-text';
  body.textContent = text;
  item.append(body);

  const list = room.list;
  const stickToBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(item);
  while (list.children.length > MAX_MESSAGES + 1) {
    list.children[1].remove(); // children[0] is the "no messages" placeholder
  }
  if (stickToBottom || own) list.scrollTop = list.scrollHeight;
  return item;
}

function appendSystem(room, text) {
  return appendMessage(room, { text, system: true });
}

function markDelivered(item, offset) {
  item.classList.remove('pending', 'failed');
  item.title = offset === undefined ? 'delivered' : `delivered at offset ${offset}`;
  if (offset !== undefined) item.dataset.offset = String(offset);
}

function markFailed(item, error) {
  item.classList.remove('pending');
  item.classList.add('failed');
  item.title = `not delivered: ${errorMessage(error)}`;
}

// ---------------------------------------------------------------------------------------
// Rooms: the list, the selection, unread counts

function makeRoom(name) {
  const item = document.createElement('li');
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'room-button';
  button.dataset.room = name;
  button.title = `#${name}`;
  const label = document.createElement('span');
  label.className = 'room-name';
  label.textContent = `#${name}`;
  const badge = document.createElement('span');
  badge.className = 'outcome';
  const unreadBadge = document.createElement('span');
  unreadBadge.className = 'unread';
  unreadBadge.hidden = true;
  button.append(label, badge, unreadBadge);
  button.addEventListener('click', () => selectRoom(name));
  item.append(button);
  ui.roomList.append(item);

  const list = document.createElement('ol');
  list.className = 'messages';
  list.dataset.room = name;
  list.setAttribute('aria-label', `Messages in #${name}`);
  list.hidden = true;
  const empty = document.createElement('li');
  empty.className = 'empty';
  empty.textContent = `No messages in #${name} yet. Say hello.`;
  list.append(empty);
  ui.roomsMessages.append(list);

  const room = { name, button, badge, unreadBadge, list, empty, unread: 0 };
  room.channel = channelView(`#${name}`, [badge], (text) => appendSystem(room, text));
  rooms.set(name, room);
  setUnread(room, 0);
  return room;
}

function setUnread(room, count) {
  room.unread = count;
  room.unreadBadge.hidden = count === 0;
  room.unreadBadge.dataset.count = String(count);
  room.unreadBadge.textContent = String(count);
  // The count alone would read as a bare number: the accessible name says what it is.
  room.button.setAttribute('aria-label', `#${room.name}${count ? `, ${count} unread` : ''}, ${room.channel.outcomeLabel()}`);
  const total = [...rooms.values()].reduce((sum, each) => sum + each.unread, 0);
  document.title = `${total ? `(${total}) ` : ''}realtime-client · multi-room chat demo`;
}

function selectRoom(name) {
  const room = rooms.get(name);
  if (!room) return;
  selectedRoom = room;
  for (const each of rooms.values()) {
    const selected = each === room;
    each.list.hidden = !selected;
    if (selected) each.button.setAttribute('aria-current', 'true');
    else each.button.removeAttribute('aria-current');
  }
  setUnread(room, 0);
  ui.roomTitle.textContent = name;
  room.channel.mirror(ui.roomOutcome);
  room.list.scrollTop = room.list.scrollHeight;
  // On a narrow screen the list is one row that scrolls sideways: keep the selection in view.
  room.button.scrollIntoView({ block: 'nearest', inline: 'nearest' });
  rememberSettings();
  render();
}

// Adds a room (and subscribes to it when a client is live). Returns the room, or null with the
// reason in the status line.
function addRoom(name, { persist = true } = {}) {
  if (rooms.has(name)) return rooms.get(name);
  if (!ROOM_NAME.test(name)) {
    setStatus(`"${name}" is not a room name: 1-64 characters of A-Z a-z 0-9 _ . : -`, 'warn');
    return null;
  }
  if (rooms.size >= DEFAULT_ROOMS.length + MAX_ADDED_ROOMS) {
    setStatus(`At most ${MAX_ADDED_ROOMS} rooms can be added in this demo.`, 'warn');
    return null;
  }
  const room = makeRoom(name);
  if (persist) rememberRooms();
  if (client && client.state !== 'closed') subscribeRoom(room, client, generation);
  return room;
}

// ---------------------------------------------------------------------------------------
// Channels: one view per channel (its badges, how it came through), wired to a Subscription

// `label` names the channel in the log; `badges` show its outcome; `notice(text)` tells the
// user in the channel's own place (a room's messages, the feed's list).
function channelView(label, badges, notice) {
  const view = {
    label,
    outcome: 'idle',
    detail: '',
    // The next `subscribed` says how this channel came back: after a reset, or subscribed by a
    // new client (another transport, Reconnect) from where the last one left it.
    returning: false,
    // The last position this page saw ({ offset, epoch }), from which a new client subscribes.
    position: null,
    seen(info) {
      view.position = { offset: info.offset, epoch: info.epoch };
    },
    // A Subscription of the current client, or null.
    sub: null,
    mirrors: new Set(),
    outcomeLabel: () => OUTCOMES[view.outcome][0],
    set(outcome, detail = '') {
      view.outcome = outcome;
      view.detail = detail;
      for (const badge of [...badges, ...view.mirrors]) paint(badge);
      for (const room of rooms.values()) if (room.channel === view) setUnread(room, room.unread);
    },
    // Shows this channel's outcome in `badge` too (the selected room's, in the chat header).
    mirror(badge) {
      for (const room of rooms.values()) room.channel.mirrors.delete(badge);
      view.mirrors.add(badge);
      paint(badge);
    },
    notice,
  };
  const paint = (badge) => {
    const [text, kind] = OUTCOMES[view.outcome];
    badge.dataset.outcome = view.outcome;
    badge.dataset.kind = kind;
    badge.textContent = text;
    badge.title = view.detail || text;
  };
  view.set('idle');
  return view;
}

// Adds `listener` for `event` of `target` (the client or a Subscription) as long as `target`
// belongs to the current client: late events of a replaced client are ignored, and a listener
// that throws is shown, not swallowed.
function listen(target, event, listener, myGeneration) {
  const off = target.on(event, (...args) => {
    if (myGeneration !== generation) return;
    try {
      listener(...args);
    } catch (error) {
      showError(`the demo's '${event}' handler failed`, error);
    }
    render();
  });
  unsubscribers.push(off);
}

// The channel lifecycle of `sub`, the same for rooms and the feed: its badge and the log.
function watchChannel(view, sub, myGeneration) {
  view.sub = sub;
  view.returning = view.position !== null;
  view.set('subscribing', 'subscribe sent; it takes effect when the session is open');
  listen(sub, 'subscribed', ({ offset, epoch, recovered }) => {
    logEvent('subscribed', `${view.label} at offset ${offset}${recovered ? ' · recovered from history' : ''} · epoch ${epoch}`);
    // Recovered: the missed messages follow, and each moves the position on.
    if (!recovered || !view.position) view.position = { offset, epoch };
    if (!view.returning) {
      view.set('live', `subscribed at offset ${offset} (epoch ${epoch})`);
      return;
    }
    view.returning = false;
    if (recovered) {
      view.set('recovered', `recovered from the channel's history, up to offset ${offset}`);
      view.notice(`Recovered ${view.label} from the server's history (up to offset ${offset}): nothing was missed.`);
    } else {
      view.set('resubscribed', `subscribed again at offset ${offset}, epoch ${epoch}`);
      view.notice(`Subscribed to ${view.label} again at offset ${offset} (epoch ${epoch}).`);
    }
  }, myGeneration);
  listen(sub, 'gap', ({ from, to, epoch }) => {
    const what = from === 0
      ? `the server lost its history (now epoch ${epoch}, offset ${to}): what was published while away is gone`
      : `offsets ${from}–${to} could not be recovered`;
    logEvent('gap', `${view.label}: ${from === 0 ? 'history lost' : `offsets ${from}–${to}`} · epoch ${epoch}`);
    view.position = { offset: to, epoch };
    view.set('gap', what);
    view.notice(`Gap in ${view.label}: ${what}.`);
  }, myGeneration);
  listen(sub, 'unsubscribed', ({ code, reason }) => {
    logEvent('unsubscribed', `${view.label}: ${code}${reason ? ` (${reason})` : ''}`);
    view.set('ended', reason || code);
    if (view.sub === sub) view.sub = null;
  }, myGeneration);
  listen(sub, 'error', (error) => {
    logEvent('error', `${view.label}: ${error && error.code ? `${error.code}: ` : ''}${errorMessage(error)} (it retries by itself)`);
    view.set('retrying', errorMessage(error));
  }, myGeneration);
}

function subscribeRoom(room, target, myGeneration) {
  let sub;
  try {
    // From the last position seen, if any: a new client recovers what was published meanwhile.
    sub = target.subscribe(room.name, room.channel.position ? { since: room.channel.position } : undefined);
  } catch (error) {
    showError(`could not subscribe to #${room.name}`, error);
    return;
  }
  watchChannel(room.channel, sub, myGeneration);
  listen(sub, 'chat', (data, info) => {
    room.channel.seen(info);
    const payload = data && typeof data === 'object' ? data : { text: describe(data) };
    const text = typeof payload.text === 'string' ? payload.text : describe(data);
    // The verified sender (the server sets it; a client cannot forge it); null from a backend.
    const author = typeof info.from === 'string' ? info.from : 'server';
    if (typeof payload.id === 'string' && pendingOwnMessages.has(payload.id)) {
      markDelivered(pendingOwnMessages.get(payload.id), info.offset);
      pendingOwnMessages.delete(payload.id);
      return;
    }
    appendMessage(room, { author, text, offset: info.offset });
    if (room !== selectedRoom) setUnread(room, room.unread + 1);
  }, myGeneration);
  listen(sub, 'message', (data, info) => {
    room.channel.seen(info);
    appendMessage(room, { text: `message: ${describe(data)}`, system: true, offset: info.offset });
    if (room !== selectedRoom) setUnread(room, room.unread + 1);
    logEvent('message', `#${room.name} ${info.kind} offset ${info.offset}`);
  }, myGeneration);
}

// ---------------------------------------------------------------------------------------
// The live feed: the server's clock ticks (`--demo-feed`), newest first

const feed = channelView(`feed #${FEED_CHANNEL}`, [ui.feedOutcome], (text) => feedNote(text));
let feedTicks = 0;

function feedNote(text) {
  const item = document.createElement('li');
  item.className = 'feed-note';
  item.textContent = text;
  pushFeedItem(item);
}

function pushFeedItem(item) {
  ui.feedList.prepend(item);
  while (ui.feedList.children.length > MAX_FEED_ITEMS) ui.feedList.lastElementChild.remove();
}

function subscribeFeed(target, myGeneration) {
  let sub;
  try {
    sub = target.subscribe(FEED_CHANNEL, feed.position ? { since: feed.position } : undefined);
  } catch (error) {
    showError(`could not subscribe to the feed #${FEED_CHANNEL}`, error);
    return;
  }
  watchChannel(feed, sub, myGeneration);
  listen(sub, 'tick', (data, info) => {
    feed.seen(info);
    const tick = data && typeof data === 'object' ? data : {};
    const when = typeof tick.unixMs === 'number' ? new Date(tick.unixMs) : new Date();
    feedTicks += 1;
    ui.feedNow.textContent = timeOfDay(when);
    ui.feedDetail.textContent =
      `server time · tick ${formatCount(tick.tick)} at offset ${info.offset} · ` +
      `${formatCount(tick.sessions)} session${tick.sessions === 1 ? '' : 's'} on the server`;
    const item = document.createElement('li');
    item.className = 'feed-tick';
    item.dataset.offset = String(info.offset);
    item.textContent = `offset ${info.offset} · ${timeOfDay(when)}`;
    pushFeedItem(item);
  }, myGeneration);
}

// ---------------------------------------------------------------------------------------
// Live panel

function render() {
  const state = client ? client.state : 'idle';
  ui.statePill.dataset.state = state;
  ui.statePillText.textContent = client && client.transport ? `${state} · ${client.transport}` : state;

  const active = state === 'connecting' || state === 'open' || state === 'reconnecting';
  const canSend = active && Boolean(selectedRoom && selectedRoom.channel.sub);
  ui.disconnectButton.disabled = !active;
  ui.dropButton.disabled = !(client && state === 'open' && client.sessionId);
  ui.resetButton.disabled = ui.dropButton.disabled;
  ui.connectButton.textContent = active ? 'Reconnect' : 'Connect';
  ui.messageInput.disabled = !canSend;
  ui.sendButton.disabled = !canSend;
  if (selectedRoom) ui.messageInput.placeholder = `Message #${selectedRoom.name}…`;

  ui.stats.state.textContent = state;
  ui.stats.transport.textContent = (client && client.transport) || '—';
  ui.stats.session.textContent = (client && client.sessionId) || '—';

  if (!client) return;
  let stats;
  try {
    stats = client.stats();
  } catch (error) {
    if (!statsErrorShown) {
      statsErrorShown = true;
      showError('stats() failed', error);
    }
    return;
  }
  ui.stats.rtt.textContent =
    typeof stats.rttMs === 'number' && Number.isFinite(stats.rttMs) ? `${Math.round(stats.rttMs)} ms` : '—';
  ui.stats.reconnects.textContent = formatCount(stats.reconnects);
  ui.stats.messagesIn.textContent = formatCount(stats.messagesIn);
  ui.stats.messagesOut.textContent = formatCount(stats.messagesOut);
  ui.stats.bytesIn.textContent = formatBytes(stats.bytesIn);
  ui.stats.bytesOut.textContent = formatBytes(stats.bytesOut);
  ui.stats.fallbacks.textContent = formatCount(stats.fallbacks);
  ui.stats.upgrades.textContent = formatCount(stats.upgrades);
  ui.stats.resumes.textContent = formatCount(resumes);
  ui.stats.outbox.textContent = formatCount(stats.outbox);
}

// ---------------------------------------------------------------------------------------
// Connection lifecycle

function currentName() {
  return ui.nameInput.value.trim() || 'guest';
}

function selectedTransports() {
  const choice = ui.transportSelect.value;
  return TRANSPORTS.includes(choice) ? [choice] : TRANSPORTS.slice();
}

function everyChannel() {
  return [...[...rooms.values()].map((room) => room.channel), feed];
}

function teardown() {
  if (client) {
    try {
      // Ends every Subscription first ('unsubscribed', code 'closed': logged per channel).
      client.close();
    } catch (error) {
      showError('close() failed', error);
    }
    // The closed client stays in `client` so the panel keeps showing its last stats.
  }
  for (const off of unsubscribers) {
    try {
      off();
    } catch (error) {
      console.error('unsubscribe failed', error);
    }
  }
  unsubscribers = [];
  for (const view of everyChannel()) view.sub = null;
}

function watchClient(target, myGeneration) {
  const on = (event, listener) => listen(target, event, listener, myGeneration);
  on('open', (info) => {
    const over = target.transport || 'an unknown transport';
    logEvent('open', info ? `${info.transport} · ${info.resumed ? 'session resumed' : 'new session'} ${info.sessionId}` : '');
    const channels = `${rooms.size} room${rooms.size === 1 ? '' : 's'} and the feed`;
    if (info && info.resumed) {
      resumes += 1;
      // The session came back whole: every channel with it, nothing to subscribe again.
      for (const room of rooms.values()) {
        if (!room.channel.sub) continue;
        room.channel.set('resumed', `the session resumed over ${over}: nothing missed`);
        appendSystem(room, `Reconnected over ${over}: the session resumed, nothing in #${room.name} was missed.`);
      }
      if (feed.sub) feed.set('resumed', `the session resumed over ${over}: nothing missed`);
      setStatus(`Reconnected over ${over} (session resumed): ${channels} on one connection.`, 'ok');
    } else {
      setStatus(`Connected over ${over}: ${channels} on one connection.`, 'ok');
    }
    dropPending = false;
    if (signedInAs) showSignedIn(`Signed in as ${signedInAs}`, signedInAs);
  });
  on('close', (...args) => {
    logEvent('close', describe(args[0]));
    setStatus('Disconnected.', 'info');
  });
  on('error', (error) => {
    showError('client error', error);
  });
  on('state', (...args) => logEvent('state', describe(args[0]) || target.state));
  on('transport', (...args) => logEvent('transport', describe(args[0]) || String(target.transport)));
  on('reconnecting', (...args) => {
    const detail = describe(args[0]);
    logEvent('reconnecting', detail);
    if (dropPending) {
      dropPending = false;
      for (const room of rooms.values()) appendSystem(room, 'Connection lost. Reconnecting…');
    }
    setStatus(`Connection lost, reconnecting${detail ? ` (${detail})` : ''}…`, 'warn');
  });
  on('reset', (...args) => {
    logEvent('reset', describe(args[0]));
    // A fresh session (the server restarted, or forgot this one): every channel is subscribed
    // again from its last position, and its own `subscribed` (and `gap`) tells how it came back.
    for (const view of everyChannel()) {
      if (!view.sub) continue;
      view.returning = true;
      view.set('resubscribing', 'the session could not be resumed: subscribing again from the last position');
    }
    for (const room of rooms.values()) {
      appendSystem(room, `The server could not resume the session (it restarted, or forgot it): subscribing to #${room.name} again from where this page was.`);
    }
  });
}

// Shows who the page is signed in as (`data-subject` holds the bare subject).
function showSignedIn(text, subject = '') {
  ui.signedIn.textContent = text;
  ui.signedIn.dataset.subject = subject;
}

// The client's `token` option for a client of `myGeneration` signing in as `name`: called before
// every connect and for every in-band refresh. It asks the demo server for a fresh token
// (`--demo-auth`); a failed request rejects, and the client retries with its backoff.
function demoToken(name, myGeneration) {
  return async () => {
    let response;
    try {
      response = await fetch(`${location.origin}/realtime/demo-token`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name }),
        cache: 'no-store',
      });
    } catch (error) {
      if (myGeneration === generation) logEvent('sign-in', `failed: ${errorMessage(error)} (the client retries)`);
      throw error;
    }
    if (!response.ok) {
      const reason = (await response.text().catch(() => '')).trim();
      const text =
        response.status === 404
          ? 'the server has no demo sign-in (start it with --demo-auth, as `make demo` does)'
          : `HTTP ${response.status}${reason ? `: ${reason}` : ''}`;
      if (myGeneration === generation) {
        logEvent('sign-in', `failed: ${text}`);
        setStatus(`Sign-in as "${name}" failed: ${text}`, 'warn');
      }
      throw new Error(`sign-in failed: ${text}`);
    }
    const { token, subject, expires_at: expiresAt } = await response.json();
    if (typeof token !== 'string' || typeof subject !== 'string') throw new Error('sign-in failed: the server answered no token');
    if (myGeneration === generation) {
      signedInAs = subject;
      const until = typeof expiresAt === 'number' ? ` until ${timeOfDay(new Date(expiresAt * 1000))}` : '';
      logEvent('sign-in', `token for ${subject}${until}`);
    }
    return token;
  };
}

async function connect() {
  teardown();
  const myGeneration = ++generation;
  statsErrorShown = false;
  resumes = 0;
  dropPending = false;
  signedInAs = null;
  // The name is read once per client: a reconnect signs in again as the same principal (a resume
  // with another one would be refused). A new name takes effect with Connect.
  const name = currentName();
  showSignedIn(`Signing in as ${name}…`);

  const transports = selectedTransports();
  // No room= in the URL: every room, and the feed, is a subscription of this one client.
  const url = `${location.origin}/realtime`;
  rememberSettings();

  let next;
  try {
    next = new RealtimeClient(url, { transports, connectTimeoutMs: CONNECT_TIMEOUT_MS, token: demoToken(name, myGeneration) });
  } catch (error) {
    client = null;
    render();
    showError('could not create the client', error);
    return;
  }
  client = next;
  watchClient(next, myGeneration);
  // Subscriptions made before connect() go out as soon as the session opens.
  for (const room of rooms.values()) subscribeRoom(room, next, myGeneration);
  subscribeFeed(next, myGeneration);
  setStatus(`Connecting (${transports.join(', ')})…`, 'info');
  logEvent('connect', `${url} via ${transports.join(' → ')}: ${rooms.size} rooms and feed #${FEED_CHANNEL}`);
  render();

  try {
    await next.connect();
  } catch (error) {
    if (myGeneration === generation) showError('connect failed', error);
  }
  render();
}

function disconnect() {
  teardown(); // its 'close' event is logged
  generation++;
  showSignedIn('Not signed in (Connect signs in with the name above).');
  setStatus('Disconnected.', 'info');
  render();
}

async function sendChat(text) {
  const room = selectedRoom;
  const sub = room && room.channel.sub;
  if (!sub) return;
  const id = randomId();
  const item = appendMessage(room, { author: signedInAs || currentName(), text, own: true, pending: true });
  pendingOwnMessages.set(id, item);
  try {
    // No name in the message: the server stamps the sender (info.from) from the token.
    await sub.emit('chat', { text, id });
    if (item.classList.contains('pending')) markDelivered(item);
  } catch (error) {
    markFailed(item, error);
    showError(`message to #${room.name} not delivered`, error);
  } finally {
    // Keep the id a while for the channel's echo, then forget it.
    setTimeout(() => pendingOwnMessages.delete(id), 60_000);
    render();
  }
}

// The admin token that `POST /realtime/kick` needs. `make demo` makes a fresh one at each start
// and prints the page's URL with it in the fragment (`#admin=TOKEN`): a browser never sends the
// fragment to the server nor puts it in a Referer. It is read once, kept for this tab only
// (sessionStorage, so a reload keeps the button working) and taken out of the address bar, so
// the share link and a copied URL never carry it. LOOPBACK DEMO ONLY: a public server must not
// hand its admin token to pages.
const ADMIN_TOKEN_KEY = 'realtime-demo-admin-token';
const adminToken = (() => {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const fromUrl = fragment.get('admin');
  if (fromUrl) {
    fragment.delete('admin');
    const rest = fragment.toString();
    history.replaceState(null, '', `${location.pathname}${location.search}${rest ? `#${rest}` : ''}`);
    try {
      sessionStorage.setItem(ADMIN_TOKEN_KEY, fromUrl);
    } catch {
      // Storage can be disabled: the token then lasts until a reload.
    }
    return fromUrl;
  }
  try {
    return sessionStorage.getItem(ADMIN_TOKEN_KEY);
  } catch {
    return null;
  }
})();

// Breaks the live transport on the server (`POST /realtime/kick`, only on a server started with
// --allow-kick and an admin token, as `make demo` does): no close frame, so the client sees a
// real network failure. One connection carries every room, so every room goes through it. With
// `reset` the server also forgets the session (`&reset=1`): the resume is refused, and every
// channel is recovered from its history by the fresh session.
async function dropConnection(reset = false) {
  const target = client;
  const sessionId = target && target.state === 'open' ? target.sessionId : null;
  if (!sessionId) {
    setStatus('Not connected: there is no connection to drop.', 'warn');
    return;
  }
  const transport = target.transport || 'transport';
  ui.dropButton.disabled = true;
  ui.resetButton.disabled = true;
  dropPending = true;
  try {
    const query = `sid=${encodeURIComponent(sessionId)}${reset ? '&reset=1' : ''}`;
    const response = await fetch(`${location.origin}/realtime/kick?${query}`, {
      method: 'POST',
      headers: adminToken ? { authorization: `Bearer ${adminToken}` } : {},
    });
    if (response.status === 204) {
      logEvent('drop', `the server broke off the ${transport} connection${reset ? ' and forgot the session' : ''} (${rooms.size} rooms and the feed ride on it)`);
      return;
    }
    dropPending = false;
    const reason = (await response.text()).trim();
    if (response.status === 401) {
      setStatus(
        'Dropping a connection needs the admin token: open the URL with #admin=… that `make demo` printed.',
        'warn',
      );
    } else if (response.status === 403) {
      setStatus(
        'This server does not allow dropping connections (start it with --allow-kick and an admin token; `make demo` does).',
        'warn',
      );
    } else if (response.status === 409) {
      setStatus('The connection is already down; the client is reconnecting.', 'info');
    } else {
      showError('drop connection', `HTTP ${response.status}${reason ? `: ${reason}` : ''}`);
    }
  } catch (error) {
    dropPending = false;
    showError('drop connection', error);
  } finally {
    render();
  }
}

// ---------------------------------------------------------------------------------------
// Settings: the selected room in ?room=, the name and the added rooms in localStorage

const NAME_KEY = 'realtime-demo-name';
const ROOMS_KEY = 'realtime-demo-rooms';

function rememberSettings() {
  try {
    localStorage.setItem(NAME_KEY, currentName());
  } catch {
    // Storage can be disabled (private mode); the name is then asked again next time.
  }
  const pageUrl = new URL(location.href);
  if (selectedRoom) pageUrl.searchParams.set('room', selectedRoom.name);
  history.replaceState(null, '', pageUrl);
  ui.shareLink.href = pageUrl.toString();
}

function rememberRooms() {
  const added = [...rooms.keys()].filter((name) => !DEFAULT_ROOMS.includes(name));
  try {
    localStorage.setItem(ROOMS_KEY, JSON.stringify(added));
  } catch {
    // Without storage the added rooms last until a reload.
  }
}

function restoreSettings() {
  let name = null;
  let added = [];
  try {
    name = localStorage.getItem(NAME_KEY);
    const stored = JSON.parse(localStorage.getItem(ROOMS_KEY) || '[]');
    if (Array.isArray(stored)) added = stored.filter((room) => typeof room === 'string' && ROOM_NAME.test(room));
  } catch {
    name = null;
  }
  ui.nameInput.value = name || `guest-${Math.floor(1000 + Math.random() * 9000)}`;
  ui.feedChannel.textContent = FEED_CHANNEL;
  for (const room of [...DEFAULT_ROOMS, ...added.slice(0, MAX_ADDED_ROOMS)]) addRoom(room, { persist: false });

  const wanted = new URL(location.href).searchParams.get('room');
  const deepLinked = wanted ? addRoom(wanted) : null;
  selectRoom(deepLinked ? deepLinked.name : DEFAULT_ROOMS[0]);
}

// ---------------------------------------------------------------------------------------
// Wiring

ui.connectForm.addEventListener('submit', (event) => {
  event.preventDefault();
  connect();
});
ui.disconnectButton.addEventListener('click', disconnect);
ui.dropButton.addEventListener('click', () => dropConnection(false));
ui.resetButton.addEventListener('click', () => dropConnection(true));
ui.transportSelect.addEventListener('change', () => {
  logEvent('transport', `forced: ${selectedTransports().join(', ')}`);
  connect();
});
ui.nameInput.addEventListener('change', () => {
  rememberSettings();
  if (signedInAs && currentName() !== signedInAs) setStatus(`Connect to sign in as "${currentName()}".`, 'info');
});
ui.addRoomForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const name = ui.addRoomInput.value.trim();
  if (!name) return;
  const room = addRoom(name);
  if (!room) return;
  ui.addRoomInput.value = '';
  selectRoom(room.name);
});
ui.composer.addEventListener('submit', (event) => {
  event.preventDefault();
  const text = ui.messageInput.value.trim();
  if (!text) return;
  ui.messageInput.value = '';
  sendChat(text);
});
ui.clearLog.addEventListener('click', () => ui.eventLog.replaceChildren());
window.addEventListener('unhandledrejection', (event) => showError('unexpected error', event.reason));
window.addEventListener('error', (event) => showError('unexpected error', event.error || event.message));
window.addEventListener('pagehide', () => teardown());

async function main() {
  restoreSettings();
  render();
  try {
    await init();
  } catch (error) {
    ui.connectButton.disabled = true;
    showError('could not load the wasm client (run `make demo` to build www/public/pkg)', error);
    return;
  }
  setStatus('Client loaded.', 'info');
  setInterval(render, 1000);
  await connect();
}

main();
