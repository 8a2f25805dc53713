//! Running the real `outpost` binary and talking to what it serves: the binary (`OUTPOST_BIN` or
//! cargo's own build), the control plane's test data, one-shot HTTP/1.1 requests over a fresh
//! loopback connection, and a child process killed when dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

/// The `outpost` binary under test.
pub fn bin() -> PathBuf {
    std::env::var_os("OUTPOST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_outpost")))
}

/// `control-plane/tests/data/<p>`: the control plane's policy, catalog and keys fixtures.
pub fn cp_data(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("control-plane/tests/data")
        .join(p)
}

/// Runs `outpost <args>` to completion, without secrets inherited from the environment.
pub fn outpost(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("OUTPOST_MASTER_KEY")
        .env_remove("OUTPOST_ADMIN_TOKEN")
        .output()
        .unwrap()
}

/// Stdout and stderr as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`); returns status and body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status: u16 = resp.split(' ').nth(1).unwrap().parse().unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A child process killed (and reaped) when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
