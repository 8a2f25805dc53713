//! `outpost demo` killed outright (SIGKILL: it cannot stop anything itself) leaves no appliance,
//! and no BIRD when BIRD is installed, running: each child asked for a parent-death signal
//! (`--exit-with-parent`; BIRD through `outpost --exit-with-parent PID exec -- bird ...`, which
//! keeps it across `execve`), forked from a thread that lives as long as the demo. The real
//! binary, real processes, observed in /proc.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::cli::{bin, spawn_listening};
use crate::support::free_port;

/// PIDs whose parent is `parent` (field 4 of /proc/<pid>/stat).
fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`: comm may hold spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if rest.split_whitespace().nth(1) == Some(&parent.to_string()) {
            out.push(pid);
        }
    }
    out
}

/// Whether BIRD is installed where the demo looks for it (PATH, then the sbin directories).
fn bird_installed() -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(Into::into))
        .any(|d| d.join("bird").is_file() && d.join("birdc").is_file())
}

/// Whether `pid` is still a live process (a zombie waiting for its new parent counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[test]
fn a_sigkilled_demo_leaves_no_appliance_running() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = (30_000..40_000)
        .step_by(41)
        .find(|b| {
            [*b, b + 1, b + 100, b + 101]
                .iter()
                .all(|p| *p != port && std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        })
        .expect("free appliance ports");
    let mut demo = spawn_listening(
        Command::new(bin())
            .arg("demo")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--port", &port.to_string(), "--appliances", "2"])
            .args(["--appliance-base-port", &base.to_string()])
            .arg("--no-browser-assets")
            .stderr(Stdio::inherit()),
    );
    let demo_pid = demo.child.id();
    let children = children_of(demo_pid);
    // Two embedded appliances and the origin appliance(s), and BIRD when it is installed: every
    // one a child of the demo.
    assert!(children.len() >= 2, "demo children: {children:?}");
    let mut birds = 0;
    for pid in &children {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let program = cmdline.split(' ').next().unwrap_or_default();
        if program == "bird" || program.ends_with("/bird") {
            // Started as `outpost --exit-with-parent PID exec -- bird ...`, now BIRD itself.
            birds += 1;
            continue;
        }
        assert!(
            cmdline.contains("--exit-with-parent") && cmdline.contains(" appliance "),
            "{pid}: {cmdline}"
        );
    }
    assert_eq!(
        birds,
        usize::from(bird_installed()),
        "BIRD children of the demo: {children:?}"
    );

    demo.child.kill().unwrap();
    demo.child.wait().unwrap();

    // The bound is generous: an idle appliance drains at once on SIGTERM.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut left: Vec<u32> = children.clone();
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left.retain(|p| alive(*p));
    }
    if !left.is_empty() {
        // Clean up what this test started (by PID) before failing.
        for p in &left {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*p as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        panic!("children still running 30 s after the demo was SIGKILLed: {left:?}");
    }
}
