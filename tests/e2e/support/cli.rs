//! Running the real `outpost` binary and talking to what it serves: the binary (`OUTPOST_BIN` or
//! cargo's own build), the control plane's test data, one-shot HTTP/1.1 requests over a fresh
//! loopback connection, and [`spawn_listening`]: a server started as a child process, with the
//! address its listening line names, killed when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

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

/// A grant signing key made by `outpost keys generate --kid k1` in `<dir>/private`, its public
/// half copied alone into `<dir>/public` (what an appliance's `--public-keys` reads); returns
/// the public directory.
pub fn key_pair(dir: &Path) -> PathBuf {
    let private = dir.join("private");
    let o = outpost(&[
        "keys",
        "generate",
        "--kid",
        "k1",
        "--out",
        private.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let public = dir.join("public");
    std::fs::create_dir_all(&public).unwrap();
    std::fs::copy(private.join("k1.pub.pem"), public.join("k1.pub.pem")).unwrap();
    public
}

/// Runs `outpost package <args> <inputs>` to completion.
pub fn package(args: &[&str], inputs: &[PathBuf]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_outpost"))
        .arg("package")
        .args(args)
        .args(inputs)
        .output()
        .expect("run outpost")
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

/// Heartbeats from the test policy's two appliances (`akl-1`, `akl-2`, holding both test
/// titles) to the control plane at `addr`, so steering has somewhere to send sessions.
pub fn heartbeat_test_appliances(addr: &str) {
    for id in ["akl-1", "akl-2"] {
        let (s, b) = http(
            addr,
            "POST",
            &format!("/v1/appliances/{id}/heartbeat"),
            &[
                (
                    "Authorization",
                    &format!("Bearer {id}-credential-0123456789"),
                ),
                ("Outpost-Appliance", id),
                ("Content-Type", "application/json"),
            ],
            r#"{"health":"ok","load":0.1,"titles":["clear-title","enc-title"]}"#,
        );
        assert_eq!(s, 200, "{b}");
    }
}

/// Ends the playback session `v` (a start's answer) with its own token at the control plane (or
/// demo) at `cp`, and checks the 204.
pub fn end_session(cp: &str, v: &serde_json::Value) {
    let (s, e) = http(
        cp,
        "DELETE",
        &format!(
            "/v1/playback/sessions/{}",
            v["session_id"].as_str().unwrap()
        ),
        &[(
            "Authorization",
            &format!("Bearer {}", v["token"].as_str().unwrap()),
        )],
        "",
    );
    assert_eq!(s, 204, "{e}");
}

/// The cluster of the first appliance a new session of `account` for `title` from `client_ip`
/// is steered to, through the playback API of the control plane at `cp` (the test policies'
/// playback-service key). The session is ended at once, so polling never reaches the plan's
/// stream limit.
pub fn first_cluster(cp: &str, account: &str, title: &str, client_ip: &str) -> String {
    let body = format!(
        r#"{{"account_id":"{account}","device_class":"browser","title":"{title}","client_ip":"{client_ip}"}}"#
    );
    let (s, b) = http(
        cp,
        "POST",
        "/v1/playback/sessions",
        &[
            ("Authorization", "Bearer playback-secret-0123456789"),
            ("Content-Type", "application/json"),
        ],
        &body,
    );
    assert_eq!(s, 201, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    end_session(cp, &v);
    v["appliances"][0]["cluster"].as_str().unwrap().to_owned()
}

/// A server started by [`spawn_listening`]: a child process killed (SIGKILL) and reaped when
/// dropped, unless it was stopped before.
pub struct Listening {
    pub child: Child,
    /// Where it serves: `host:port` for an appliance or a control plane, the demo's base URL.
    pub addr: String,
    /// An appliance's admin `host:port` (`None` for the others, or when it has no admin port).
    pub admin: Option<String>,
}

impl Listening {
    /// An appliance's admin address.
    pub fn admin(&self) -> &str {
        self.admin
            .as_deref()
            .expect("no admin address in the listening line")
    }

    /// SIGTERM (the drain a service manager asks for), then waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        self.child.wait().unwrap()
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address (and admin address) in the listening line of `outpost <subcommand>`, `None` for
/// any other line:
/// - `appliance`: `appliance listening on ADDR (admin ADMIN), backend NAME, tls TLS` (`ADMIN`
///   may be `-`);
/// - `control-plane`: `control plane listening on http://ADDR`;
/// - `demo`: `  open  URL/demo     (player)` (the URL without `/demo`).
fn parse_listening(subcommand: &str, line: &str) -> Option<(String, Option<String>)> {
    let line = line.trim();
    match subcommand {
        "appliance" => {
            let rest = line.strip_prefix("appliance listening on ")?;
            let (addr, rest) = rest.split_once(" (admin ")?;
            let admin = rest.split(')').next()?;
            let admin = (admin != "-").then(|| admin.to_owned());
            Some((addr.to_owned(), admin))
        }
        "control-plane" => {
            let addr = line.strip_prefix("control plane listening on http://")?;
            Some((addr.to_owned(), None))
        }
        "demo" => {
            let url = line.strip_prefix("open  ")?.split_whitespace().next()?;
            Some((url.trim_end_matches("/demo").to_owned(), None))
        }
        _ => None,
    }
}

/// Starts `cmd` (`outpost appliance|control-plane|demo ...`) with its stdout piped and waits, at
/// most two minutes, for the line saying where it listens (see [`parse_listening`]); panics
/// naming the command otherwise.
pub fn spawn_listening(cmd: &mut Command) -> Listening {
    try_spawn_listening(cmd, Duration::from_secs(120)).unwrap_or_else(|e| panic!("{e}"))
}

/// [`spawn_listening`] waiting at most `within`. Every stdout line is copied to the test's
/// stderr prefixed with the subcommand (`demo: ...`), before and after the listening line, so
/// the child never blocks on a full pipe. On error the child is killed and reaped.
pub fn try_spawn_listening(cmd: &mut Command, within: Duration) -> Result<Listening, String> {
    let what = format!("{cmd:?}");
    // The first argument naming a subcommand: `outpost demo ...`, or a wrapper such as
    // `unshare ... outpost demo ...`.
    let subcommand = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .find(|a| ["appliance", "control-plane", "demo"].contains(&a.as_str()))
        .unwrap_or_default();
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {what}: {e}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("{subcommand}: {line}");
            if let Some(found) = parse_listening(&subcommand, &line) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(found);
                }
            }
        }
    });
    match rx.recv_timeout(within) {
        Ok((addr, admin)) => Ok(Listening { child, addr, admin }),
        Err(e) => {
            let _ = child.kill();
            let status = child.wait();
            let why = match e {
                mpsc::RecvTimeoutError::Timeout => format!("no listening line within {within:?}"),
                mpsc::RecvTimeoutError::Disconnected => "stdout closed".to_owned(),
            };
            Err(format!(
                "{what} did not say where it listens ({why}); exit: {status:?}"
            ))
        }
    }
}

#[test]
fn listening_lines_name_the_address() {
    let appliance =
        "appliance listening on 127.0.0.1:4000 (admin 127.0.0.1:4001), backend epoll, tls -";
    assert_eq!(
        parse_listening("appliance", appliance),
        Some(("127.0.0.1:4000".into(), Some("127.0.0.1:4001".into())))
    );
    let no_admin = "appliance listening on [::1]:80 (admin -), backend io_uring, tls -";
    assert_eq!(
        parse_listening("appliance", no_admin),
        Some(("[::1]:80".into(), None))
    );
    let cp = "control plane listening on http://127.0.0.1:8080\n";
    assert_eq!(
        parse_listening("control-plane", cp),
        Some(("127.0.0.1:8080".into(), None))
    );
    let demo = "  open  http://127.0.0.1:8900/demo     (player)";
    assert_eq!(
        parse_listening("demo", demo),
        Some(("http://127.0.0.1:8900".into(), None))
    );
    // Another subcommand's line, or any other line, is not the listening line.
    assert_eq!(parse_listening("demo", appliance), None);
    assert_eq!(parse_listening("appliance", cp), None);
    assert_eq!(
        parse_listening("demo", "        http://127.0.0.1:8900/fleet    (fleet)"),
        None
    );
    assert_eq!(parse_listening("control-plane", "starting"), None);
}
