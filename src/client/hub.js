// The JS half of the facade (src/client/mod.rs), imported by the wasm through wasm-bindgen (it
// ships as a snippet of the generated glue, so `realtime-client` and `realtime-client/raw` both
// use it): the listener registry, the objects listeners receive, the promises of connect(),
// send() and emit(), and the Errors. The wasm decides what happens and when, and calls in here
// with plain arguments (numbers, strings, the data); this file only shapes it for JS.
//
// Invariants (as in the facade before it moved here):
// - A listener is called with two arguments (the second undefined for one-argument events) and
//   `this` undefined; one that throws is reported as an 'error' event (on the console, if it was
//   an 'error' listener) and nothing thrown here reaches the wasm.
// - Every promise settles exactly once.

/** An Error with its stable code (the README's error table; ErrorCode in the .d.ts). */
export function error(code, message) {
    const value = new Error(message);
    value.code = code;
    return value;
}

/** Throws the Error (code 'invalid-argument') for an argument or option the API refuses. */
function refuse(message) {
    throw error('invalid-argument', message);
}

/** A promise rejected with `value`. */
export function reject(value) {
    return Promise.reject(value);
}

/**
 * The bytes send() sends for `data` (src/client/payload.rs): a Uint8Array, an ArrayBuffer, or
 * another view of an ArrayBuffer (a typed array, a DataView) whose buffer, byteOffset and
 * byteLength read as such (a getter that throws reads as nothing); undefined for anything else.
 * Returned as a Uint8Array view that the glue copies into the wasm (on a detached buffer,
 * subarray() and the constructor throw, as they always did).
 */
export function bytes(data) {
    if (data instanceof Uint8Array) return data.subarray();
    if (data instanceof ArrayBuffer) return new Uint8Array(data);
    if (ArrayBuffer.isView(data)) {
        const read = (key) => {
            try {
                return data[key];
            } catch {}
        };
        const buffer = read('buffer');
        const offset = read('byteOffset');
        const length = read('byteLength');
        if (buffer instanceof ArrayBuffer && typeof offset === 'number' && typeof length === 'number') {
            return new Uint8Array(buffer, offset, length);
        }
    }
}

/**
 * The JSON text send() sends for any other value; throws the Error (code 'invalid-argument') to
 * reject with for undefined, a function, a symbol, and a value that JSON.stringify refuses
 * (throws on) or turns into nothing. Nothing else throws here.
 */
export function json(data) {
    if (data === undefined || typeof data === 'function' || typeof data === 'symbol') {
        refuse('cannot send undefined, a function or a symbol: pass a string, bytes or a JSON value');
    }
    let text;
    try {
        text = JSON.stringify(data);
    } catch (thrown) {
        refuse('value does not serialise to JSON: ' + messageOf(thrown));
    }
    if (typeof text !== 'string') refuse('value does not serialise to JSON');
    return text;
}

/** The object stats() returns; rttMs and transport are undefined (from the wasm) or a value. */
export function stats(messagesIn, messagesOut, bytesIn, bytesOut, reconnects, fallbacks, upgrades, rttMs, transport, outbox) {
    return { messagesIn, messagesOut, bytesIn, bytesOut, reconnects, fallbacks, upgrades, rttMs: rttMs ?? null, transport: transport ?? null, outbox };
}

/**
 * The storage of the rung memory (src/client/rung_memory.rs decides what is kept, when, and for
 * how long): "<name>|<expiry ms>" under `key` in sessionStorage. rung 0-2 stores that transport
 * (an index into TRANSPORTS) as in use now, trusted for ttl ms; -1 returns the stored index if
 * the entry is well-formed (a decimal expiry that fits 64 bits) and not expired, else -1; -2
 * removes it. Without storage (a worker, storage disabled: every access may throw, a full one
 * refuses to store) there is no memory, and nothing throws.
 */
export function rungMemory(key, rung, ttl) {
    try {
        const storage = typeof window === 'undefined' ? null : window.sessionStorage;
        if (!storage) return -1;
        if (rung === -2) return storage.removeItem(key), -1;
        if (rung >= 0) return storage.setItem(key, TRANSPORTS[rung] + '|' + (Date.now() + ttl)), -1;
        const value = storage.getItem(key);
        if (typeof value !== 'string') return -1;
        const bar = value.indexOf('|');
        const expiry = bar < 0 ? '' : value.slice(bar + 1);
        if (!/^[0-9]{1,20}$/.test(expiry) || BigInt(expiry) > 18446744073709551615n || Number(expiry) < Date.now()) return -1;
        return TRANSPORTS.indexOf(bar < 0 ? value : value.slice(0, bar));
    } catch {
        return -1;
    }
}

/**
 * The transports' fetch() (src/transport/http.rs): the init object's fields in this order,
 * signal and body only when given (undefined from the wasm when absent).
 */
export function request(url, method, signal, body, credentials) {
    const init = { method, cache: 'no-store' };
    if (credentials !== undefined) init.credentials = credentials;
    if (signal !== undefined) init.signal = signal;
    if (body !== undefined) init.body = body;
    // Any other status than 2xx rejects, with an Error 'HTTP 503'; a refusal (403) with a
    // string, 'HTTP 403: <the server's reason>' (its first 200 characters), which the wasm reads
    // as a refusal. The reason tells a developer why (a proxy that rewrites Host makes a
    // same-origin page look foreign). A 401 is no refusal in v3: it answers an upload whose
    // in-band refresh was refused, and the session's connection closes with 4005 (PROTOCOL.md
    // §9.8), which fetches a new credential.
    return fetch(url, init).then((response) => {
        const status = response.status;
        const head = 'HTTP ' + status;
        if (response.ok) return response;
        if (status != 403) throw Error(head);
        return response
            .text()
            .catch(() => '')
            .then((text) => {
                text = text.trim().slice(0, 200);
                throw text ? head + ': ' + text : head;
            });
    });
}

const TRANSPORTS = ['websocket', 'sse', 'long-polling'];
const CREDENTIALS = ['include', 'same-origin', 'omit'];

/**
 * The `room=` of the URL's query (the first one), or null: the room channel a session is
 * subscribed to from its creation (PROTOCOL.md §8.5). URLSearchParams is the WHATWG
 * application/x-www-form-urlencoded parser, the one the server's form_urlencoded implements, so
 * both read the same name (a percent-encoded key, `+` for a space and bytes that are not UTF-8
 * alike).
 */
export function room(url) {
    // The query as Endpoint::parse takes it: after the first '?', before the fragment.
    const query = /^[^#?]*\?([^#]*)/.exec(url);
    return query && new URLSearchParams(query[1]).get('room');
}

/**
 * The constructor's options, validated in one pass over the object in key order (the first
 * problem found is thrown, as error('invalid-argument', ...), with a message that names the
 * option and what it must be) and flattened for the wasm (src/client/options.rs), NaN where an
 * option was not given: [3 transport indexes into TRANSPORTS, connectTimeoutMs, reconnect (0
 * never, 1 on), initialDelayMs, maxDelayMs, multiplier, maxAttempts (Infinity: unlimited),
 * outbox maxMessages, outbox maxBytes]. The default reconnect delays come from the wasm, for
 * the check that maxDelayMs is not below initialDelayMs.
 */
export function options(value, defaultInitialDelayMs, defaultMaxDelayMs) {
    const flat = new Float64Array(13).fill(NaN);
    // Calls each(key, value) for every own enumerable key whose value is not undefined (which
    // means the default, as in most JS APIs; a getter that throws counts as undefined); false
    // from it is an unknown key.
    const entries = (object, name, known, each) => {
        if (typeof object !== 'object' || object === null || Array.isArray(object)) {
            refuse(name ? "option '" + name + "' must be an object" : 'options must be an object');
        }
        for (const key of Object.keys(object)) {
            let item;
            try {
                item = object[key];
            } catch {}
            if (item === undefined) continue;
            if (!each(key, item)) refuse("unknown option '" + (name ? name + '.' : '') + key + "' (expected one of " + known + ')');
        }
    };
    const integer = (item, name, min, max, slot) => {
        if (!(typeof item === 'number' && item >= min && item <= max && Number.isInteger(item))) {
            refuse("option '" + name + "' must be a whole number from " + min + ' to ' + max);
        }
        flat[slot] = item;
    };
    if (value === undefined || value === null) return flat;
    entries(value, '', 'transports, connectTimeoutMs, reconnect, outbox, token, credentials', (key, item) => {
        if (key === 'transports') {
            if (!Array.isArray(item)) refuse("option 'transports' must be an array of 'websocket', 'sse', 'long-polling'");
            const length = item.length;
            if (length === 0) refuse("option 'transports' must name at least one transport");
            const seen = [];
            for (let at = 0; at < length; at++) {
                const name = typeof item[at] === 'string' ? item[at] : '';
                const index = TRANSPORTS.indexOf(name);
                if (index < 0) refuse("unknown transport '" + name + "' (expected one of 'websocket', 'sse', 'long-polling')");
                if (seen.includes(index)) refuse("option 'transports' names '" + name + "' twice");
                flat[seen.push(index) - 1] = index;
            }
        } else if (key === 'connectTimeoutMs') {
            integer(item, key, 1, 600000, 3);
        } else if (key === 'reconnect') {
            flat[4] = item === false ? 0 : 1;
            if (typeof item === 'boolean') return true;
            entries(item, key, 'initialDelayMs, maxDelayMs, multiplier, maxAttempts', (key, item) => {
                if (key === 'initialDelayMs') integer(item, 'reconnect.initialDelayMs', 0, 3600000, 5);
                else if (key === 'maxDelayMs') integer(item, 'reconnect.maxDelayMs', 0, 3600000, 6);
                else if (key === 'multiplier') {
                    if (!(typeof item === 'number' && item >= 1 && item <= 100)) refuse("option 'reconnect.multiplier' must be a number from 1 to 100");
                    flat[7] = item;
                } else if (key === 'maxAttempts') {
                    if (item === null || item === Infinity) flat[8] = Infinity;
                    else integer(item, 'reconnect.maxAttempts', 0, 4294967295, 8);
                } else return false;
                return true;
            });
            const initial = flat[5] === flat[5] ? flat[5] : defaultInitialDelayMs;
            const max = flat[6] === flat[6] ? flat[6] : defaultMaxDelayMs;
            if (max < initial) refuse("option 'reconnect.maxDelayMs' must not be below 'reconnect.initialDelayMs'");
        } else if (key === 'token') {
            // Its value is never shown (PROTOCOL.md §9.6): only its type.
            if (typeof item !== 'string' && typeof item !== 'function') {
                refuse("option 'token' must be a string or a function returning a string or a Promise of one, not " + (item === null ? 'null' : typeof item));
            }
            flat[11] = 1;
        } else if (key === 'credentials') {
            flat[12] = CREDENTIALS.indexOf(item);
            if (flat[12] < 0) refuse("option 'credentials' must be 'include', 'same-origin' or 'omit'");
        } else if (key === 'outbox') {
            entries(item, key, 'maxMessages, maxBytes', (key, item) => {
                if (key === 'maxMessages') integer(item, 'outbox.maxMessages', 1, 1000000, 9);
                else if (key === 'maxBytes') integer(item, 'outbox.maxBytes', 1, 1073741824, 10);
                else return false;
                return true;
            });
        } else return false;
        return true;
    });
    return flat;
}

/**
 * What was thrown, as a message: its `message` if it is an object with a string one (an Error,
 * a DOMException; a getter that throws reads as none), else the value if it is a string, else
 * 'unknown error'. For listener errors here and for the transports (js_error_message in
 * src/transport/mod.rs).
 */
export function messageOf(thrown) {
    let message;
    if (typeof thrown === 'object' && thrown !== null) {
        try {
            message = thrown.message;
        } catch {}
    }
    return typeof message === 'string' ? message : typeof thrown === 'string' ? thrown : 'unknown error';
}

const KINDS = ['text', 'json', 'binary'];
// Event names with a fixed meaning, which emit() refuses; and what a name must be otherwise
// (is_valid_event_name in src/core/wire.rs: 1-64 bytes, all of them in the class).
const LIFECYCLE = ['open', 'close', 'error', 'state', 'transport', 'reconnecting', 'reset', 'message'];
const NAME = /^[A-Za-z0-9_.:/-]{1,64}$/;
const BAD_NAME = 'event name must be 1-64 characters of A-Z a-z 0-9 _ . : / -';

/** Throws the Error for an event name that emit() refuses. */
export function emittable(event) {
    if (LIFECYCLE.includes(event)) refuse("'" + event + "' is a lifecycle event name and cannot be emitted");
    if (!NAME.test(event)) refuse(BAD_NAME);
}

// A channel name (is_valid_channel_name in src/core/wire/channels.rs) and an epoch on the wire.
const CHANNEL = /^[A-Za-z0-9_.:/-]{1,128}$/;
const EPOCH = /^[0-9a-f]{16}$/;
// Event names with a fixed meaning on a Subscription, which its emit() refuses.
const SUB_LIFECYCLE = ['message', 'subscribed', 'unsubscribed', 'gap', 'error'];

/**
 * subscribe()'s arguments, validated (throws error('invalid-argument', ...)): the channel name,
 * and `options.since` = { offset: a whole number from 0 to 2^53 - 1, epoch: 16 lowercase hex
 * digits }. Returns [epoch, offset] of since, or [] without one.
 */
function since(channel, options) {
    if (typeof channel !== 'string' || !CHANNEL.test(channel)) refuse('channel name must be 1-128 characters of A-Z a-z 0-9 _ . : / -');
    if (options === undefined || options === null) return [];
    if (typeof options !== 'object') refuse('subscribe options must be an object');
    for (const key of Object.keys(options)) {
        if (key !== 'since') refuse("unknown subscribe option '" + key + "' (expected since)");
    }
    const position = options.since;
    if (position === undefined || position === null) return [];
    if (typeof position !== 'object') refuse("option 'since' must be { offset, epoch }");
    const { offset, epoch } = position;
    if (!(typeof offset === 'number' && Number.isSafeInteger(offset) && offset >= 0)) refuse("option 'since.offset' must be a whole number from 0 to 2^53 - 1");
    if (typeof epoch !== 'string' || !EPOCH.test(epoch)) refuse("option 'since.epoch' must be the 16 hex digits of an epoch the server sent");
    return [epoch, offset];
}

// The listener registry of one client or one subscription: on(), off(), and emit(event, a, b),
// which calls every listener of `event` subscribed now (one unsubscribed meanwhile, perhaps by
// an earlier listener of this very event, is skipped) and reports a listener that throws as an
// 'error' (on the console, if it was an 'error' listener).
function registry(lifecycle) {
    // id -> [event, listener], in the order they were added. Ids are never reused, so the
    // function on() returns (the map's delete bound to the map and the id) is safe to call at
    // any time, also after the client was closed or freed.
    const listeners = new Map();
    let next = 0;
    const emit = (event, first, second) => {
        for (const [id, [name, listener]] of [...listeners]) {
            if (name !== event || !listeners.has(id)) continue;
            try {
                listener(first, second);
            } catch (thrown) {
                if (event === 'error') {
                    console.error(thrown);
                } else {
                    const value = error('listener-threw', "a listener of '" + event + "' threw: " + messageOf(thrown));
                    value.cause = thrown;
                    emit('error', value);
                }
            }
        }
    };
    return {
        listeners,
        emit,
        // Throws the Error for a name that is neither a lifecycle name nor valid, or a listener
        // that is not a function.
        on(event, listener) {
            if (!lifecycle.includes(event) && !NAME.test(event)) refuse(BAD_NAME);
            if (typeof listener !== 'function') refuse('listener must be a function');
            const id = ++next;
            listeners.set(id, [event, listener]);
            return listeners.delete.bind(listeners, id);
        },
        off(event, listener) {
            for (const [id, [name, added]] of listeners) {
                if (name === event && added === listener) listeners.delete(id);
            }
        },
    };
}

/**
 * The registry and promises of one client. `room` is the channel of the URL's room= (or
 * undefined); `call([op, channel, event, data])` reaches the wasm for a Subscription (op 0
 * publish, 1 emit, 2 unsubscribe; it returns the promise of a publish) and is a wasm closure
 * that dies with the client: after 'freed' nothing calls it.
 */
export function hub(room, call, options) {
    // The token option (validated by options()), read once: a string or a function.
    let source;
    try {
        source = options?.token;
    } catch {}
    const client = registry(LIFECYCLE);
    const { listeners, emit } = client;
    // id -> [resolve, reject] of every unsettled send, in id order (ids only grow).
    const sends = new Map();
    // [resolve, reject] of every connect() waiting for the session to open.
    let waiters = [];
    // The app called close(): drop every listener once the 'close' event has been dispatched.
    let dropAtClose = false;
    // info.seq: the messages delivered in this session, counting from 1 (a fresh session starts
    // again). Not the wire seq, which the channel frames share (the room's `subscribed` is s=1).
    let delivered = 0;
    // channel -> { sub, events, settle, ended } of every live Subscription (ended ones are
    // removed, so subscribe() after an end makes a new one). `freed`: the client is gone.
    const subscriptions = new Map();
    let freed = false;
    // Ends a Subscription for good: it leaves the map, ready rejects if still pending, its
    // 'unsubscribed' listeners run, then its listeners are dropped.
    const end = (channel, code, reason) => {
        const entry = subscriptions.get(channel);
        if (!entry) return;
        subscriptions.delete(channel);
        entry.ended = true;
        entry.settle[1](error(code, reason));
        entry.events.emit('unsubscribed', { channel, code, reason });
        entry.events.listeners.clear();
    };

    // The Subscription of `channel` (made now if there is none).
    const subscription = (channel) => {
        const entry = subscriptions.get(channel);
        if (entry) return entry.sub;
        const events = registry(SUB_LIFECYCLE);
        let settle;
        const ready = new Promise((resolve, reject) => (settle = [resolve, reject]));
        // A refusal the app does not await is not an unhandled rejection.
        ready.catch(() => {});
        const made = { events, settle, ended: false };
        const invoke = (op, event, data) =>
            made.ended || freed ? reject(error('unsubscribed', "the subscription to '" + channel + "' has ended")) : call([op, channel, event, data]);
        made.sub = {
            channel,
            ready,
            on: events.on,
            off: events.off,
            publish: (data) => invoke(0, undefined, data),
            emit(event, data) {
                if (SUB_LIFECYCLE.includes(event)) refuse("'" + event + "' is a subscription event name and cannot be emitted");
                emittable(event);
                return invoke(1, event, data);
            },
            unsubscribe() {
                if (!made.ended && !freed) call([2, channel]);
            },
        };
        subscriptions.set(channel, made);
        return made.sub;
    };

    // Settles every waiting connect(): resolved (no error) or rejected with error().
    const settle = (code, message) => {
        const settled = waiters;
        waiters = [];
        for (const [resolve, reject] of settled) {
            code ? reject(error(code, message)) : resolve();
        }
    };

    return {
        on: client.on,
        off: client.off,
        // connect(): resolved at once if the session is open, else at the next 'open'.
        wait(open) {
            return open ? Promise.resolve() : new Promise((resolve, reject) => waiters.push([resolve, reject]));
        },
        // The promise of the send with this id, settled by delivered() or failed().
        send(id) {
            return new Promise((resolve, reject) => sends.set(id, [resolve, reject]));
        },
        // Every other event of the session, and what the client tells its JS half, through one
        // import (src/client/mod.rs, `Js`, numbers the kinds in this order): strings a, b, c
        // (undefined where absent) and numbers x, y.
        event(kind, a, b, c, x, y) {
            switch (kind) {
                case 0: // state: a the state
                    return emit('state', a);
                case 1: // open: a session id, b transport, x resumed (0 or 1)
                    if (x !== 1) delivered = 0;
                    settle();
                    return emit('open', { sessionId: a, transport: b, resumed: x === 1 });
                case 2: // transport: a from (absent: null), b to, c reason
                    return emit('transport', { from: a ?? null, to: b, reason: c });
                case 3: // reconnecting: x attempt, y delay, a reason
                    return emit('reconnecting', { attempt: x, delayMs: y, reason: a });
                case 4: // reset: a reason
                    return emit('reset', { reason: a });
                case 5: // error: a code, b message
                    return emit('error', error(a, b));
                case 6: // close: x code, a reason, b the error code of why (for waiting connects)
                    settle(b, 'closed before the session opened: ' + a);
                    for (const channel of [...subscriptions.keys()]) end(channel, 'closed', 'client closed: ' + a);
                    emit('close', { code: x, reason: a });
                    if (dropAtClose) {
                        dropAtClose = false;
                        listeners.clear();
                    }
                    return;
                case 7: // delivered: every send with an id up to x
                    for (const [id, [resolve]] of sends) {
                        if (id > x) break;
                        sends.delete(id);
                        resolve();
                    }
                    return;
                case 8: { // failed: the send with id x, a code, b reason
                    const pending = sends.get(x);
                    if (pending) {
                        sends.delete(x);
                        pending[1](error(a, b));
                    }
                    return;
                }
                case 9: { // freed: nothing can settle the promises any more
                    const value = error('closed', 'client was freed');
                    freed = true;
                    for (const channel of [...subscriptions.keys()]) end(channel, 'closed', 'client was freed');
                    for (const [, [, reject]] of sends) reject(value);
                    sends.clear();
                    const settled = waiters;
                    waiters = [];
                    for (const [, reject] of settled) reject(value);
                    return;
                }
                case 10: // closing: the app called close(), drop the listeners after 'close'
                    dropAtClose = true;
                    return;
                case 11: { // subscribed: a channel, b epoch, x offset (the top), y recovered (0 or 1)
                    const entry = subscriptions.get(a);
                    if (!entry) return;
                    entry.settle[0]();
                    return entry.events.emit('subscribed', { channel: a, epoch: b, offset: x, recovered: y === 1 });
                }
                case 12: // unsubscribed, for good: a channel, b code, c reason
                    return end(a, b, c);
                case 13: // gap: a channel, b epoch, x from, y to
                    return subscriptions.get(a)?.events.emit('gap', { channel: a, epoch: b, from: x, to: y });
                case 14: // a subscription's error (it goes on): a channel, b code, c message
                    return subscriptions.get(a)?.events.emit('error', error(b, c));
            }
        },
        // subscribe()'s arguments validated by since(), then the Subscription of `channel` (made
        // now if there is none): [subscription, epoch, offset] (the position of `since`, if
        // given). The wasm tells the session next.
        subscribe(channel, options) {
            const position = since(channel, options);
            return [subscription(channel), ...position];
        },
        subscriptions() {
            return [...subscriptions.values()].map((entry) => entry.sub);
        },
        // Calls the token source and answers the wasm: call([3, credential]) or call([4, why it
        // failed). The why never holds a credential: a wrong type is named by its type.
        token() {
            const failed = (thrown) => freed || call([4, 'the token function threw or rejected: ' + messageOf(thrown)]);
            const answer = (value) => freed || call(typeof value === 'string' ? [3, value] : [4, 'the token function must return a string or a Promise of one, not ' + (value === null ? 'null' : typeof value)]);
            let value;
            try {
                value = typeof source === 'function' ? source() : source;
            } catch (thrown) {
                return failed(thrown);
            }
            if (typeof value?.then === 'function') Promise.resolve(value).then(answer, failed);
            else answer(value);
        },
        // kind: 0 text, 1 json (data the text, parsed here), 2 binary; event undefined if unnamed.
        // A channel's message has its channel, epoch and offset: the room's goes to the client's
        // listeners (as before channels) and to the room's Subscription if the app made one.
        message(event, kind, data, channel, epoch, offset, from) {
            const seq = ++delivered;
            if (kind === 1) {
                try {
                    data = JSON.parse(data);
                } catch {
                    emit('error', error('protocol', 'server sent a json message that does not parse'));
                    return;
                }
            }
            event = event ?? null;
            const name = event ?? 'message';
            from = from ?? null;
            if (channel === undefined || channel === room) emit(name, data, { event, seq, kind: KINDS[kind], from });
            // (No Subscription has the key undefined: an unnamed channel finds none.)
            subscriptions.get(channel)?.events.emit(name, data, { channel, epoch, offset, event, seq, kind: KINDS[kind], from });
        },
    };
}
