//! Headless Firefox ESR (Debian's `firefox-esr`) for the browser tests, through W3C WebDriver:
//! [`Geckodriver`] runs `geckodriver` as the test's own child on a free loopback port, in a
//! process group of its own with its Firefox profiles under a temporary directory, and stops
//! the group (geckodriver and any Firefox it started) when dropped, so a failing test leaves no
//! browser behind. The node harness `tests/browser/firefox.mjs` speaks WebDriver to it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::free_port;

/// Debian's Firefox ESR.
pub const FIREFOX: &str = "/usr/bin/firefox-esr";

pub struct Geckodriver {
    child: Child,
    /// `http://127.0.0.1:PORT`: the WebDriver endpoint.
    pub url: String,
    _profiles: tempfile::TempDir,
}

/// `geckodriver` on the PATH, or where `cargo install` put it.
fn geckodriver_bin() -> PathBuf {
    let on_path = Command::new("sh")
        .args(["-c", "command -v geckodriver"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    on_path
        .or_else(|| {
            cargo_home
                .map(|c| c.join("bin/geckodriver"))
                .filter(|p| p.is_file())
        })
        .expect("geckodriver is not installed: run ./scripts/test (scripts/install-deps)")
}

impl Geckodriver {
    /// Starts geckodriver, its log (and Firefox's output) into `log`, and returns once it
    /// accepts connections.
    pub fn start(log: &Path) -> Geckodriver {
        assert!(
            Path::new(FIREFOX).exists(),
            "{FIREFOX} is missing: run ./scripts/test (scripts/install-deps installs firefox-esr)"
        );
        let profiles = tempfile::tempdir().unwrap();
        let port = free_port();
        // WebDriver BiDi's port: unused here, but geckodriver's default (9222) may be taken.
        let bidi = free_port();
        let out = std::fs::File::create(log).unwrap();
        let child = Command::new(geckodriver_bin())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--websocket-port", &bidi.to_string()])
            .arg("--profile-root")
            .arg(profiles.path())
            .env("TMPDIR", profiles.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("start geckodriver");
        let gecko = Geckodriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _profiles: profiles,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "geckodriver did not listen on 127.0.0.1:{port}; its log is {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        gecko
    }
}

impl Drop for Geckodriver {
    /// SIGTERM to the whole process group (geckodriver and any Firefox still running); once
    /// geckodriver has exited (at most 5 s), SIGKILL to whatever is left of the group. The group
    /// id stays geckodriver's own until it is reaped, so the signals reach nothing else.
    fn drop(&mut self) {
        let pid = self.child.id();
        let group = Pid::from_raw(pid as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !exited(pid) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Whether `pid` (a child not yet reaped) has exited: a zombie, or gone.
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X")
    })
}
