//! `outpost package`: encoded MP4 renditions → a title directory (CMAF files, DASH MPD, HLS
//! playlists, `catalog.json`). Glue only: flags to [`packager::Options`], a progress bar on a
//! terminal, a summary on stdout. The work is in the `packager` crate.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use protocol::catalog::PackagingMode;
use protocol::content_keys::{ContentKeys, Scheme};

/// Flags for `outpost package`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Title id: the directory created in --out (`[A-Za-z0-9._-]`, 1-128 characters).
    #[arg(long)]
    pub title: String,
    /// Output directory; the title is written to `OUT/<title>/` (atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// Write separate init and media segment files (DASH SegmentTemplate, HLS segment URIs)
    /// instead of one CMAF file per track read by byte range.
    #[arg(long)]
    pub segmented: bool,
    /// Target segment duration in seconds (snapped to keyframes).
    #[arg(long, default_value = "6", value_name = "SECONDS")]
    pub segment_duration: String,
    /// Encrypt with Common Encryption: `cenc` (AES-128 CTR) or `cbcs` (AES-128 CBC, 1:9 pattern
    /// for video, constant IV).
    #[arg(long, value_name = "SCHEME")]
    pub encrypt: Option<String>,
    /// Content-keys JSON to encrypt with (default: fresh random keys, one for audio and one per
    /// video tier, written to --keys-out).
    #[arg(long, value_name = "FILE", requires = "encrypt")]
    pub keys: Option<PathBuf>,
    /// Where fresh keys are written (mode 0600; default `OUT/<title>.keys.json`, beside the
    /// title directory and never inside it).
    #[arg(
        long,
        value_name = "FILE",
        requires = "encrypt",
        conflicts_with = "keys"
    )]
    pub keys_out: Option<PathBuf>,
    /// A further audio input with its language and role: `LANG:ROLE:PATH`, role main,
    /// commentary or description (audio description); LANG `-` reads the file's `elng`/`mdhd`
    /// language. Repeatable; the rendition id is the file stem.
    #[arg(
        long = "audio",
        value_name = "LANG:ROLE:PATH",
        allow_hyphen_values = true
    )]
    pub audio: Vec<String>,
    /// A text track: `LANG:ROLE:PATH`, role subtitle, caption or forced, PATH a WebVTT (`.vtt`)
    /// or IMSC1/TTML (`.ttml`, `.xml`) file; `LANG` empty or `-` takes TTML's `xml:lang`
    /// (refused, naming line and cue, when cues overlap, do not parse or end past the title).
    /// Repeatable; the rendition id is the file stem.
    #[arg(
        long = "text",
        value_name = "LANG:ROLE:PATH",
        allow_hyphen_values = true
    )]
    pub text: Vec<String>,
    /// Thumbnails: JPEG tile grids, a directory (its `*.jpg` by name) or a pattern such as
    /// `tiles/%03d.jpg` (numbers from 0 or 1). Each image holds --thumbnail-grid thumbnails
    /// taken every --thumbnail-interval; copied into `thumbnails/` (DASH image AdaptationSet,
    /// HLS image playlist).
    #[arg(
        long,
        value_name = "DIR_OR_PATTERN",
        requires_all = ["thumbnail_interval", "thumbnail_grid"]
    )]
    pub thumbnails: Option<PathBuf>,
    /// Seconds between two thumbnails of --thumbnails.
    #[arg(long, value_name = "SECONDS", requires = "thumbnails")]
    pub thumbnail_interval: Option<String>,
    /// Layout of each --thumbnails image: `COLSxROWS`, e.g. 5x5.
    #[arg(long, value_name = "COLSxROWS", requires = "thumbnails")]
    pub thumbnail_grid: Option<String>,
    /// A keyframe-only video MP4 (every sample a sync sample, the ladder's codec, covering the
    /// whole title) packaged as a trick play rendition: a DASH trick mode AdaptationSet and an
    /// HLS I-frame playlist, never a normal variant. Its segments start at its frames nearest
    /// the ladder's segment boundaries (refused when it has fewer frames than segments).
    /// Repeatable (e.g. one per tier); the rendition id is the file stem.
    #[arg(long = "trick-play", value_name = "FILE")]
    pub trick_play: Vec<PathBuf>,
    /// Input MP4 files (progressive or fragmented), one rendition per track; the rendition id is
    /// the file stem.
    #[arg(required_unless_present = "audio", value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
}

/// Parses a decimal number of seconds into milliseconds (no float rounding surprises).
fn parse_seconds(s: &str) -> anyhow::Result<u64> {
    parse_seconds_flag("--segment-duration", s)
}

fn parse_seconds_flag(flag: &str, s: &str) -> anyhow::Result<u64> {
    let bad = || anyhow::anyhow!("{flag} {s:?}: expected seconds such as 6 or 2.5");
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

fn random16() -> [u8; 16] {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// Writes a keys file with mode 0600, refusing to replace an existing one.
fn write_keys_file(path: &Path, keys: &ContentKeys) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("--keys-out {}: cannot create the keys file", path.display()))?;
    f.write_all(keys.to_json().as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The keys to encrypt with and, for fresh keys, where they must be written.
fn encryption(
    args: &Args,
    scheme: &str,
) -> anyhow::Result<(packager::encrypt::EncryptOptions, Option<PathBuf>)> {
    let scheme = match scheme {
        "cenc" => Scheme::Cenc,
        "cbcs" => Scheme::Cbcs,
        other => anyhow::bail!("--encrypt {other:?}: expected cenc or cbcs"),
    };
    let iv_seed = random16();
    if let Some(path) = &args.keys {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("--keys {}", path.display()))?;
        let keys =
            ContentKeys::from_json(&text).with_context(|| format!("--keys {}", path.display()))?;
        packager::encrypt::check_keys(&keys, scheme)
            .with_context(|| format!("--keys {}", path.display()))?;
        return Ok((packager::encrypt::EncryptOptions { keys, iv_seed }, None));
    }
    let out = args
        .keys_out
        .clone()
        .unwrap_or_else(|| args.out.join(format!("{}.keys.json", args.title)));
    let title_dir = args.out.join(&args.title);
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    if abs(&out).starts_with(abs(&title_dir)) {
        anyhow::bail!(
            "--keys-out {}: the keys file must not be inside the title directory {} (it is copied to appliances)",
            out.display(),
            title_dir.display()
        );
    }
    if out.exists() {
        anyhow::bail!(
            "--keys-out {}: already exists; pass it as --keys to reuse those keys, or remove it",
            out.display()
        );
    }
    let mut video_inputs = args.inputs.clone();
    video_inputs.extend(args.trick_play.iter().cloned());
    let (mut audio, tiers) = packager::package::keys_needed(&video_inputs)?;
    audio |= !args.audio.is_empty();
    let mut rng = random16;
    let keys = packager::encrypt::generate_keys(&args.title, scheme, audio, &tiers, &mut rng);
    Ok((
        packager::encrypt::EncryptOptions { keys, iv_seed },
        Some(out),
    ))
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (encryption, keys_out) = match &args.encrypt {
        Some(s) => {
            let (e, out) = encryption(&args, s)?;
            (Some(e), out)
        }
        None => (None, None),
    };
    let audio = args
        .audio
        .iter()
        .map(|a| packager::AudioInput::parse(a))
        .collect::<Result<Vec<_>, _>>()?;
    let text = args
        .text
        .iter()
        .map(|t| packager::TextInput::parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    let thumbnails = match (
        &args.thumbnails,
        &args.thumbnail_interval,
        &args.thumbnail_grid,
    ) {
        (Some(source), Some(interval), Some(grid)) => {
            let (cols, rows) = packager::thumbs::parse_grid(grid)?;
            Some(packager::ThumbnailInput {
                source: source.clone(),
                interval_ms: parse_seconds_flag("--thumbnail-interval", interval)?,
                cols,
                rows,
            })
        }
        _ => None,
    };
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
        audio,
        text,
        thumbnails,
        trick_play: args.trick_play,
        encryption,
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
    let result =
        packager::package::package_with_warnings(&opts, if tty { Some(&bar) } else { None });
    if tty {
        eprintln!();
    }
    let (entry, warnings) = result.with_context(|| format!("packaging {}", opts.title))?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if let (Some(path), Some(e)) = (&keys_out, &opts.encryption) {
        if let Err(err) = write_keys_file(path, &e.keys) {
            // Without its keys the title is useless: remove it rather than leave it unplayable.
            let _ = std::fs::remove_dir_all(opts.out_dir.join(&entry.title));
            return Err(err);
        }
        println!("keys written to {} (mode 0600)", path.display());
    }
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
