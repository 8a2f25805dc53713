//! `outpost appliance` end to end: the real binary, flags and config file, keys and grants made
//! with `outpost keys` / `outpost grant`, a title directory copied into a cache directory, real
//! clients (curl, ffprobe, ffmpeg) over loopback, SIGTERM drain with exit status 0.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::cli::{spawn_listening, Listening};

const BIN: &str = env!("CARGO_BIN_EXE_outpost");

/// `outpost appliance <args>`, once it says where it listens (killed when dropped).
fn start_appliance(args: &[&str]) -> Listening {
    spawn_listening(
        Command::new(BIN)
            .arg("appliance")
            .args(args)
            .stderr(Stdio::inherit()),
    )
}

struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(BIN)
            .args(["keys", "generate", "--kid", "k1", "--out"])
            .arg(dir.path().join("private"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::create_dir(dir.path().join("public")).unwrap();
        std::fs::copy(
            dir.path().join("private/k1.pub.pem"),
            dir.path().join("public/k1.pub.pem"),
        )
        .unwrap();
        Keys { dir }
    }

    fn public(&self) -> PathBuf {
        self.dir.path().join("public")
    }

    fn grant(&self, cluster: &str, prefix: &str) -> String {
        let out = Command::new(BIN)
            .args([
                "grant", "sign", "--aud", cluster, "--prefix", prefix, "--ttl", "600", "--key",
            ])
            .arg(self.dir.path().join("private/k1.key.pem"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

fn copy_title(cache: &Path, title: &str) -> Vec<u8> {
    let media = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/media/ladder-h264");
    let dir = cache.join(title);
    std::fs::create_dir_all(dir.join("v240")).unwrap();
    std::fs::copy(media.join("video-240p.mp4"), dir.join("v240/video.mp4")).unwrap();
    std::fs::write(dir.join("master.m3u8"), b"#EXTM3U\n").unwrap();
    std::fs::read(media.join("video-240p.mp4")).unwrap()
}

fn http(addr: &str, req: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let status = std::str::from_utf8(&out[9..12]).unwrap().parse().unwrap();
    let body_at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (status, out[body_at..].to_vec())
}

#[test]
fn serves_a_copied_title_with_flags_and_drains_on_sigterm() {
    let keys = Keys::new();
    let cache = tempfile::tempdir().unwrap();
    let d1 = cache.path().join("d1");
    let d2 = cache.path().join("d2");
    let video = copy_title(&d2, "tears");
    let mut a = start_appliance(&[
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--cluster",
        "isp-a",
        "--id",
        "oca-cli-1",
        "--backend",
        "epoll",
        "--threads",
        "2",
        "--public-keys",
        keys.public().to_str().unwrap(),
        "--cache-dir",
        d1.to_str().unwrap(),
        "--cache-dir",
        d2.to_str().unwrap(),
    ]);
    let g = keys.grant("isp-a", "/tears/");
    let (st, body) = http(
        &a.addr,
        &format!(
            "GET /g/{g}/tears/v240/video.mp4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(st, 200);
    assert_eq!(body, video);
    let (st, body) = http(
        &a.addr,
        &format!("GET /g/{g}/tears/v240/video.mp4 HTTP/1.1\r\nHost: x\r\nRange: bytes=4-11\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(st, 206);
    assert_eq!(body, &video[4..12]);
    let wrong = keys.grant("isp-b", "/tears/");
    let (st, body) = http(
        &a.addr,
        &format!(
            "GET /g/{wrong}/tears/master.m3u8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(st, 403);
    assert!(String::from_utf8_lossy(&body).contains("wrong_audience"));
    let (st, body) = http(
        a.admin(),
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(st, 200);
    let m = String::from_utf8(body).unwrap();
    assert!(
        m.contains("outpost_appliance_grant_refusals_total{reason=\"wrong_audience\"} 1"),
        "{m}"
    );
    assert!(m.contains("outpost_appliance_info{backend=\"epoll\"} 1"));
    let status = a.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[test]
fn config_file_is_strict_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("appliance.toml");
    std::fs::write(&cfg, "cluster = \"isp-a\"\nlisten_port = 80\n").unwrap();
    let out = Command::new(BIN)
        .args(["appliance", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen_port"), "{err}");
    std::fs::write(&cfg, "cluster = \"isp-a\"\nbackend = \"kqueue\"\n").unwrap();
    let keys = Keys::new();
    let out = Command::new(BIN)
        .args(["appliance", "--config"])
        .arg(&cfg)
        .arg("--public-keys")
        .arg(keys.public())
        .arg("--cache-dir")
        .arg(dir.path().join("c"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("backend"));
    // A complete config file; the flag --id overrides the file's id.
    let cache = dir.path().join("cache");
    copy_title(&cache, "tears");
    std::fs::write(
        &cfg,
        format!(
            "id = \"from-file\"\ncluster = \"isp-a\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\npublic_keys = {:?}\ncache_dirs = [{:?}]\nbackend = \"auto\"\nthreads = 1\n",
            keys.public(),
            cache
        ),
    )
    .unwrap();
    let mut a = start_appliance(&["--config", cfg.to_str().unwrap(), "--id", "from-flag"]);
    let g = keys.grant("isp-a", "/tears/");
    let mut s = TcpStream::connect(&a.addr).unwrap();
    write!(
        s,
        "HEAD /g/{g}/tears/master.m3u8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("Outpost-Appliance: from-flag\r\n"), "{out}");
    assert!(a.terminate().success());
}

/// The program name of an external tool, after [`crate::support::tool`] checked it is installed.
fn tool(name: &str) -> String {
    crate::support::tool(name)
        .get_program()
        .to_string_lossy()
        .into_owned()
}

#[test]
#[ignore = "needs curl, ffprobe and ffmpeg: run ./scripts/test"]
fn curl_and_ffmpeg_fetch_media_through_grants() {
    let curl = tool("curl");
    let ffprobe = tool("ffprobe");
    let ffmpeg = tool("ffmpeg");
    let keys = Keys::new();
    let cache = tempfile::tempdir().unwrap();
    let video = copy_title(cache.path(), "tears");
    let mut a = start_appliance(&[
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--cluster",
        "isp-a",
        "--public-keys",
        keys.public().to_str().unwrap(),
        "--cache-dir",
        cache.path().to_str().unwrap(),
    ]);
    let g = keys.grant("isp-a", "/tears/");
    let url = format!("http://{}/g/{g}/tears/v240/video.mp4", a.addr);
    // curl: whole file, a range, headers.
    let out = Command::new(&curl)
        .args(["-sS", "--fail", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, video);
    let out = Command::new(&curl)
        .args(["-sS", "--fail", "-r", "100-199", &url])
        .output()
        .unwrap();
    assert_eq!(out.stdout, &video[100..200]);
    let out = Command::new(&curl)
        .args(["-sS", "-I", &url])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(head.contains("accept-ranges: bytes"), "{head}");
    assert!(head.contains("content-type: video/mp4"), "{head}");
    // curl with keep-alive: two URLs on one connection.
    let out = Command::new(&curl)
        .args([
            "-sS",
            "--fail",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-w",
            "%{num_connects}\n",
            &url,
            &url,
        ])
        .output()
        .unwrap();
    let connects: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(
        connects,
        ["1", "0"],
        "second request did not reuse the connection"
    );
    // A refused grant: curl sees 403.
    let bad = format!("http://{}/g/{g}x/tears/v240/video.mp4", a.addr);
    let out = Command::new(&curl)
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &bad])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");
    // ffprobe reads the MP4 over HTTP (seeking with ranges).
    let out = Command::new(&ffprobe)
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
            &url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let probe = String::from_utf8_lossy(&out.stdout);
    assert!(probe.contains("h264"), "{probe}");
    // ffmpeg remuxes it from the appliance, reading every packet.
    let dst = cache.path().join("copy.mp4");
    let out = Command::new(&ffmpeg)
        .args(["-v", "error", "-nostdin", "-y", "-i", &url, "-c", "copy"])
        .arg(&dst)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::metadata(&dst).unwrap().len() > video.len() as u64 / 2);
    assert!(a.terminate().success());
}

#[test]
fn sighup_reloads_the_public_keys() {
    let old = Keys::new();
    let cache = tempfile::tempdir().unwrap();
    copy_title(cache.path(), "tears");
    let keys_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        old.public().join("k1.pub.pem"),
        keys_dir.path().join("k1.pub.pem"),
    )
    .unwrap();
    let mut a = start_appliance(&[
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--cluster",
        "isp-a",
        "--public-keys",
        keys_dir.path().to_str().unwrap(),
        "--cache-dir",
        cache.path().to_str().unwrap(),
    ]);
    let req = |g: &str| {
        format!("GET /g/{g}/tears/master.m3u8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    };
    let old_grant = old.grant("isp-a", "/tears/");
    assert_eq!(http(&a.addr, &req(&old_grant)).0, 200);
    // Rotate: a new key pair (also named k1) replaces the old public key on disk.
    let new = Keys::new();
    std::fs::copy(
        new.public().join("k1.pub.pem"),
        keys_dir.path().join("k1.pub.pem"),
    )
    .unwrap();
    let new_grant = new.grant("isp-a", "/tears/");
    assert_eq!(
        http(&a.addr, &req(&new_grant)).0,
        403,
        "new key used before reload"
    );
    let st = Command::new("kill")
        .args(["-HUP", &a.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    // The reload is asynchronous: poll until the new grant is accepted.
    let mut ok = false;
    for _ in 0..100 {
        if http(&a.addr, &req(&new_grant)).0 == 200 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ok, "new key not accepted after SIGHUP");
    let (st, body) = http(&a.addr, &req(&old_grant));
    assert_eq!(st, 403, "old grant still accepted after rotation");
    assert!(String::from_utf8_lossy(&body).contains("bad_signature"));
    assert!(a.terminate().success());
}
