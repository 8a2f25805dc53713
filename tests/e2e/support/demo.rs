//! `outpost demo` as the demo's end-to-end tests start it: from a fresh (or a kept) data
//! directory on free loopback ports, stopped with Ctrl-C when dropped; and the lock that keeps
//! those tests (Chromium's and Firefox's) from running beside each other.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::cli::{try_spawn_listening, Listening};

/// The demo tests run one at a time, in whichever browser: each starts a whole CDN and a browser
/// on a 2-core machine.
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub struct Demo {
    pub proc: Listening,
    pub url: String,
    data: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub appliance_ports: Vec<u16>,
}

impl Demo {
    pub fn data(&self) -> &Path {
        &self.data
    }
}

impl Drop for Demo {
    /// Even when a test fails, stop the demo the way a user does (Ctrl-C), so it stops its
    /// appliances; SIGKILL only if it does not exit in time.
    fn drop(&mut self) {
        let child = &mut self.proc.child;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A run of `count` consecutive free ports on 127.0.0.1 (probed by binding), below the
/// kernel's ephemeral range, so that no other test's `127.0.0.1:0` socket (nor an outgoing
/// connection) can take one of them between the probe and the demo's own bind.
pub fn free_ports(count: u16) -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let span = low.saturating_sub(10_200).max(1);
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let calls = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut x =
        nanos ^ (u64::from(std::process::id()) << 32) ^ calls.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for _ in 0..200 {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let base = 10_000 + ((x >> 33) % u64::from(span)) as u16;
        let all_free = (0..count).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok())
            && (0..count).all(|i| TcpListener::bind(("127.0.0.1", base + 100 + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no run of free ports");
}

pub fn start_demo(extra: &[&str]) -> Demo {
    let demo = launch_demo(extra);
    // Appliances heartbeat every 2 s; wait until steering has them all.
    std::thread::sleep(Duration::from_secs(5));
    demo
}

/// Starts `outpost demo` from a fresh data directory and returns once it prints its URL.
pub fn launch_demo(extra: &[&str]) -> Demo {
    let tmp = tempfile::tempdir().unwrap();
    let mut demo = launch_demo_in(tmp.path(), extra, Stdio::inherit());
    demo._tmp = Some(tmp);
    demo
}

/// Starts `outpost demo` on the data directory `data` (kept: a later run may reuse it), its
/// standard error into `stderr`, and returns once it prints its URL.
pub fn launch_demo_in(data: &Path, extra: &[&str], stderr: Stdio) -> Demo {
    let mut outpost = Command::new(env!("CARGO_BIN_EXE_outpost"));
    outpost.arg("demo");
    launch_demo_as(outpost, data, extra, stderr)
}

/// [`launch_demo_in`] with `demo` as the command that runs `outpost demo` (the installed binary,
/// or a wrapper around it); the data directory, ports and `extra` are appended.
pub fn launch_demo_as(mut demo: Command, data: &Path, extra: &[&str], stderr: Stdio) -> Demo {
    let port = free_ports(1);
    let base = free_ports(4);
    let started = try_spawn_listening(
        demo.args([
            "--data-dir",
            data.to_str().unwrap(),
            "--port",
            &port.to_string(),
            "--appliance-base-port",
            &base.to_string(),
        ])
        .args(extra)
        .stderr(stderr),
        Duration::from_secs(300),
    );
    let proc = match started {
        Ok(proc) => proc,
        Err(e) => {
            // Keep the appliances' logs (the data directory is about to be deleted).
            let keep = artifacts().join("failed-start-logs");
            let _ = std::fs::create_dir_all(&keep);
            if let Ok(logs) = std::fs::read_dir(data.join("logs")) {
                for l in logs.flatten() {
                    let _ = std::fs::copy(l.path(), keep.join(l.file_name()));
                }
            }
            panic!(
                "the demo did not print its URL ({e}); appliance logs in {}",
                keep.display()
            );
        }
    };
    Demo {
        url: proc.addr.clone(),
        proc,
        data: data.to_owned(),
        _tmp: None,
        appliance_ports: (0..4).map(|i| base + i).collect(),
    }
}

/// `tests/browser/`: the node harnesses.
pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// `target/demo-artifacts/`: screenshots, and logs kept from a failed start.
pub fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/demo-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
