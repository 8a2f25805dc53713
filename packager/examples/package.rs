//! Runs the packager without the `outpost` CLI: `cargo run -p packager --example package --
//! TITLE OUT_DIR [--segmented] INPUT...` (handy for benchmarks and debugging).

use std::path::PathBuf;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let segmented = args.iter().any(|a| a == "--segmented");
    args.retain(|a| a != "--segmented");
    if args.len() < 3 {
        eprintln!("usage: package TITLE OUT_DIR [--segmented] INPUT...");
        std::process::exit(2);
    }
    let opts = packager::Options {
        title: args[0].clone(),
        out_dir: PathBuf::from(&args[1]),
        mode: if segmented {
            protocol::catalog::PackagingMode::Segmented
        } else {
            protocol::catalog::PackagingMode::OnDemand
        },
        segment_duration_ms: 6000,
        inputs: args[2..].iter().map(PathBuf::from).collect(),
        audio: Vec::new(),
        text: Vec::new(),
        thumbnails: None,
        trick_play: Vec::new(),
        encryption: None,
    };
    match packager::package(&opts, None) {
        Ok(e) => println!(
            "{} renditions, {} bytes",
            e.renditions.len(),
            e.total_bytes()
        ),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
