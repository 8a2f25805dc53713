//! Helpers shared by the end-to-end tests: locating fixtures, running an external tool that must
//! be installed (a missing one fails the test, pointing at `./scripts/test`), packaging with the
//! real `outpost` binary, nginx serving a directory on an ephemeral loopback port (CORS + Range,
//! optionally proxying one path prefix to another local server), and a W3C Clear Key licence
//! server on 127.0.0.1 answering from a keys file. [`cli`] runs the binary and the servers it
//! starts; [`demo`] starts `outpost demo` for the browser tests; [`firefox`] runs geckodriver
//! for headless Firefox ESR; [`cenc_decrypt`] is an independent Common Encryption decryptor.

pub mod cenc_decrypt;
pub mod cli;
pub mod demo;
pub mod firefox;
pub mod pg;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::catalog::CatalogEntry;
use protocol::content_keys::ContentKeys;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `fixtures/media/<rel>`: the small media fixtures (`fixtures/make-media.sh`).
pub fn media(rel: &str) -> PathBuf {
    repo().join("fixtures/media").join(rel)
}

/// The fixture ladder `h264` (with `hd`, the 720p rung too) or `vp9`.
pub fn ladder(name: &str, hd: bool) -> Vec<PathBuf> {
    let names: &[&str] = match (name, hd) {
        ("h264", false) => &["video-240p", "video-360p", "video-540p", "audio-aac"],
        ("h264", true) => &[
            "video-240p",
            "video-360p",
            "video-540p",
            "video-720p",
            "audio-aac",
        ],
        _ => &["video-240p", "video-360p", "audio-opus"],
    };
    names
        .iter()
        .map(|n| media(&format!("ladder-{name}/{n}.mp4")))
        .collect()
}

/// A command for an external tool, asserting it is installed.
pub fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{name} is not installed: run ./scripts/test (scripts/install-deps)"
    );
    Command::new(name)
}

/// Packages `inputs` with the real CLI into `root/<title>/` (plus `extra` flags).
pub fn package(
    root: &Path,
    title: &str,
    segmented: bool,
    extra: &[&str],
    inputs: &[PathBuf],
) -> CatalogEntry {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_outpost"));
    cmd.args(["package", "--title", title, "--out"]).arg(root);
    if segmented {
        cmd.arg("--segmented");
    }
    let o = cmd.args(extra).args(inputs).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(root.join(title).join("catalog.json")).unwrap();
    CatalogEntry::from_json(&text).unwrap()
}

/// `tests/browser/<script>`, after checking that the npm packages and Chromium are installed.
pub fn node_harness(script: &str) -> PathBuf {
    let dir = repo().join("tests/browser");
    assert!(
        dir.join("node_modules/shaka-player").is_dir() && dir.join("node_modules/hls.js").is_dir(),
        "tests/browser/node_modules is missing: run ./scripts/test (scripts/install-deps runs npm ci)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium missing: run ./scripts/test"
    );
    dir.join(script)
}

/// A free loopback TCP port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx serving `root` on an ephemeral loopback port; stopped by PID on drop.
pub struct Nginx {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Serves `root` with CORS and Range.
    pub fn start(root: &Path) -> Nginx {
        Nginx::start_with_proxy(root, None)
    }

    /// Serves `root`; with `proxy = Some((prefix, port))`, requests under `prefix` (such as
    /// `/license/`) go to `127.0.0.1:port`, so a browser reaches that server on the page's own
    /// origin (Chromium's local-network-access checks refuse a second loopback origin to a page
    /// whose address space it cannot tell).
    pub fn start_with_proxy(root: &Path, proxy: Option<(&str, u16)>) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display();
        let proxy = proxy.map_or(String::new(), |(prefix, to)| {
            format!("location {prefix} {{ proxy_pass http://127.0.0.1:{to}; }}")
        });
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp;
  proxy_temp_path {d}/tmp;
  fastcgi_temp_path {d}/tmp;
  uwsgi_temp_path {d}/tmp;
  scgi_temp_path {d}/tmp;
  types {{
    application/vnd.apple.mpegurl m3u8;
    application/dash+xml mpd;
    video/mp4 mp4;
    video/iso.segment m4s;
    application/json json;
  }}
  server {{
    listen 127.0.0.1:{port};
    root {root};
    add_header Access-Control-Allow-Origin * always;
    add_header Access-Control-Allow-Headers Range always;
    {proxy}
  }}
}}
"#,
            root = root.display()
        );
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = tool("nginx")
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut n = Nginx {
            child,
            port,
            _dir: dir,
        };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = n.child.try_wait() {
                panic!("nginx exited: {status}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nginx did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        n
    }

    /// `http://127.0.0.1:<port>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(bytes: &[u8], url: bool) -> String {
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |a, (i, &b)| a | u32::from(b) << (16 - 8 * i));
        for k in 0..=c.len() {
            let ch = B64[(n >> (18 - 6 * k) & 63) as usize];
            out.push(match (url, ch) {
                (true, b'+') => '-',
                (true, b'/') => '_',
                _ => ch as char,
            });
        }
        if !url {
            out.extend(std::iter::repeat_n('=', 3 - c.len()));
        }
    }
    out
}

/// Unpadded base64url (RFC 4648 §5), as W3C Clear Key JSON uses.
pub fn b64url(bytes: &[u8]) -> String {
    base64(bytes, true)
}

/// Padded standard base64 (RFC 4648 §4), as data URIs and `cenc:pssh` use.
pub fn b64(bytes: &[u8]) -> String {
    base64(bytes, false)
}

/// Hex to bytes (the keys file's format).
pub fn unhex(h: &str) -> Vec<u8> {
    (0..h.len() / 2)
        .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// What the licence server saw: per request, the key ids asked for and those answered (base64url).
#[derive(Debug, Default, Clone)]
pub struct LicenceLog {
    pub requests: Vec<(Vec<String>, Vec<String>)>,
}

/// A W3C Clear Key licence server on 127.0.0.1 (one thread, HTTP/1.1, `Connection: close`).
/// A POST body `{"kids":[...],"type":"temporary"}` is answered with
/// `{"keys":[{"kty":"oct","kid":..,"k":..}],"type":"temporary"}` holding the requested keys of
/// `keys` that `allow` accepts; anything else is a 400. Runs until the process ends (the
/// listener thread is detached; each test starts its own on a fresh port).
pub struct ClearKeyServer {
    pub port: u16,
    pub log: Arc<Mutex<LicenceLog>>,
}

impl ClearKeyServer {
    pub fn start(
        keys: &ContentKeys,
        allow: impl Fn(&protocol::content_keys::ContentKey) -> bool + Send + 'static,
    ) -> ClearKeyServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(LicenceLog::default()));
        let table: Vec<(String, String, protocol::content_keys::ContentKey)> = keys
            .keys
            .iter()
            .map(|k| (b64url(&unhex(&k.kid)), b64url(&unhex(&k.key)), k.clone()))
            .collect();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = serve_licence(stream, &table, &allow, &log2);
            }
        });
        ClearKeyServer { port, log }
    }
}

fn serve_licence(
    mut stream: TcpStream,
    table: &[(String, String, protocol::content_keys::ContentKey)],
    allow: &dyn Fn(&protocol::content_keys::ContentKey) -> bool,
    log: &Mutex<LicenceLog>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let method = line.split(' ').next().unwrap_or_default().to_string();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let cors = "Access-Control-Allow-Origin: *\r\nAccess-Control-Allow-Headers: *\r\nAccess-Control-Allow-Methods: POST\r\n";
    if method == "OPTIONS" {
        return stream.write_all(
            format!("HTTP/1.1 204 No Content\r\n{cors}Connection: close\r\n\r\n").as_bytes(),
        );
    }
    let mut body = vec![0; length.min(64 * 1024)];
    reader.read_exact(&mut body)?;
    let req: Option<Vec<String>> = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v["kids"].as_array().map(|a| {
                a.iter()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect()
            })
        });
    let (status, answer) = match (method.as_str(), req) {
        ("POST", Some(kids)) => {
            let keys: Vec<serde_json::Value> = table
                .iter()
                .filter(|(kid, _, k)| kids.contains(kid) && allow(k))
                .map(|(kid, key, _)| serde_json::json!({"kty": "oct", "kid": kid, "k": key}))
                .collect();
            let answered = keys
                .iter()
                .map(|k| k["kid"].as_str().unwrap_or_default().to_string())
                .collect();
            log.lock().unwrap().requests.push((kids, answered));
            (
                "200 OK",
                serde_json::json!({"keys": keys, "type": "temporary"}).to_string(),
            )
        }
        _ => (
            "400 Bad Request",
            r#"{"error":"expected a POST of {\"kids\":[...]}"}"#.to_string(),
        ),
    };
    stream.write_all(
        format!(
            "HTTP/1.1 {status}\r\n{cors}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
            answer.len()
        )
        .as_bytes(),
    )
}

/// `pts, duration, size, hash` (video) or `size, hash` (audio) of every packet of the first
/// stream of `kind` (`v` or `a`), read by ffmpeg (decrypting with `key` when given). DTS is left
/// out: the packager rebases decode times (it bakes the B-frame delay into composition offsets),
/// while presentation times and bytes must not change. Audio keeps its priming edit list, which
/// ffmpeg applies to progressive input but not to fragmented output, so only its bytes are
/// compared (times are checked by the golden tests in `packager/tests`).
pub fn packets(file: &Path, kind: &str, key: Option<&str>) -> Vec<String> {
    let mut cmd = tool("ffmpeg");
    cmd.args(["-nostdin", "-v", "error"]);
    if let Some(k) = key {
        cmd.args(["-decryption_key", k]);
    }
    let o = cmd
        .arg("-i")
        .arg(file)
        .args([
            "-map",
            &format!("0:{kind}:0"),
            "-c",
            "copy",
            "-f",
            "framemd5",
            "-",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            if kind == "v" {
                f[2..6].join(",")
            } else {
                f[4..6].join(",")
            }
        })
        .collect();
    assert!(!lines.is_empty(), "no packets in {}", file.display());
    lines
}

/// Asserts two packet listings are equal, reporting the first difference only.
pub fn assert_same(a: &[String], b: &[String], what: &str) {
    if let Some(i) = (0..a.len().min(b.len())).find(|&i| a[i] != b[i]) {
        panic!("{what}: packet {i} differs: {} vs {}", a[i], b[i]);
    }
    assert_eq!(a.len(), b.len(), "{what}: packet counts differ");
}
