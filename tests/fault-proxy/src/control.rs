//! Control port: plain HTTP/1.1, one request per connection, query strings only (a browser
//! `fetch(url, {method: 'POST'})` then needs no preflight). Loopback origins get CORS
//! headers; any other Origin gets 403, so a stray web page cannot drive the proxy.
//!
//! `GET|POST /mode?websocket=..&sse=..&poll=..&http=..&cut_after_bytes=N|none`,
//! `POST /reset`, `POST /cut`, `POST /blackhole`, `POST /reset-connections`, `GET /stats`.
//!
//! With `--spawn-upstream` (the proxy runs its upstream itself):
//! - `POST /restart-upstream`: SIGKILL the upstream (a crash: no graceful shutdown, every
//!   session lost), reap it, cut every live connection (FIN), start the command again on the
//!   same address, wait for its `listening on` line; then 200
//!   `{"restarted":true,"upstream":"http://ADDR","pid":N,"old_pid":N,"cut":N}`. 500 with a
//!   text body when the new process does not come up (a later restart tries again); 409
//!   without `--spawn-upstream`.
//! - `GET /upstream`: `{"spawned":bool,"upstream":"http://ADDR","pid":N|null,"restarts":N}`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::head::{is_loopback_origin, read_request_head, simple_response, HeadError, RequestHead};
use crate::mode::Modes;
use crate::relay::reply_and_close;
use crate::{lock, Ctl, Shared};

pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let (mut r, w) = stream.into_split();
            let response = match read_request_head(&mut r).await {
                Ok((head, _)) => answer(&shared, &head).await,
                Err(HeadError::Empty | HeadError::Io(_)) => return,
                Err(_) => simple_response(400, "Bad Request", "text/plain", "bad request head\n", None, ""),
            };
            reply_and_close(r, w, response).await;
        });
    }
}

async fn answer(shared: &Shared, head: &RequestHead) -> Vec<u8> {
    let origin = head.header("origin");
    if origin.is_some_and(|o| !is_loopback_origin(o)) {
        return simple_response(403, "Forbidden", "text/plain", "fault-proxy control: loopback origins only\n", None, "");
    }
    let text = |status: u16, reason: &str, body: String| simple_response(status, reason, "text/plain; charset=utf-8", &body, origin, "");
    let ok = |v: Value| simple_response(200, "OK", "application/json", &v.to_string(), origin, "");
    let method = head.method.as_str();
    if method == "OPTIONS" {
        let extra = "Access-Control-Allow-Methods: POST, GET\r\nAccess-Control-Allow-Headers: content-type\r\nAccess-Control-Max-Age: 600\r\nAllow: GET, POST, OPTIONS\r\n";
        return simple_response(204, "No Content", "text/plain", "", origin, extra);
    }
    let path = head.path();
    let allowed: &[&str] = match path {
        "/mode" => &["GET", "POST"],
        "/stats" | "/upstream" => &["GET"],
        "/reset" | "/cut" | "/blackhole" | "/reset-connections" | "/restart-upstream" => &["POST"],
        _ => return text(404, "Not Found", format!("no such control endpoint: {path}\n")),
    };
    if !allowed.contains(&method) {
        return text(405, "Method Not Allowed", format!("{path} takes {}\n", allowed.join(" or ")));
    }
    match path {
        "/mode" if method == "GET" => ok(shared.modes().to_json()),
        "/mode" => {
            let mut modes = lock(&shared.modes);
            match modes.apply_query(head.query()) {
                Ok(()) => ok(modes.to_json()),
                Err(e) => text(400, "Bad Request", format!("{e}\n")),
            }
        }
        "/reset" => {
            let mut modes = lock(&shared.modes);
            *modes = Modes::default();
            ok(modes.to_json())
        }
        "/cut" => ok(json!({ "cut": shared.signal(&[Ctl::Relay, Ctl::Blackhole], Ctl::Cut) })),
        "/blackhole" => ok(json!({ "blackholed": shared.signal(&[Ctl::Relay], Ctl::Blackhole) })),
        "/reset-connections" => ok(json!({ "released": shared.signal(&[Ctl::Blackhole], Ctl::Release) })),
        "/upstream" => ok(shared.upstream_json()),
        "/restart-upstream" => match shared.restart_upstream().await {
            Ok(Some(v)) => ok(v),
            Ok(None) => text(409, "Conflict", "the proxy does not run its upstream (start it with --spawn-upstream -- CMD...)\n".to_owned()),
            Err(e) => {
                eprintln!("fault-proxy: upstream restart failed: {e}");
                text(500, "Internal Server Error", format!("upstream restart failed: {e}\n"))
            }
        },
        _ => ok(shared.stats_json()),
    }
}
