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

/** A promise rejected with error(code, message). */
export function rejected(code, message) {
    return Promise.reject(error(code, message));
}

/** The object stats() returns; rttMs and transport are undefined (from the wasm) or a value. */
export function stats(messagesIn, messagesOut, bytesIn, bytesOut, reconnects, fallbacks, upgrades, rttMs, transport, outbox) {
    return { messagesIn, messagesOut, bytesIn, bytesOut, reconnects, fallbacks, upgrades, rttMs: rttMs ?? null, transport: transport ?? null, outbox };
}

// What a listener threw, as a message: its `message` if it is an object with a string one (an
// Error, a DOMException), else the value if it is a string (js_error_message in
// src/transport/mod.rs).
function messageOf(thrown) {
    let message;
    if (typeof thrown === 'object' && thrown !== null) {
        try {
            message = thrown.message;
        } catch {}
    }
    return typeof message === 'string' ? message : typeof thrown === 'string' ? thrown : 'unknown error';
}

const KINDS = ['text', 'json', 'binary'];

/** The registry and promises of one client. */
export function hub() {
    // id -> [event, listener] of every live subscription, in the order they were added. Ids are
    // never reused, so the function on() returns (the map's delete bound to the map and the id)
    // is safe to call at any time, also after the client was closed or freed.
    const listeners = new Map();
    let next = 0;
    // id -> [resolve, reject] of every unsettled send, in id order (ids only grow).
    const sends = new Map();
    // [resolve, reject] of every connect() waiting for the session to open.
    let waiters = [];
    // The app called close(): drop every listener once the 'close' event has been dispatched.
    let dropAtClose = false;

    // Calls every listener of `event` subscribed now (one unsubscribed meanwhile, perhaps by an
    // earlier listener of this very event, is skipped).
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
    // Settles every waiting connect(): resolved (no error) or rejected with error().
    const settle = (code, message) => {
        const settled = waiters;
        waiters = [];
        for (const [resolve, reject] of settled) {
            code ? reject(error(code, message)) : resolve();
        }
    };

    return {
        on(event, listener) {
            const id = ++next;
            listeners.set(id, [event, listener]);
            return listeners.delete.bind(listeners, id);
        },
        off(event, listener) {
            for (const [id, [name, added]] of listeners) {
                if (name === event && added === listener) listeners.delete(id);
            }
        },
        // connect(): resolved at once if the session is open, else at the next 'open'.
        wait(open) {
            return open ? Promise.resolve() : new Promise((resolve, reject) => waiters.push([resolve, reject]));
        },
        // The promise of the send with this id, settled by delivered() or failed().
        send(id) {
            return new Promise((resolve, reject) => sends.set(id, [resolve, reject]));
        },
        delivered(upTo) {
            for (const [id, [resolve]] of sends) {
                if (id > upTo) break;
                sends.delete(id);
                resolve();
            }
        },
        failed(id, code, reason) {
            const pending = sends.get(id);
            if (pending) {
                sends.delete(id);
                pending[1](error(code, reason));
            }
        },
        // The client is freed: nothing can settle its promises any more.
        free() {
            const value = error('closed', 'client was freed');
            for (const [, [, reject]] of sends) reject(value);
            sends.clear();
            const settled = waiters;
            waiters = [];
            for (const [, reject] of settled) reject(value);
        },
        closing() {
            dropAtClose = true;
        },
        state(state) {
            emit('state', state);
        },
        open(sessionId, transport, resumed) {
            settle();
            emit('open', { sessionId, transport, resumed });
        },
        // kind: 0 text, 1 json (data the text, parsed here), 2 binary; event undefined if unnamed.
        message(seq, event, kind, data) {
            if (kind === 1) {
                try {
                    data = JSON.parse(data);
                } catch {
                    emit('error', error('protocol', 'server sent a json message that does not parse'));
                    return;
                }
            }
            event = event ?? null;
            emit(event ?? 'message', data, { event, seq, kind: KINDS[kind] });
        },
        transport(from, to, reason) {
            emit('transport', { from: from ?? null, to, reason });
        },
        reconnecting(attempt, delayMs, reason) {
            emit('reconnecting', { attempt, delayMs, reason });
        },
        reset(reason) {
            emit('reset', { reason });
        },
        error(code, message) {
            emit('error', error(code, message));
        },
        close(code, reason, cause) {
            settle(cause, 'closed before the session opened: ' + reason);
            emit('close', { code, reason });
            if (dropAtClose) {
                dropAtClose = false;
                listeners.clear();
            }
        },
    };
}
