//! A private PostgreSQL cluster for the tests that stop, restart or share one (initdb and pg_ctl
//! in a temporary directory, on a free loopback port, as the `postgres` user when run as root).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A private PostgreSQL cluster, stopped (immediate) when dropped.
pub struct Postgres {
    pub bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
}

/// Runs a PostgreSQL tool as the `postgres` user when we are root (initdb refuses root).
pub fn as_pg(bin: &Path, tool: &str) -> Command {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if is_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

/// Runs `c` to completion (its output goes to the test's stderr: nothing the server started by
/// `pg_ctl` could hold open).
fn run(c: &mut Command, what: &str) {
    let st = c
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .unwrap();
    assert!(st.success(), "{what}: {st}");
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is not installed: run ./scripts/test")
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("no /usr/lib/postgresql/*/bin/initdb");
        let dir = tempfile::tempdir().unwrap();
        // The cluster's directory belongs to the user the server runs as.
        let _ = Command::new("chown")
            .arg("postgres")
            .arg(dir.path())
            .status();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut init = as_pg(&bin, "initdb");
        init.arg("-D").arg(dir.path().join("data")).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        ]);
        run(&mut init, "initdb");
        let pg = Postgres { bin, dir, port };
        pg.ctl_start();
        let mut create = as_pg(&pg.bin, "psql");
        create
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
            .args(["-qc", "CREATE DATABASE outpost"]);
        run(&mut create, "CREATE DATABASE");
        pg
    }

    /// One SQL statement through psql: its rows, unaligned, one per line.
    pub fn query(&self, sql: &str) -> String {
        let o = as_pg(&self.bin, "psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "outpost", "-tAc", sql])
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(o.status.success(), "psql {sql}: {}", o.status);
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The `outpost` database's URL.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/outpost", self.port)
    }

    pub fn ctl(&self, args: &[&str]) -> Command {
        let mut c = as_pg(&self.bin, "pg_ctl");
        c.arg("-D").arg(self.dir.path().join("data")).args(args);
        c
    }

    /// Starts (or restarts) the server.
    pub fn ctl_start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        run(
            &mut self.ctl(&["-w", "start", "-l", log.to_str().unwrap(), "-o", &opts]),
            "pg_ctl start",
        );
    }

    /// Stops the server (fast shutdown).
    pub fn ctl_stop(&self) {
        run(&mut self.ctl(&["-w", "stop", "-m", "fast"]), "pg_ctl stop");
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .ctl(&["-w", "stop", "-m", "immediate"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
