//! `outpost control-plane fill-plan` on the real binary: imports the fixture policy, titles and a
//! forecast into the embedded SQLite default, lets two embedded appliances report their drives
//! and holdings to the served control plane over a real socket, then prints the cluster's plan
//! as a table and as JSON.

use std::process::{Command, Stdio};

use crate::support::cli::{bin, cp_data as data, http, outpost, spawn_listening, text};

fn post(addr: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut h = headers.to_vec();
    h.push(("Content-Type", "application/json"));
    http(addr, "POST", path, &h, body)
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
    let server = spawn_listening(
        Command::new(bin())
            .args(["control-plane", "--data-dir", dd, "--listen", "127.0.0.1:0"])
            .env_remove("OUTPOST_MASTER_KEY")
            .stderr(Stdio::null()),
    );
    let addr = server.addr.clone();
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
