// Demo page for realtime-client: a chat room plus a live view of the connection.
//
// It uses only the public JS API of the package built into ./pkg by `make demo`.
// Every error ends up in the status line or the event log; nothing fails silently.

import init, { RealtimeClient } from './pkg/realtime_client.js';

const TRANSPORTS = ['websocket', 'sse', 'long-polling'];
const CONNECT_TIMEOUT_MS = 5000;
const MAX_LOG_ENTRIES = 200;
const MAX_MESSAGES = 500;

const $ = (id) => document.getElementById(id);
const ui = {
  statePill: $('state-pill'),
  statePillText: $('state-pill-text'),
  roomTitle: $('room-title'),
  shareLink: $('share-link'),
  messages: $('messages'),
  messagesEmpty: $('messages-empty'),
  composer: $('composer'),
  messageInput: $('message-input'),
  sendButton: $('send-button'),
  connectForm: $('connect-form'),
  roomInput: $('room-input'),
  nameInput: $('name-input'),
  transportSelect: $('transport-select'),
  connectButton: $('connect-button'),
  disconnectButton: $('disconnect-button'),
  dropButton: $('drop-button'),
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
// Ids of chat messages this tab sent, so that the server's echo (if it sends one back to
// the sender) marks the pending bubble as delivered instead of showing it twice.
const pendingOwnMessages = new Map();

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

function appendMessage({ author, text, own = false, system = false, pending = false }) {
  ui.messagesEmpty.hidden = true;
  const item = document.createElement('li');
  item.className = system ? 'message system' : own ? 'message own' : 'message';
  if (pending) item.classList.add('pending');

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

  const stickToBottom =
    ui.messages.scrollHeight - ui.messages.scrollTop - ui.messages.clientHeight < 40;
  ui.messages.append(item);
  while (ui.messages.children.length > MAX_MESSAGES + 1) {
    ui.messages.children[1].remove(); // children[0] is the "no messages" placeholder
  }
  if (stickToBottom || own) ui.messages.scrollTop = ui.messages.scrollHeight;
  return item;
}

function markDelivered(item) {
  item.classList.remove('pending', 'failed');
  item.title = 'delivered';
}

function markFailed(item, error) {
  item.classList.remove('pending');
  item.classList.add('failed');
  item.title = `not delivered: ${errorMessage(error)}`;
}

// ---------------------------------------------------------------------------------------
// Live panel

function render() {
  const state = client ? client.state : 'idle';
  ui.statePill.dataset.state = state;
  ui.statePillText.textContent = client && client.transport ? `${state} · ${client.transport}` : state;

  const active = state === 'connecting' || state === 'open' || state === 'reconnecting';
  ui.disconnectButton.disabled = !active;
  ui.dropButton.disabled = !(client && state === 'open' && client.sessionId);
  ui.connectButton.textContent = active ? 'Reconnect' : 'Connect';
  ui.messageInput.disabled = !active;
  ui.sendButton.disabled = !active;

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

function currentRoom() {
  return ui.roomInput.value.trim() || 'lobby';
}

function currentName() {
  return ui.nameInput.value.trim() || 'guest';
}

function selectedTransports() {
  const choice = ui.transportSelect.value;
  return TRANSPORTS.includes(choice) ? [choice] : TRANSPORTS.slice();
}

function teardown() {
  for (const off of unsubscribers) {
    try {
      off();
    } catch (error) {
      console.error('unsubscribe failed', error);
    }
  }
  unsubscribers = [];
  if (client) {
    try {
      client.close();
    } catch (error) {
      showError('close() failed', error);
    }
    // The closed client stays in `client` so the panel keeps showing its last stats.
  }
}

function subscribe(target, myGeneration) {
  const on = (event, listener) => {
    const off = target.on(event, (...args) => {
      if (myGeneration !== generation) return; // a late event from a replaced client
      try {
        listener(...args);
      } catch (error) {
        showError(`the demo's '${event}' handler failed`, error);
      }
      render();
    });
    unsubscribers.push(off);
  };

  on('chat', (data, info) => {
    const payload = data && typeof data === 'object' ? data : { text: describe(data) };
    const text = typeof payload.text === 'string' ? payload.text : describe(data);
    const author = typeof payload.name === 'string' && payload.name ? payload.name : 'anonymous';
    if (typeof payload.id === 'string' && pendingOwnMessages.has(payload.id)) {
      markDelivered(pendingOwnMessages.get(payload.id));
      pendingOwnMessages.delete(payload.id);
      return;
    }
    appendMessage({ author, text });
    logEvent('chat', `seq ${info && info.seq !== undefined ? info.seq : '?'} from ${author}`);
  });
  on('message', (data, info) => {
    appendMessage({ text: `message: ${describe(data)}`, system: true });
    logEvent('message', `${(info && info.kind) || ''} seq ${info && info.seq !== undefined ? info.seq : '?'}`);
  });
  on('open', (info) => {
    const over = target.transport || 'an unknown transport';
    logEvent('open', info ? `${info.transport} · ${info.resumed ? 'session resumed' : 'new session'} ${info.sessionId}` : '');
    if (info && info.resumed) {
      resumes += 1;
      appendMessage({ text: `Reconnected over ${over}: the session resumed, nothing was missed.`, system: true });
      setStatus(`Reconnected to #${currentRoom()} over ${over} (session resumed).`, 'ok');
    } else {
      setStatus(`Connected to #${currentRoom()} over ${over}.`, 'ok');
    }
    dropPending = false;
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
      appendMessage({ text: 'Connection lost. Reconnecting…', system: true });
    }
    setStatus(`Connection lost, reconnecting${detail ? ` (${detail})` : ''}…`, 'warn');
  });
  on('reset', (...args) => {
    logEvent('reset', describe(args[0]));
    appendMessage({ text: 'The server could not resume the session; some messages may be missing.', system: true });
  });
}

async function connect() {
  teardown();
  const myGeneration = ++generation;
  statsErrorShown = false;
  resumes = 0;
  dropPending = false;

  const room = currentRoom();
  const transports = selectedTransports();
  const url = `${location.origin}/realtime?room=${encodeURIComponent(room)}`;
  ui.roomTitle.textContent = room;
  rememberSettings(room);

  let next;
  try {
    next = new RealtimeClient(url, { transports, connectTimeoutMs: CONNECT_TIMEOUT_MS });
  } catch (error) {
    client = null;
    render();
    showError('could not create the client', error);
    return;
  }
  client = next;
  subscribe(next, myGeneration);
  setStatus(`Connecting to #${room} (${transports.join(', ')})…`, 'info');
  logEvent('connect', `${url} via ${transports.join(' → ')}`);
  render();

  try {
    await next.connect();
  } catch (error) {
    if (myGeneration === generation) showError('connect failed', error);
  }
  render();
}

function disconnect() {
  teardown();
  generation++;
  logEvent('close', 'closed by the user');
  setStatus('Disconnected.', 'info');
  render();
}

async function sendChat(text) {
  if (!client) return;
  const target = client;
  const id = randomId();
  const item = appendMessage({ author: currentName(), text, own: true, pending: true });
  pendingOwnMessages.set(id, item);
  try {
    await target.emit('chat', { name: currentName(), text, id });
    markDelivered(item);
  } catch (error) {
    markFailed(item, error);
    showError('message not delivered', error);
  } finally {
    // Keep the id a while for the server's echo, then forget it.
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
// real network failure.
async function dropConnection() {
  const target = client;
  const sessionId = target && target.state === 'open' ? target.sessionId : null;
  if (!sessionId) {
    setStatus('Not connected: there is no connection to drop.', 'warn');
    return;
  }
  const transport = target.transport || 'transport';
  ui.dropButton.disabled = true;
  dropPending = true;
  try {
    const response = await fetch(`${location.origin}/realtime/kick?sid=${encodeURIComponent(sessionId)}`, {
      method: 'POST',
      headers: adminToken ? { authorization: `Bearer ${adminToken}` } : {},
    });
    if (response.status === 204) {
      logEvent('drop', `the server broke off the ${transport} connection`);
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
// Settings: room from ?room=, name from localStorage

function rememberSettings(room) {
  try {
    localStorage.setItem('realtime-demo-name', currentName());
  } catch {
    // Storage can be disabled (private mode); the name is then asked again next time.
  }
  const pageUrl = new URL(location.href);
  pageUrl.searchParams.set('room', room);
  history.replaceState(null, '', pageUrl);
  ui.shareLink.href = pageUrl.toString();
}

function restoreSettings() {
  const room = new URL(location.href).searchParams.get('room');
  if (room) ui.roomInput.value = room;
  let name = null;
  try {
    name = localStorage.getItem('realtime-demo-name');
  } catch {
    name = null;
  }
  ui.nameInput.value = name || `guest-${Math.floor(1000 + Math.random() * 9000)}`;
}

// ---------------------------------------------------------------------------------------
// Wiring

ui.connectForm.addEventListener('submit', (event) => {
  event.preventDefault();
  connect();
});
ui.disconnectButton.addEventListener('click', disconnect);
ui.dropButton.addEventListener('click', dropConnection);
ui.transportSelect.addEventListener('change', () => {
  logEvent('transport', `forced: ${selectedTransports().join(', ')}`);
  connect();
});
ui.nameInput.addEventListener('change', () => rememberSettings(currentRoom()));
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
