//! What a closed client gives back to the page: its window and document listeners, its user
//! listeners (the unsubscribe function stays safe to call), and its wasm memory.
//!
//! The listener test patches `addEventListener`/`removeEventListener` of `window` and
//! `document`, so these tests live in their own binary (wasm-bindgen-test runs the tests of one
//! binary one after another, in one page).
#![cfg(target_arch = "wasm32")]

mod support;

use js_sys::{ArrayBuffer, Function};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

use realtime_client::RealtimeClient;
use support::*;

wasm_bindgen_test_configure!(run_in_browser);

/// The page lifecycle events a client listens to, and on which target.
const WINDOW_EVENTS: [&str; 4] = ["online", "offline", "pageshow", "pagehide"];
const DOCUMENT_EVENTS: [&str; 1] = ["visibilitychange"];

/// Wraps `target.addEventListener`/`removeEventListener` (own properties shadowing the
/// prototype's) to count, per event type, calls and the listeners still attached.
const PATCH: &str = r#"
const originalAdd = target.addEventListener;
const originalRemove = target.removeEventListener;
const counts = {};
const entry = (type) => counts[type] || (counts[type] = { adds: 0, removes: 0, live: new Set() });
target.addEventListener = function (type, listener, options) {
    const c = entry(type);
    c.adds += 1;
    c.live.add(listener);
    return originalAdd.call(this, type, listener, options);
};
target.removeEventListener = function (type, listener, options) {
    const c = entry(type);
    if (c.live.delete(listener)) c.removes += 1;
    return originalRemove.call(this, type, listener, options);
};
return {
    count(type) { const c = entry(type); return [c.adds, c.removes, c.live.size]; },
    restore() { delete target.addEventListener; delete target.removeEventListener; },
};
"#;

struct Patched {
    name: &'static str,
    patch: JsValue,
}

impl Patched {
    fn install(name: &'static str, target: &JsValue) -> Patched {
        assert!(!has_own(target, "addEventListener"), "{name} already has its own addEventListener");
        let install = Function::new_with_args("target", PATCH);
        Patched { name, patch: install.call1(&JsValue::NULL, target).expect("patch installs") }
    }

    /// `(adds, removes, still attached)` for `event` since the patch.
    fn count(&self, event: &str) -> (u32, u32, u32) {
        let count: Function = get(&self.patch, "count").unchecked_into();
        let triple: js_sys::Array = count.call1(&self.patch, &JsValue::from_str(event)).unwrap().unchecked_into();
        let at = |index| triple.get(index).as_f64().unwrap() as u32;
        (at(0), at(1), at(2))
    }

    fn restore(&self) {
        let restore: Function = get(&self.patch, "restore").unchecked_into();
        restore.call0(&self.patch).expect("patch restores");
    }
}

fn has_own(target: &JsValue, key: &str) -> bool {
    js_sys::Object::has_own(target.unchecked_ref::<js_sys::Object>(), &JsValue::from_str(key))
}

/// Records what reaches the page's `error` and `unhandledrejection` events (an exception thrown
/// by a microtask or timer callback lands there) until `stop()`.
const CATCH: &str = r#"
const errors = [];
const record = (event) => errors.push(String(event.error || event.reason || event.message));
window.addEventListener('error', record);
window.addEventListener('unhandledrejection', record);
return {
    errors,
    stop() { window.removeEventListener('error', record); window.removeEventListener('unhandledrejection', record); },
};
"#;

/// Calls the JS `free()` of a client (what a JS caller does), consuming it.
fn free(client: RealtimeClient) {
    let object = JsValue::from(client);
    let free: Function = get(&object, "free").dyn_into().expect("free is a method");
    free.call0(&object).expect("free() does not throw");
}

#[wasm_bindgen_test]
async fn close_releases_every_window_and_document_listener() {
    forget_rungs();
    let window = web_sys::window().expect("a window");
    let document = window.document().expect("a document");
    let on_window = Patched::install("window", &window);
    let on_document = Patched::install("document", &document);
    let all = |check: &dyn Fn(&Patched, &str)| {
        for event in WINDOW_EVENTS {
            check(&on_window, event);
        }
        for event in DOCUMENT_EVENTS {
            check(&on_document, event);
        }
    };

    let room = unique_room("release");
    const CONNECTED: u32 = 50;
    for index in 0..CONNECTED {
        let client = client(&room, &JsValue::UNDEFINED);
        JsFuture::from(client.connect()).await.expect("connects");
        // While open: exactly one listener per lifecycle event (so the patch sees the client).
        all(&|patched, event| {
            let (adds, removes, live) = patched.count(event);
            assert_eq!(live, 1, "client {index} open: {} {event}: {adds} adds, {removes} removes, {live} attached", patched.name);
        });
        client.close();
        all(&|patched, event| {
            let (adds, removes, live) = patched.count(event);
            assert_eq!(live, 0, "client {index} closed: {} {event}: {adds} adds, {removes} removes, {live} attached", patched.name);
        });
        free(client);
    }
    // Closed while still connecting: the connect() promise rejects, the listeners go.
    for _ in 0..20 {
        let client = client(&room, &JsValue::UNDEFINED);
        let connecting = JsFuture::from(client.connect());
        client.close();
        let error = connecting.await.expect_err("connect() rejects when closed first");
        assert_eq!(get(&error, "code").as_string().as_deref(), Some("closed"), "{}", describe(&error, &JsValue::UNDEFINED));
        free(client);
    }
    // Never connected: nothing to add, nothing left.
    for _ in 0..500 {
        let client = client(&room, &JsValue::UNDEFINED);
        client.on("message", noop().into()).unwrap();
        client.close();
        free(client);
    }
    all(&|patched, event| {
        let (adds, removes, live) = patched.count(event);
        log(&format!("release: {} {event}: {adds} adds, {removes} removes, {live} attached", patched.name));
        assert!(adds >= CONNECTED + 20, "{} {event}: only {adds} adds (is the patch seeing the client?)", patched.name);
        assert_eq!((removes, live), (adds, 0), "{} {event}: listeners left attached", patched.name);
    });
    on_window.restore();
    on_document.restore();
    for (name, target) in [("window", JsValue::from(&window)), ("document", JsValue::from(&document))] {
        for method in ["addEventListener", "removeEventListener"] {
            assert!(!has_own(&target, method), "{name}.{method} is still patched");
        }
    }
}

#[wasm_bindgen_test]
async fn unsubscribing_is_safe_after_close_and_free_and_a_closed_client_stays_silent() {
    forget_rungs();
    let room = unique_room("silent");
    let client = client(&room, &JsValue::UNDEFINED);
    let names = ["message", "server", "open", "close", "error", "state", "transport", "reconnecting", "reset"];
    let recorders: Vec<Recorder> = names.iter().map(|name| Recorder::attach(&client, name)).collect();
    let never_unsubscribed = Recorder::attach(&client, "message");
    JsFuture::from(client.connect()).await.expect("connects");
    JsFuture::from(client.send(JsValue::from_str("before close"))).await.expect("acked");
    recorders[0].wait_for(1).await;
    client.close();
    let counts: Vec<usize> = recorders.iter().map(Recorder::len).collect();
    assert_eq!(counts[3], 1, "close fires once, during close()");

    // The room stays busy: a witness hears a publish and a message, the closed client nothing.
    let witness = support::client(&room, &JsValue::UNDEFINED);
    let heard = Recorder::attach(&witness, "message");
    let heard_server = Recorder::attach(&witness, "server");
    JsFuture::from(witness.connect()).await.expect("witness connects");
    publish(&room, Some("server"), "text/plain", "after close").await;
    JsFuture::from(witness.send(JsValue::from_str("from the witness"))).await.expect("acked");
    heard_server.wait_for(1).await;
    heard.wait_for(1).await;
    for ((name, recorder), before) in names.iter().zip(&recorders).zip(&counts) {
        assert_eq!(recorder.len(), *before, "a '{name}' listener registered before close() fired after it");
    }
    assert_eq!(never_unsubscribed.len(), 1);

    // Unsubscribing after close(), twice, then after free(): never throws.
    for recorder in &recorders {
        recorder.unsubscribe();
        recorder.unsubscribe();
    }
    free(client);
    for recorder in &recorders {
        recorder.unsubscribe();
    }
    never_unsubscribed.unsubscribe();

    // free() without close(), then the first unsubscribe.
    let other = support::client(&room, &JsValue::UNDEFINED);
    let listener = Recorder::attach(&other, "message");
    JsFuture::from(other.connect()).await.expect("connects");
    free(other);
    listener.unsubscribe();
    publish(&room, None, "text/plain", "after free").await;
    heard.wait_for(2).await;
    assert_eq!(listener.len(), 0, "a freed client's listener fired");
    witness.close();
}

fn memory_bytes() -> f64 {
    let memory: js_sys::WebAssembly::Memory = wasm_bindgen::memory().unchecked_into();
    memory.buffer().unchecked_into::<ArrayBuffer>().byte_length() as f64
}

/// 500 clients created, given a listener, closed and freed, then 20 that also connect.
async fn cycle_batch(room: &str) {
    for _ in 0..500 {
        let client = client(room, &JsValue::UNDEFINED);
        client.on("message", noop().into()).unwrap();
        client.close();
        free(client);
    }
    for _ in 0..20 {
        let client = client(room, &JsValue::UNDEFINED);
        client.on("message", noop().into()).unwrap();
        JsFuture::from(client.connect()).await.expect("connects");
        JsFuture::from(client.send(JsValue::from_str("x"))).await.expect("acked");
        client.close();
        free(client);
    }
}

#[wasm_bindgen_test]
async fn create_close_free_cycles_do_not_grow_the_wasm_memory() {
    forget_rungs();
    let room = unique_room("memory");
    const PAGE: f64 = 65_536.0;
    let start = memory_bytes();
    cycle_batch(&room).await;
    let warm = memory_bytes();
    cycle_batch(&room).await;
    let after = memory_bytes();
    // Control: the same 500 clients kept alive do show up in the measurement.
    let kept: Vec<RealtimeClient> = (0..500).map(|_| client(&room, &JsValue::UNDEFINED)).collect();
    let holding = memory_bytes();
    for client in kept {
        client.close();
        free(client);
    }
    log(&format!(
        "memory: start {start} B, after warm-up {warm} B, after second batch {after} B, holding 500 idle clients {holding} B"
    ));
    assert!(after - warm <= PAGE, "the second batch grew the wasm memory by {} B ({start} -> {warm} -> {after})", after - warm);
    assert!(
        holding - after > PAGE,
        "500 live clients grew the memory by only {} B: the measurement could not see a leak of this size",
        holding - after
    );
}

/// Defect: the promise of a `send()` whose own pump failed the transport synchronously never
/// settled (its entry was registered after the pump had already rejected nothing). A WebSocket
/// whose `send` throws makes that happen: with `reconnect: false` the failure closes the client
/// inside the very `send()` call, and the promise must still reject, with `closed`. (A message
/// that fills a batch by itself is handed over inside the call; smaller ones wait for the flush
/// at the end of the task, the next test.)
#[wasm_bindgen_test]
async fn a_send_failed_inside_its_own_call_still_settles() {
    send_fails_and_settles(&"d".repeat(64 * 1024), true).await;
}

/// The same failure in the flush at the end of the task: the client closes then, and the
/// promise rejects with `closed`.
#[wasm_bindgen_test]
async fn a_send_failed_in_its_flush_still_settles() {
    send_fails_and_settles("doomed", false).await;
}

async fn send_fails_and_settles(data: &str, inside_the_call: bool) {
    let options = js_sys::JSON::parse(r#"{"transports":["websocket"],"reconnect":false}"#).unwrap();
    let client = client(&unique_room("sync-failure"), &options);
    JsFuture::from(client.connect()).await.expect("opens");
    let prototype = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("WebSocket"))
        .and_then(|class| js_sys::Reflect::get(&class, &JsValue::from_str("prototype")))
        .expect("WebSocket.prototype");
    let original = js_sys::Reflect::get(&prototype, &JsValue::from_str("send")).unwrap();
    let throwing = Function::new_no_args("throw new Error('send refused by the test')");
    js_sys::Reflect::set(&prototype, &JsValue::from_str("send"), &throwing).unwrap();
    let promise = client.send(JsValue::from_str(data));
    let state_in_the_call = client.state().as_string();
    if !inside_the_call {
        wait_until(2_000, || client.state().as_string().as_deref() == Some("closed")).await;
    }
    js_sys::Reflect::set(&prototype, &JsValue::from_str("send"), &original).unwrap();
    if inside_the_call {
        assert_eq!(state_in_the_call.as_deref(), Some("closed"), "the failure closed the client at once");
    } else {
        assert_eq!(state_in_the_call.as_deref(), Some("open"), "a small send waits for the flush");
        assert_eq!(client.state().as_string().as_deref(), Some("closed"), "the failed flush closed the client");
    }
    // Bounded: a promise that never settles fails here instead of hanging the suite.
    let timeout = js_sys::Promise::new(&mut |resolve, _| {
        let window = web_sys::window().unwrap();
        window.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 2_000).unwrap();
    });
    let outcome = JsFuture::from(js_sys::Promise::race(&js_sys::Array::of2(&promise, &timeout))).await;
    let error = outcome.expect_err("the send rejects (it did not settle within 2 s otherwise)");
    assert_eq!(get(&error, "code").as_string().as_deref(), Some("closed"), "{}", error_message(&error));
}

/// Found in review: `close()` called inside a listener ran while the pump was busy, so it
/// dropped every listener before its own `close` event was dispatched.
#[wasm_bindgen_test]
async fn close_inside_a_listener_still_delivers_the_close_event() {
    use std::cell::RefCell;
    use std::rc::Rc;
    use wasm_bindgen::closure::Closure;

    let room = unique_room("close-in-listener");
    let holder: Rc<RefCell<Option<RealtimeClient>>> = Rc::new(RefCell::new(Some(client(&room, &only("websocket")))));
    let closes = {
        let guard = holder.borrow();
        let client = guard.as_ref().unwrap();
        JsFuture::from(client.connect()).await.expect("opens");
        Recorder::attach(client, "close")
    };
    let closer = holder.clone();
    let on_message = Closure::<dyn FnMut(JsValue, JsValue)>::new(move |_, _| {
        if let Some(client) = closer.borrow().as_ref() {
            client.close();
        }
    });
    let _unsubscribe = holder.borrow().as_ref().unwrap().on("message", on_message.as_ref().clone()).unwrap();
    publish(&room, None, "text/plain", "bye").await;
    closes.wait_for(1).await;
    assert_eq!(holder.borrow().as_ref().unwrap().state().as_string().as_deref(), Some("closed"));
}

#[wasm_bindgen_test]
async fn freeing_a_client_with_a_flush_pending_throws_nothing_and_sends_nothing_afterwards() {
    forget_rungs();
    let room = unique_room("flush-free");
    let catcher = Function::new_no_args(CATCH).call0(&JsValue::NULL).expect("the error recorder installs");
    let witness = client(&room, &only("websocket"));
    let heard = Recorder::attach(&witness, "message");
    JsFuture::from(witness.connect()).await.expect("witness connects");

    let doomed = client(&room, &only("websocket"));
    let doomed_heard = Recorder::attach(&doomed, "message");
    JsFuture::from(doomed.connect()).await.expect("connects");
    // Three sends wait for the flush at the end of this task; free() comes first.
    let sends: Vec<JsFuture> = (0..3).map(|index| JsFuture::from(doomed.send(JsValue::from_str(&format!("pending {index}"))))).collect();
    free(doomed);
    for send in sends {
        let error = send.await.expect_err("a send of a freed client rejects");
        assert_eq!(get(&error, "code").as_string().as_deref(), Some("closed"), "{}", describe(&error, &JsValue::UNDEFINED));
    }
    // free() said goodbye with them in the same message (as close() does); the flush that ran
    // after it found no client. Then a publish: the room hears each message once, in order.
    heard.wait_for(3).await;
    publish(&room, None, "text/plain", "after free").await;
    heard.wait_for(4).await;
    assert_eq!(texts(&heard.take()), ["pending 0", "pending 1", "pending 2", "after free"]);
    assert_eq!(doomed_heard.len(), 0, "a freed client's listener fired");
    let errors: js_sys::Array = get(&catcher, "errors").unchecked_into();
    let stop: Function = get(&catcher, "stop").unchecked_into();
    stop.call0(&catcher).expect("the error recorder stops");
    assert_eq!(errors.length(), 0, "the page saw errors: {:?}", errors.to_vec());
    witness.close();
}
