//! End to end in a second browser engine: `outpost demo` from a fresh data directory (started
//! as `demo_browser` starts it), its player page driven in headless Debian Firefox ESR through
//! W3C WebDriver (geckodriver) by `tests/browser/firefox.mjs`. Both demo titles play to the end
//! with Shaka Player and dash.js (DASH) and hls.js (HLS), each with a forced rendition switch: the H.264/AAC title encrypted (Clear Key, its licence from the
//! control plane), the VP9/Opus one clear. For each: the end reached; no player or page error; frames
//! decoded (the video element's playback quality, a picture in a screenshot of the video element
//! mid-playback, and for the clear title the same picture drawn by the page into a canvas);
//! every segment from an appliance of the session's ranked list, as the page logged it and as
//! the browser's resource timing saw it; a licence request for the encrypted title only.
//!
//! Screenshots go to `target/demo-artifacts/firefox-*.png`, geckodriver's (and Firefox's) log to
//! `target/demo-artifacts/geckodriver.log`.

use std::process::Command;
use std::time::Instant;

use serde_json::Value;

use crate::support::demo::{artifacts, browser_dir, start_demo, SERIAL};
use crate::support::firefox::{Geckodriver, FIREFOX};

/// Every player with every title.
const PLAYS: [(&str, &str); 6] = [
    ("shaka", "demo-h264"),
    ("dash", "demo-h264"),
    ("hls", "demo-h264"),
    ("shaka", "demo-vp9"),
    ("dash", "demo-vp9"),
    ("hls", "demo-vp9"),
];

#[test]
#[ignore = "needs firefox-esr and geckodriver: run ./scripts/test"]
fn demo_titles_play_to_the_end_in_headless_firefox() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let t0 = Instant::now();
    let demo = start_demo(&[]);
    let gecko = Geckodriver::start(&artifacts().join("geckodriver.log"));
    let plays = PLAYS
        .iter()
        .map(|(p, t)| format!("{p}:{t}"))
        .collect::<Vec<_>>()
        .join(",");
    let out = Command::new("node")
        .current_dir(browser_dir())
        .arg("firefox.mjs")
        .args([
            "--url",
            &demo.url,
            "--webdriver",
            &gecko.url,
            "--binary",
            FIREFOX,
        ])
        .args(["--plays", &plays, "--shots", artifacts().to_str().unwrap()])
        .output()
        .expect("run node tests/browser/firefox.mjs (needs Node.js)");
    drop(gecko);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "firefox.mjs failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert!(r["failure"].is_null(), "the Firefox session failed: {r}");
    eprintln!(
        "firefox: {} {}; MSE and Clear Key support: {}",
        r["browser"]["name"], r["browser"]["version"], r["support"]
    );

    let results = r["plays"].as_array().unwrap();
    assert_eq!(results.len(), PLAYS.len(), "{r}");
    for (p, (player, title)) in results.iter().zip(PLAYS) {
        let what = format!("firefox {player} {title}");
        eprintln!(
            "{what}: {:.1} of {:.1} s in {} ms, {} frames ({} dropped), switches {}, served by {}, \
             licence requests {}, shown {}",
            p["currentTime"].as_f64().unwrap_or(f64::NAN),
            p["duration"].as_f64().unwrap_or(f64::NAN),
            p["playedForMs"],
            p["quality"]["totalVideoFrames"],
            p["quality"]["droppedVideoFrames"],
            p["switches"],
            p["servedBy"],
            p["licenseRequests"],
            p["shown"],
        );
        assert_eq!(
            (p["player"].as_str(), p["title"].as_str()),
            (Some(player), Some(title))
        );
        assert!(p["failure"].is_null(), "{what}: {p}");
        assert_eq!(
            p["errors"],
            Value::Array(vec![]),
            "{what}: player errors: {p}"
        );
        assert_eq!(
            p["pageErrors"],
            Value::Array(vec![]),
            "{what}: page errors: {p}"
        );

        // The end: the page saw `ended`, and the position is at the duration.
        let (t, d) = (
            p["currentTime"].as_f64().unwrap(),
            p["duration"].as_f64().unwrap(),
        );
        assert!(
            p["ended"] == true && d.is_finite() && d > 5.0 && t >= d - 0.5,
            "{what}: did not play to the end ({t} of {d} s): {p}"
        );

        // Pictures were decoded: frames counted by the media element, at the rendition's size,
        // and a frame drawn mid-playback is not blank.
        let frames = p["quality"]["totalVideoFrames"].as_u64().unwrap_or(0);
        assert!(
            frames as f64 >= d * 10.0,
            "{what}: {frames} frames decoded in {d} s: {p}"
        );
        assert!(p["videoWidth"].as_u64().unwrap_or(0) > 0, "{what}: {p}");
        let shown = &p["shown"];
        assert!(
            shown["lumaStdDev"].as_f64().unwrap_or(0.0) > 20.0
                && shown["litShare"].as_f64().unwrap_or(0.0) > 0.5,
            "{what}: the video element showed no picture mid-playback: {shown}"
        );
        // The page can read a clear title's frame back (drawn into a canvas: the same picture);
        // Firefox gives a page nothing of an EME-protected one, Clear Key included (the canvas
        // stays transparent black), so for the encrypted title the screenshot above is the check.
        let frame = &p["frame"];
        eprintln!("{what}: a frame drawn into a canvas: {frame}");
        if title != "demo-h264" {
            assert!(
                frame["lumaStdDev"].as_f64().unwrap_or(0.0) > 20.0,
                "{what}: the frame drawn at {} s is blank or unreadable: {frame}",
                frame["at"]
            );
        }

        // The forced switch happened: two renditions or more played.
        assert!(
            p["switches"].as_array().unwrap().len() >= 2,
            "{what}: no rendition switch: {p}"
        );

        // Segments: logged by the page with the `Outpost-Appliance` header of an appliance in the
        // session's ranked list, and fetched (resource timing) from appliance origins only.
        let ranking: Vec<&str> = p["ranking"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let segments = p["segments"].as_array().unwrap();
        assert!(segments.len() >= 4, "{what}: {p}");
        for s in segments {
            let a = s["appliance"].as_str().unwrap();
            assert!(ranking.contains(&a), "{what}: {a} not in {ranking:?}");
        }
        let origins: Vec<String> = demo
            .appliance_ports
            .iter()
            .map(|port| format!("http://127.0.0.1:{port}"))
            .collect();
        let fetched = p["fetchedFrom"].as_object().unwrap();
        assert!(!fetched.is_empty(), "{what}: no media fetched: {p}");
        for origin in fetched.keys() {
            assert!(
                origins.contains(origin),
                "{what}: fetched from {origin}, not an appliance ({origins:?})"
            );
        }

        // Clear Key: the encrypted title asked the control plane for a licence; the clear one
        // did not.
        if title == "demo-h264" {
            assert!(
                p["license"].is_string(),
                "{what}: no licence in the session"
            );
            assert!(
                p["licenseRequests"].as_u64().unwrap() >= 1,
                "{what}: no licence request: {p}"
            );
        } else {
            assert!(p["license"].is_null(), "{what}: {p}");
        }
        if player != "hls" && title == "demo-h264" {
            assert!(
                !p["licenseKids"].as_array().unwrap().is_empty(),
                "{what}: {p}"
            );
        }
    }
    eprintln!(
        "firefox demo: {} plays in {:.1} s (demo start included)",
        results.len(),
        t0.elapsed().as_secs_f64()
    );
}
