//! A service manager may stop a service the moment it says it is ready (a deploy rolled back, a
//! test that only needed it to start): SIGTERM sent as soon as the listening line is read must
//! drain and exit 0, never meet the signal's default action (the process killed by SIGTERM,
//! nothing drained). The handlers are installed before the line is printed; a CI run once lost
//! the packaged control plane to this race when they were installed on the runtime's first poll.

use std::process::{Command, Stdio};

use crate::support::cli::{bin, key_pair, spawn_listening};

/// Starts of each service, each stopped the moment it is ready.
const ROUNDS: usize = 10;

#[test]
fn control_plane_stopped_at_its_listening_line_exits_0() {
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let mut cp = spawn_listening(
            Command::new(bin())
                .args(["control-plane", "--listen", "127.0.0.1:0", "--data-dir"])
                .arg(dir.path())
                .env_remove("OUTPOST_MASTER_KEY")
                .stderr(Stdio::null()),
        );
        let status = cp.terminate();
        assert!(
            status.success(),
            "start {round}: control plane's exit after SIGTERM at readiness: {status}"
        );
    }
}

#[test]
fn appliance_stopped_at_its_listening_line_exits_0() {
    let keys = tempfile::tempdir().unwrap();
    let public = key_pair(keys.path());
    for backend in ["io_uring", "epoll"] {
        for round in 0..ROUNDS {
            let cache = tempfile::tempdir().unwrap();
            let mut a = spawn_listening(
                Command::new(bin())
                    .args(["appliance", "--listen", "127.0.0.1:0"])
                    .args(["--admin-listen", "127.0.0.1:0", "--cluster", "isp-a"])
                    .args([
                        "--id",
                        "oca-ready-1",
                        "--backend",
                        backend,
                        "--threads",
                        "1",
                    ])
                    .arg("--public-keys")
                    .arg(&public)
                    .arg("--cache-dir")
                    .arg(cache.path())
                    .stderr(Stdio::null()),
            );
            let status = a.terminate();
            assert!(
                status.success(),
                "{backend} start {round}: appliance's exit after SIGTERM at readiness: {status}"
            );
        }
    }
}
