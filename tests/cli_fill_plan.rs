//! `outpost control-plane fill-plan` on the real binary: imports the fixture policy, titles and a
//! forecast into the embedded SQLite default, lets two embedded appliances report their drives
//! and holdings to the served control plane over a real socket, then prints the cluster's plan
//! as a table and as JSON.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn bin() -> PathBuf {
    std::env::var_os("OUTPOST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_outpost")))
}

fn data(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("control-plane/tests/data")
        .join(p)
}

fn outpost(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .env_remove("OUTPOST_MASTER_KEY")
        .env_remove("OUTPOST_ADMIN_TOKEN")
        .output()
        .unwrap()
}

fn text(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn post(addr: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
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

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn fill_plan_prints_the_cluster_plan_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("cp");
    let dd = d.to_str().unwrap();
    let forecast = dir.path().join("forecast.json");
    std::fs::write(
        &forecast,
        r#"{"forecast":[{"country":"NZ","titles":[{"title":"clear-title","views":100},{"title":"hd-only","views":2}]}]}"#,
    )
    .unwrap();
    let files = [
        data("policy.toml"),
        data("clear-title/catalog.json"),
        data("enc-title/catalog.json"),
        data("hd-only/catalog.json"),
        forecast.clone(),
    ];
    let mut args = vec!["control-plane", "--data-dir", dd, "import"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let out = outpost(&args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("imported forecast: 2 titles in 1 countries"),
        "{stdout}"
    );

    // No appliance has reported its drives: nothing is planned yet, and it says so.
    let out = outpost(&[
        "control-plane",
        "fill-plan",
        "--cluster",
        "isp-akl",
        "--data-dir",
        dd,
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("cluster isp-akl (embedded)")
            && stdout.contains("no appliance of this cluster is planned yet"),
        "{stdout}"
    );

    // Errors name the cluster and the setting.
    let out = outpost(&[
        "control-plane",
        "fill-plan",
        "--cluster",
        "nope",
        "--data-dir",
        dd,
    ]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("unknown cluster \"nope\"") && stderr.contains("isp-akl"),
        "{stderr}"
    );
    let out = outpost(&[
        "control-plane",
        "fill-plan",
        "--cluster",
        "isp-akl",
        "--data-dir",
        dd,
        "--fill-hysteresis",
        "0.5",
    ]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("fill.hysteresis"), "{stderr}");

    // Serve, and let both embedded appliances report 100 GB of drives; akl-2 holds clear-title.
    let mut child = Command::new(bin())
        .args(["control-plane", "--data-dir", dd, "--listen", "127.0.0.1:0"])
        .env_remove("OUTPOST_MASTER_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let server = Server(child);
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .expect("listening line")
        .to_owned();
    for (id, titles) in [("akl-1", "[]"), ("akl-2", r#"["clear-title"]"#)] {
        let body = format!(
            r#"{{"health":"ok","load":0.1,"titles":{titles},"drives":[{{"path":"/c","state":"ok","used_bytes":0,"capacity_bytes":107374182400}}]}}"#
        );
        let (s, b) = post(
            &addr,
            &format!("/v1/appliances/{id}/heartbeat"),
            &[
                ("Outpost-Appliance", id),
                (
                    "Authorization",
                    &format!("Bearer {id}-credential-0123456789"),
                ),
            ],
            &body,
        );
        assert_eq!(s, 200, "{b}");
    }
    drop(server);

    let out = outpost(&[
        "control-plane",
        "fill-plan",
        "--cluster",
        "isp-akl",
        "--data-dir",
        dd,
        "--fill-views-per-copy",
        "10",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("appliance akl-1: capacity 95.0 GiB"),
        "{stdout}"
    );
    assert!(stdout.contains("appliance akl-2:"), "{stdout}");
    // clear-title (forecast 100 views, weight 0.5 -> 50 views, 10 per copy) goes on both: akl-2
    // holds it, akl-1 adds it; every title is a new release (imported just now).
    let row = |appliance: &str, action: &str, title: &str| -> Option<String> {
        let block = stdout.split(&format!("appliance {appliance}:")).nth(1)?;
        let block = block.split("\nappliance ").next()?;
        block
            .lines()
            .find(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.first() == Some(&action) && w.get(1) == Some(&title)
            })
            .map(str::to_owned)
    };
    let add = row("akl-1", "add", "clear-title").expect("akl-1 adds clear-title");
    assert!(
        add.contains("urgent (new release); rank 1, popularity 50.00 views, 2 of 2 copies"),
        "{add}"
    );
    assert!(add.contains("KiB") || add.contains("MiB"), "{add}");
    assert!(row("akl-2", "hold", "clear-title").is_some(), "{stdout}");
    assert!(row("akl-2", "add", "clear-title").is_none(), "{stdout}");
    // hd-only (1 view) has one copy in the cluster.
    let hd = ["akl-1", "akl-2"]
        .iter()
        .filter(|a| row(a, "add", "hd-only").is_some())
        .count();
    assert_eq!(hd, 1, "{stdout}");
    assert!(
        stdout.contains("changes against the last published placement:"),
        "{stdout}"
    );

    // The same as JSON.
    let out = outpost(&[
        "control-plane",
        "fill-plan",
        "--cluster",
        "isp-akl",
        "--data-dir",
        dd,
        "--fill-views-per-copy",
        "10",
        "--json",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["cluster"], "isp-akl");
    assert_eq!(v["kind"], "embedded");
    let a1 = v["appliances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["appliance"] == "akl-1")
        .unwrap();
    assert_eq!(a1["add"][0]["title"], "clear-title", "{a1}");
    assert!(a1["add"][0]["bytes"].as_u64().unwrap() > 0);
    assert!(a1["add"][0]["reason"].as_str().unwrap().contains("rank 1"));
}
