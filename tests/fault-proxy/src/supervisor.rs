//! `--spawn-upstream`: the proxy runs its upstream itself, so that a browser test can crash
//! and restart the server (`POST /restart-upstream`), which it could not do on its own.
//!
//! The command must print `listening on http://ADDR` on stdout once bound (realtime-server
//! does). The first run's ADDR is the upstream for the proxy's whole life: every restart
//! rewrites the command's `--listen` argument to it, so the port stays the same.
//!
//! Invariants:
//! - no orphan: the child leads its own process group, which is SIGKILLed on restart, on
//!   `FaultProxy` drop and on proxy shutdown; on Linux the child also gets
//!   `PR_SET_PDEATHSIG(SIGKILL)`, so even a SIGKILLed proxy takes it along. (PDEATHSIG fires
//!   when the *thread* that spawned the child ends: children are spawned from the main thread
//!   or tokio worker threads, which live as long as the runtime.)
//! - a restart is a crash: SIGKILL, no graceful shutdown, so the new process has lost every
//!   session.
//! - the child's stderr is the proxy's stderr; its stdout after the `listening on` line is
//!   copied to the proxy's stderr too (the proxy's stdout carries only its own address lines).

use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::{timeout_at, Instant};

/// Longest wait for the `listening on` line of one start.
pub const UPSTREAM_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a restart keeps retrying a command that exits before listening (the old
/// process's port briefly unavailable, e.g. TIME_WAIT without SO_REUSEADDR).
pub const REBIND_WINDOW: Duration = Duration::from_secs(10);
const REBIND_PAUSE: Duration = Duration::from_millis(100);

pub(crate) struct Supervisor {
    /// Program and arguments as given; `--listen` is rewritten for restarts.
    command: Vec<OsString>,
    /// The first run's address, for the proxy's whole life.
    pub(crate) addr: SocketAddr,
    child: Option<Child>,
    pub(crate) pid: Option<u32>,
    pub(crate) restarts: u64,
}

/// Why one start failed.
enum StartError {
    /// The command exited (or closed stdout) before its `listening on` line: may be retried.
    Exited(String),
    Fatal(io::Error),
}

impl Supervisor {
    /// Runs the command as given and waits for its `listening on` line.
    pub(crate) async fn start(command: Vec<OsString>) -> io::Result<Supervisor> {
        if listen_index(&command).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the upstream command needs a --listen ADDR argument (a restart pins it to the first run's address)",
            ));
        }
        match spawn_once(&command).await {
            Ok((child, addr)) => {
                let pid = child.id();
                Ok(Supervisor { command, addr, child: Some(child), pid, restarts: 0 })
            }
            Err(StartError::Exited(why)) => Err(io::Error::other(format!("the upstream command {why}"))),
            Err(StartError::Fatal(e)) => Err(e),
        }
    }

    /// SIGKILLs the child's process group and reaps the child.
    pub(crate) async fn kill(&mut self) {
        self.kill_now();
        if let Some(mut child) = self.child.take() {
            let _ = child.wait().await;
        }
        self.pid = None;
    }

    /// SIGKILLs the child's process group without waiting (for `Drop`).
    pub(crate) fn kill_now(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Some(pid) = child.id() {
                kill_group(pid);
            }
            let _ = child.start_kill();
        }
    }

    /// Starts the command again on `self.addr` (the child must be gone: call `kill` first),
    /// retrying early exits for `REBIND_WINDOW`.
    pub(crate) async fn respawn(&mut self) -> io::Result<SocketAddr> {
        debug_assert!(self.child.is_none());
        let command = with_listen(&self.command, self.addr);
        let give_up = Instant::now() + REBIND_WINDOW;
        loop {
            match spawn_once(&command).await {
                Ok((child, addr)) if addr == self.addr => {
                    self.pid = child.id();
                    self.child = Some(child);
                    self.restarts += 1;
                    return Ok(addr);
                }
                Ok((mut child, addr)) => {
                    if let Some(pid) = child.id() {
                        kill_group(pid);
                    }
                    let _ = child.wait().await;
                    return Err(io::Error::other(format!("the restarted upstream listens on {addr}, not {}", self.addr)));
                }
                Err(StartError::Exited(why)) if Instant::now() + REBIND_PAUSE < give_up => {
                    eprintln!("fault-proxy: upstream restart: the command {why}; retrying");
                    tokio::time::sleep(REBIND_PAUSE).await;
                }
                Err(StartError::Exited(why)) => {
                    return Err(io::Error::other(format!("the upstream command {why}, for {REBIND_WINDOW:?}")));
                }
                Err(StartError::Fatal(e)) => return Err(e),
            }
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // `kill_on_drop` only reaches the direct child; the group takes its descendants too.
        self.kill_now();
    }
}

fn kill_group(pid: u32) {
    #[cfg(unix)]
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) has no memory effects; the child leads its own group (pgid == pid).
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

/// Index of the `--listen` value (`--listen X`, or the `--listen=X` argument itself).
fn listen_index(command: &[OsString]) -> Option<usize> {
    let args = command.iter().enumerate().skip(1);
    for (i, arg) in args {
        let arg = arg.to_string_lossy();
        if arg == "--listen" && i + 1 < command.len() {
            return Some(i + 1);
        }
        if arg.starts_with("--listen=") {
            return Some(i);
        }
    }
    None
}

/// The command with its `--listen` argument set to `addr`.
pub(crate) fn with_listen(command: &[OsString], addr: SocketAddr) -> Vec<OsString> {
    let mut out = command.to_vec();
    if let Some(i) = listen_index(command) {
        out[i] = if command[i].to_string_lossy().starts_with("--listen=") {
            format!("--listen={addr}").into()
        } else {
            addr.to_string().into()
        };
    }
    out
}

async fn spawn_once(command: &[OsString]) -> Result<(Child, SocketAddr), StartError> {
    let (program, args) = command.split_first().ok_or_else(|| StartError::Fatal(io::Error::new(io::ErrorKind::InvalidInput, "empty upstream command")))?;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
    #[cfg(unix)]
    {
        cmd.process_group(0);
        #[cfg(target_os = "linux")]
        {
            let parent = std::process::id();
            // SAFETY: only async-signal-safe calls (prctl, getppid) and no allocation between
            // fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    // The proxy died between fork and prctl: nobody would kill us later.
                    if libc::getppid() as u32 != parent {
                        return Err(io::Error::from_raw_os_error(libc::ESRCH));
                    }
                    Ok(())
                });
            }
        }
    }
    let mut child = cmd.spawn().map_err(|e| StartError::Fatal(io::Error::new(e.kind(), format!("cannot start {}: {e}", program.to_string_lossy()))))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + UPSTREAM_START_TIMEOUT;
    let outcome = loop {
        match timeout_at(deadline, lines.next_line()).await {
            Err(_) => break Err(StartError::Fatal(io::Error::new(io::ErrorKind::TimedOut, format!("no `listening on` line from the upstream command within {UPSTREAM_START_TIMEOUT:?}")))),
            Ok(Err(e)) => break Err(StartError::Fatal(e)),
            Ok(Ok(None)) => break Err(StartError::Exited("exited before printing `listening on http://ADDR`".to_owned())),
            Ok(Ok(Some(line))) => {
                if let Some(addr) = line.trim().strip_prefix("listening on http://") {
                    match addr.parse::<SocketAddr>() {
                        Ok(addr) => break Ok(addr),
                        Err(e) => break Err(StartError::Fatal(io::Error::new(io::ErrorKind::InvalidData, format!("upstream printed {line:?}: {e}")))),
                    }
                }
                eprintln!("upstream: {line}");
            }
        }
    };
    match outcome {
        Ok(addr) => {
            tokio::spawn(copy_stdout(lines));
            Ok((child, addr))
        }
        Err(e) => {
            if let Some(pid) = child.id() {
                kill_group(pid);
            }
            let status = child.wait().await;
            Err(match e {
                StartError::Exited(why) => StartError::Exited(match status {
                    Ok(status) => format!("{why} ({status})"),
                    Err(_) => why,
                }),
                fatal => fatal,
            })
        }
    }
}

/// Keeps reading the child's stdout (so it never blocks on a full pipe), onto our stderr.
async fn copy_stdout(mut lines: tokio::io::Lines<BufReader<ChildStdout>>) {
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("upstream: {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn with_listen_rewrites_either_form_and_nothing_else() {
        let addr: SocketAddr = "127.0.0.1:4567".parse().unwrap();
        assert_eq!(
            with_listen(&os(&["srv", "--listen", "127.0.0.1:0", "--heartbeat-ms", "1000"]), addr),
            os(&["srv", "--listen", "127.0.0.1:4567", "--heartbeat-ms", "1000"])
        );
        assert_eq!(with_listen(&os(&["srv", "-v", "--listen=127.0.0.1:0"]), addr), os(&["srv", "-v", "--listen=127.0.0.1:4567"]));
        // The program name itself is never taken for the flag.
        assert_eq!(listen_index(&os(&["--listen", "x"])), None);
        assert_eq!(listen_index(&os(&["srv", "--listen"])), None);
    }
}
