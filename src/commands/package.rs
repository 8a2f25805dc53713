//! `outpost package`: encoded MP4 renditions → a title directory (CMAF files, DASH MPD, HLS
//! playlists, `catalog.json`). Glue only: flags to [`packager::Options`], a progress bar on a
//! terminal, a summary on stdout. The work is in the `packager` crate.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use protocol::catalog::PackagingMode;

/// Flags for `outpost package`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Title id: the directory created in --out (`[A-Za-z0-9._-]`, 1-128 characters).
    #[arg(long)]
    pub title: String,
    /// Output directory; the title is written to OUT/<title>/ (atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// Write separate init and media segment files (DASH SegmentTemplate, HLS segment URIs)
    /// instead of one CMAF file per track read by byte range.
    #[arg(long)]
    pub segmented: bool,
    /// Target segment duration in seconds (snapped to keyframes).
    #[arg(long, default_value = "6", value_name = "SECONDS")]
    pub segment_duration: String,
    /// Input MP4 files (progressive or fragmented), one rendition per track; the rendition id is
    /// the file stem.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
}

/// Parses a decimal number of seconds into milliseconds (no float rounding surprises).
fn parse_seconds(s: &str) -> anyhow::Result<u64> {
    let bad = || anyhow::anyhow!("--segment-duration {s:?}: expected seconds such as 6 or 2.5");
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty() || frac.len() > 3 {
        return Err(bad());
    }
    let int: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let mut ms = int.checked_mul(1000).ok_or_else(bad)?;
    if !frac.is_empty() {
        let f: u64 = frac.parse().map_err(|_| bad())?;
        ms += f * 10u64.pow(3 - frac.len() as u32);
    }
    Ok(ms)
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let opts = packager::Options {
        title: args.title.clone(),
        out_dir: args.out.clone(),
        mode: if args.segmented {
            PackagingMode::Segmented
        } else {
            PackagingMode::OnDemand
        },
        segment_duration_ms: parse_seconds(&args.segment_duration)?,
        inputs: args.inputs,
    };
    let tty = std::io::stderr().is_terminal();
    let last = Mutex::new(Instant::now() - Duration::from_secs(1));
    let bar = |done: u64, total: u64| {
        let Ok(mut l) = last.lock() else { return };
        if done < total && l.elapsed() < Duration::from_millis(100) {
            return;
        }
        *l = Instant::now();
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        let filled = (pct / 4) as usize;
        let mut e = std::io::stderr().lock();
        let _ = write!(
            e,
            "\r[{}{}] {pct:3}% {:.1}/{:.1} MB",
            "#".repeat(filled),
            " ".repeat(25 - filled),
            done as f64 / 1e6,
            total as f64 / 1e6
        );
        let _ = e.flush();
    };
    let result = packager::package(&opts, if tty { Some(&bar) } else { None });
    if tty {
        eprintln!();
    }
    let entry = result.with_context(|| format!("packaging {}", opts.title))?;
    println!(
        "packaged {} into {}: {} renditions, {} files, {} bytes, {:.3} s",
        entry.title,
        opts.out_dir.join(&entry.title).display(),
        entry.renditions.len(),
        entry.files.len() + 1,
        entry.total_bytes(),
        entry.duration_ms as f64 / 1000.0
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_seconds;

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("6").unwrap(), 6000);
        assert_eq!(parse_seconds("2.5").unwrap(), 2500);
        assert_eq!(parse_seconds("0.04").unwrap(), 40);
        assert!(parse_seconds("x").is_err());
        assert!(parse_seconds("1.2345").is_err());
        assert!(parse_seconds("-1").is_err());
    }
}
