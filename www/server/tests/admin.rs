//! The admin surface over real sockets: `GET /metrics`, `GET /realtime/stats` and
//! `POST /realtime/kick` need `Authorization: Bearer <admin token>`. No token configured: 403
//! saying how to enable them; a missing or wrong token: 401; each refusal counted as
//! `admin_refused`. With `--admin-listen` they move to their own listener. Through the binary:
//! the token comes from `--admin-token-file` or `REALTIME_ADMIN_TOKEN` and never shows up in
//! the server's output.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

use common::{Server, WsClient, LIMIT};
use realtime_server::admin::{self, AdminConfig};
use realtime_server::metrics::LimitKind;
use realtime_server::Config;

const TOKEN: &str = "admin-test-token-0123456789";

/// (method, path) of every admin endpoint.
const ENDPOINTS: [(&str, &str); 3] = [("GET", "/metrics"), ("GET", "/realtime/stats"), ("POST", "/realtime/kick?sid=x")];

async fn call(base: &str, method: &str, path: &str, authorization: Option<&str>) -> reqwest::Response {
    let client = reqwest::Client::new();
    let url = format!("{base}{path}");
    let mut request = if method == "POST" { client.post(url) } else { client.get(url) };
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    tokio::time::timeout(LIMIT, request.send()).await.expect("answered in time").unwrap()
}

fn base(server: &Server) -> String {
    format!("http://{}", server.addr)
}

#[tokio::test]
async fn without_a_configured_token_every_admin_endpoint_says_how_to_enable_it() {
    let server = Server::start(Config { allow_kick: true, ..Config::default() }).await;
    for (method, path) in ENDPOINTS {
        // Even a request that brings some token: there is nothing to compare it with.
        for authorization in [None, Some("Bearer admin-test-token-0123456789")] {
            let response = call(&base(&server), method, path, authorization).await;
            assert_eq!(response.status(), 403, "{method} {path}");
            let text = response.text().await.unwrap();
            assert!(text.contains("--admin-token-file") && text.contains("REALTIME_ADMIN_TOKEN"), "{text}");
        }
    }
    assert_eq!(server.state.metrics.trips(LimitKind::admin_refused), 6);
}

#[tokio::test]
async fn a_missing_or_wrong_token_gets_401_and_is_counted() {
    let server = Server::start(Config { allow_kick: true, admin: AdminConfig::with_token(TOKEN).expect("a valid admin token"), ..Config::default() }).await;
    let wrong = [
        None,
        Some("Bearer wrong-token-0123456789xx".to_owned()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_owned()),
    ];
    for (method, path) in ENDPOINTS {
        for authorization in &wrong {
            let response = call(&base(&server), method, path, authorization.as_deref()).await;
            assert_eq!(response.status(), 401, "{method} {path} with {authorization:?}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer realm=\"realtime-admin\"");
        }
    }
    let refused = (ENDPOINTS.len() * wrong.len()) as u64;
    assert_eq!(server.state.metrics.trips(LimitKind::admin_refused), refused);
    // The refusals are visible in the metrics themselves.
    let response = call(&base(&server), "GET", "/metrics", Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.contains(&format!("realtime_limit_trips_total{{kind=\"admin_refused\"}} {refused}")), "{text}");
}

#[tokio::test]
async fn the_right_token_opens_metrics_stats_and_kick() {
    let server = Server::start(Config { allow_kick: true, admin: AdminConfig::with_token(TOKEN).expect("a valid admin token"), ..Config::default() }).await;
    let bearer = format!("Bearer {TOKEN}");
    let mut client = WsClient::connect(&server.ws_url("room=admin&rt_v=2&rt_conn=1")).await;
    let hello = client.hello().await;

    let response = call(&base(&server), "GET", "/metrics", Some(&bearer)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], admin::METRICS_CONTENT_TYPE);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let text = response.text().await.unwrap();
    for name in [
        "realtime_sessions 1",
        "realtime_limit_trips_total{kind=\"sessions_per_ip\"} 0",
        "realtime_messages_in_total",
        "realtime_messages_out_total",
        "realtime_replay_bytes",
        "realtime_slow_consumer_cuts_total",
        "realtime_connections",
        "# TYPE realtime_transports gauge",
    ] {
        assert!(text.contains(name), "no {name:?} in\n{text}");
    }

    let response = call(&base(&server), "GET", "/realtime/stats", Some(&bearer)).await;
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains(r#""websocket":{"http1":1,"http2":0}"#));

    let kicked = call(&base(&server), "POST", &format!("/realtime/kick?sid={}", hello.session_id), Some(&bearer)).await;
    assert_eq!(kicked.status(), 204);
    assert!(client.next().await.is_none(), "the kicked socket ends");
    assert_eq!(server.state.metrics.trips(LimitKind::admin_refused), 0);
}

#[tokio::test]
async fn the_token_does_not_replace_allow_kick() {
    let server = Server::start(Config { admin: AdminConfig::with_token(TOKEN).expect("a valid admin token"), ..Config::default() }).await;
    let response = call(&base(&server), "POST", "/realtime/kick?sid=x", Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(response.status(), 403);
    assert!(response.text().await.unwrap().contains("--allow-kick"));
}

#[tokio::test]
async fn an_allowed_origin_can_preflight_and_read_the_stats_with_the_token() {
    let config = Config { allowed_origins: vec!["https://app.example".into()], admin: AdminConfig::with_token(TOKEN).expect("a valid admin token"), ..Config::default() };
    let server = Server::start(config).await;
    let preflight = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, server.url("/realtime/stats"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204, "a preflight carries no credentials and must not need them");
    assert_eq!(preflight.headers()["access-control-allow-headers"], "authorization");
    let response = reqwest::Client::new()
        .get(server.url("/realtime/stats"))
        .header("origin", "https://app.example")
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], "https://app.example");
    let foreign = reqwest::Client::new()
        .get(server.url("/realtime/stats"))
        .header("origin", "https://evil.example")
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
}

#[tokio::test]
async fn admin_listen_moves_the_admin_routes_off_the_public_listener() {
    let listen = "127.0.0.1:0".parse().unwrap();
    let config = Config { admin: AdminConfig { listen: Some(listen), ..AdminConfig::with_token(TOKEN).expect("a valid admin token") }, ..Config::default() };
    let public = Server::start(config).await;
    let bearer = format!("Bearer {TOKEN}");
    for (method, path) in ENDPOINTS {
        // Not routed there: what is left is the static files' answer (404, or 405 to a POST).
        let status = call(&base(&public), method, path, Some(&bearer)).await.status();
        assert!(status == 404 || status == 405, "{method} {path} on the public listener: {status}");
    }
    // The admin router on its own socket, over the same state.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_base = format!("http://{}", listener.local_addr().unwrap());
    let router = admin::router(public.state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    assert_eq!(call(&admin_base, "GET", "/metrics", Some(&bearer)).await.status(), 200);
    assert_eq!(call(&admin_base, "GET", "/realtime/stats", Some(&bearer)).await.status(), 200);
    assert_eq!(call(&admin_base, "GET", "/metrics", None).await.status(), 401);
    assert_eq!(call(&admin_base, "GET", "/realtime/sse?room=a", Some(&bearer)).await.status(), 404, "only admin routes there");
}

/// The binary with `args` and `env`, its stdout's first `listening on` line read (it prints
/// `admin listening on ...` first when asked to): (child, public base, admin base).
fn start_binary(args: &[&str], env: &[(&str, &str)]) -> (Child, String, Option<String>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_realtime-server"));
    command.args(["--listen", "127.0.0.1:0"]).args(args).env_remove(admin::TOKEN_ENV).env("RUST_LOG", "debug");
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut admin_base = None;
    // At most two lines: the admin listener's, then the public one.
    for _ in 0..2 {
        let line = lines.next().expect("a listening line").unwrap();
        if let Some(address) = line.strip_prefix("admin listening on ") {
            admin_base = Some(address.to_owned());
        } else if let Some(address) = line.strip_prefix("listening on ") {
            return (child, address.to_owned(), admin_base);
        }
    }
    panic!("no listening line");
}

/// Stops the child and returns everything it wrote to stderr (its log).
fn stop(mut child: Child) -> String {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = std::time::Instant::now() + LIMIT;
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the server did not stop");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    log
}

#[tokio::test]
async fn the_binary_takes_the_token_from_a_file_or_the_environment_and_never_prints_it() {
    let dir = std::env::temp_dir().join(format!("realtime-admin-binary-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let file_arg = file.to_str().unwrap();
    let bearer = format!("Bearer {TOKEN}");

    let (child, base, _) = start_binary(&["--admin-token-file", file_arg, "--allow-kick"], &[]);
    assert_eq!(call(&base, "GET", "/metrics", Some(&bearer)).await.status(), 200);
    assert_eq!(call(&base, "GET", "/metrics", Some("Bearer not-the-token-at-all")).await.status(), 401);
    assert_eq!(call(&base, "POST", "/realtime/kick?sid=AAAAAAAAAAAAAAAAAAAAAA", Some(&bearer)).await.status(), 404);
    let log = stop(child);
    assert!(!log.contains(TOKEN), "the token appears in the log:\n{log}");

    let (child, base, admin_base) = start_binary(&["--admin-listen", "127.0.0.1:0"], &[(admin::TOKEN_ENV, TOKEN)]);
    let admin_base = admin_base.expect("an admin listener");
    assert_eq!(call(&admin_base, "GET", "/realtime/stats", Some(&bearer)).await.status(), 200);
    assert_eq!(call(&base, "GET", "/realtime/stats", Some(&bearer)).await.status(), 404);
    let log = stop(child);
    assert!(!log.contains(TOKEN), "the token appears in the log:\n{log}");

    // Both sources at once, or a weak token: refused at start, without echoing the secret.
    for (args, env) in [
        (vec!["--admin-token-file", file_arg], vec![(admin::TOKEN_ENV, TOKEN)]),
        (vec![], vec![(admin::TOKEN_ENV, "tooshort")]),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_realtime-server"))
            .args(["--listen", "127.0.0.1:0"])
            .args(&args)
            .env_remove(admin::TOKEN_ENV)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + LIMIT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("the server started with {args:?} instead of refusing");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(2), "{args:?}");
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        assert!(stderr.contains("admin token"), "{stderr}");
        assert!(!stderr.contains(TOKEN) && !stderr.contains("tooshort"), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
