//! What the suite needs from the machine it runs on: the repository root,
//! free loopback ports, tools from the test venv, and signals to the
//! processes the harness starts (to freeze and thaw them).

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A free TCP port on 127.0.0.1 (bound and released), never one this
/// process handed out or claimed before: the tests of the suite share one
/// process and run in parallel, so two of them must not get the same port
/// between its release and its use. (The race with another process taking
/// it first is small and fails loudly.)
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free loopback port");
        if claim(port) {
            return port;
        }
    }
}

/// Records `port` as used by this process; false if it already was (by
/// [`free_port`] or another claim), so the caller picks another one.
pub fn claim(port: u16) -> bool {
    static CLAIMED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    CLAIMED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(port)
}

/// An executable from the test venv (`.venv/bin/NAME`, or
/// `$FLOODGATE_TEST_VENV/bin/NAME`). Panics with the fix if it is missing.
pub fn venv_bin(name: &str) -> PathBuf {
    let venv = std::env::var_os("FLOODGATE_TEST_VENV")
        .map_or_else(|| workspace_root().join(".venv"), PathBuf::from);
    let path = venv.join("bin").join(name);
    assert!(
        path.exists(),
        "{} not found: run the README's test command (scripts/test), which creates the venv",
        path.display()
    );
    path
}

/// Sends `signal` (`-STOP`, `-CONT`, ...) to process `pid` with `kill`;
/// panics, naming `what`, if that fails.
pub(crate) fn signal(pid: u32, signal: &str, what: &str) {
    let ok = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {signal} {what} failed");
}

/// Waits, when less than `left` remains of the current minute of the real
/// clock, until the next minute starts: a test that follows one per-minute
/// count (the server's windows are epoch-aligned minutes) over a sequence of
/// calls must not straddle a window's end.
pub async fn with_time_left_in_minute(left: std::time::Duration) {
    with_time_left_in_window(std::time::Duration::from_secs(60), left).await;
}

/// [`with_time_left_in_minute`] for any epoch-aligned window (an hour: a
/// test that follows a per-hour count across a Redis failover).
pub async fn with_time_left_in_window(window: std::time::Duration, left: std::time::Duration) {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let window_ms = window.as_millis().max(1);
    let into = Duration::from_millis(u64::try_from(now.as_millis() % window_ms).unwrap_or(0));
    if window.saturating_sub(into) < left {
        tokio::time::sleep(window.saturating_sub(into) + Duration::from_millis(50)).await;
    }
}
