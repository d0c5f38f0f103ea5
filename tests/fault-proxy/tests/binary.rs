//! The `fault-proxy` executable as `.ci/browser-tests.sh` uses it: two address lines on
//! stdout, a working control port, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn prints_both_addresses_serves_control_and_exits_on_sigterm() {
    // Any loopback port works as upstream: only the control port is exercised.
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fault-proxy"))
        .args(["--listen", "127.0.0.1:0", "--control", "127.0.0.1:0", "--upstream"])
        .arg(upstream.local_addr().unwrap().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let proxy_line = lines.next().unwrap().unwrap();
    let control_line = lines.next().unwrap().unwrap();
    assert!(proxy_line.starts_with("proxy listening on http://127.0.0.1:"), "{proxy_line}");
    let control = control_line.strip_prefix("control listening on http://").expect(&control_line);

    let mut s = TcpStream::connect(control).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /mode?sse=buffer HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""sse":"buffer""#), "{response}");

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "no exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
}
