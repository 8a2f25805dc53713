//! What the demo needs on disk before it starts: packaged titles, signing keys and the player
//! libraries. Each step is skipped when its output is already there, so a second run starts in
//! seconds.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

/// The pinned npm manifest and lock for the player libraries (Shaka Player, hls.js, dash.js).
const WEB_PACKAGE_JSON: &str = include_str!("../../../web/package.json");
const WEB_PACKAGE_LOCK: &str = include_str!("../../../web/package-lock.json");

/// A fixture ladder packaged as one demo title.
#[derive(Debug, Clone)]
pub struct DemoTitle {
    /// Title id.
    pub id: &'static str,
    /// Directory under the fixtures' `media/`.
    pub ladder: &'static str,
    /// Human name for the page.
    pub name: &'static str,
    /// Packaged with Common Encryption (`cenc`), keys in `<titles>/<id>.keys.json`.
    pub encrypted: bool,
    /// Audio tracks, `(language, file in the ladder)`, each packaged with `--audio LANG:main:FILE`.
    pub audio: &'static [(&'static str, &'static str)],
    /// WebVTT tracks, `(language, role, file in the ladder)`, packaged with `--text`.
    pub text: &'static [(&'static str, &'static str, &'static str)],
    /// JPEG tile grids in the ladder, a `--thumbnails` pattern (`%d` numbers from 1), one
    /// thumbnail every [`THUMBNAIL_INTERVAL`] seconds laid out as [`THUMBNAIL_GRID`].
    pub thumbnails: &'static str,
    /// A keyframe-only rendition in the ladder, packaged with `--trick-play` (DASH trick mode
    /// AdaptationSet, HLS I-frame variant) for fast forward and rewind.
    pub trick: &'static str,
}

impl DemoTitle {
    /// The content-keys file of an encrypted title (beside, never inside, its directory).
    pub fn keys_file(&self, titles_dir: &Path) -> Option<PathBuf> {
        self.encrypted
            .then(|| titles_dir.join(format!("{}.keys.json", self.id)))
    }

    /// The stamp written beside a packaged title: a fingerprint of its inputs and of the
    /// packaging arguments (see [`ensure_titles`]).
    fn stamp_file(&self, titles_dir: &Path) -> PathBuf {
        titles_dir.join(format!("{}.stamp", self.id))
    }
}

/// Seconds between two thumbnails of the demo's tile grids (fixtures/make-media.sh).
pub const THUMBNAIL_INTERVAL: &str = "2";
/// Layout of the demo's tile grids (fixtures/make-media.sh).
pub const THUMBNAIL_GRID: &str = "3x2";

/// Subtitles in two languages and an English forced track (signs), in every demo title.
const TEXT: &[(&str, &str, &str)] = &[
    ("en", "subtitle", "subs-en.vtt"),
    ("fr", "subtitle", "subs-fr.vtt"),
    ("en", "forced", "forced-en.vtt"),
];

/// The demo's titles.
pub const TITLES: [DemoTitle; 2] = [
    DemoTitle {
        id: "demo-h264",
        ladder: "ladder-h264",
        name: "Test pattern (H.264 + AAC, SD and HD, Clear Key cenc)",
        encrypted: true,
        audio: &[("en", "audio-aac.mp4"), ("fr", "audio-fr-aac.mp4")],
        text: TEXT,
        thumbnails: "thumbs-%d.jpg",
        trick: "trick-144p.mp4",
    },
    DemoTitle {
        id: "demo-vp9",
        ladder: "ladder-vp9",
        name: "Test pattern (VP9 + Opus, clear)",
        encrypted: false,
        audio: &[("en", "audio-opus.mp4"), ("fr", "audio-fr-opus.mp4")],
        text: TEXT,
        thumbnails: "thumbs-%d.jpg",
        trick: "trick-144p.mp4",
    },
];

/// The `outpost package` arguments for one title (everything but `--keys-out`), and every
/// input file they name.
fn package_args(t: &DemoTitle, ladder: &Path) -> anyhow::Result<(Vec<OsString>, Vec<PathBuf>)> {
    let mut args: Vec<OsString> = Vec::new();
    let mut files = Vec::new();
    let file = |name: &str| -> anyhow::Result<PathBuf> {
        let p = ladder.join(name);
        if !p.is_file() {
            bail!("{}: missing demo fixture", p.display());
        }
        Ok(p)
    };
    // Short segments, so a player keeps fetching through the 12 s fixtures and an appliance
    // stopped mid-playback shows failover.
    args.extend(["--segment-duration".into(), "2".into()]);
    for (lang, name) in t.audio {
        let p = file(name)?;
        let mut a = OsString::from(format!("{lang}:main:"));
        a.push(&p);
        args.extend(["--audio".into(), a]);
        files.push(p);
    }
    for (lang, role, name) in t.text {
        let p = file(name)?;
        let mut a = OsString::from(format!("{lang}:{role}:"));
        a.push(&p);
        args.extend(["--text".into(), a]);
        files.push(p);
    }
    let mut n = 1;
    while let Ok(p) = file(&t.thumbnails.replace("%d", &n.to_string())) {
        files.push(p);
        n += 1;
    }
    if n == 1 {
        bail!(
            "{}: missing demo fixture",
            ladder.join(t.thumbnails.replace("%d", "1")).display()
        );
    }
    args.extend([
        "--thumbnails".into(),
        ladder.join(t.thumbnails).into_os_string(),
        "--thumbnail-interval".into(),
        THUMBNAIL_INTERVAL.into(),
        "--thumbnail-grid".into(),
        THUMBNAIL_GRID.into(),
    ]);
    let trick = file(t.trick)?;
    args.extend(["--trick-play".into(), trick.clone().into_os_string()]);
    files.push(trick);
    // The video ladder: every `video-*.mp4`, as positional inputs.
    let mut videos: Vec<PathBuf> = std::fs::read_dir(ladder)
        .with_context(|| format!("reading fixture ladder {}", ladder.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "mp4")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("video-"))
        })
        .collect();
    videos.sort();
    if videos.is_empty() {
        bail!("{}: no video-*.mp4 renditions", ladder.display());
    }
    args.extend(videos.iter().map(|v| v.clone().into_os_string()));
    files.extend(videos);
    Ok((args, files))
}

/// A fingerprint of a title's packaging: the arguments (with file names, not directories, so
/// moving the fixtures does not count) and every input's bytes (FNV-1a, 64 bits: this detects
/// changed fixtures, it is no security boundary), plus this binary's version.
fn stamp(
    t: &DemoTitle,
    ladder: &Path,
    args: &[OsString],
    files: &[PathBuf],
) -> anyhow::Result<String> {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    feed(env!("CARGO_PKG_VERSION").as_bytes());
    feed(t.id.as_bytes());
    feed(&[u8::from(t.encrypted)]);
    for a in args {
        // Paths of fixtures count by file name only.
        let a = a
            .to_string_lossy()
            .replace(ladder.to_string_lossy().as_ref(), "");
        feed(a.as_bytes());
        feed(&[0]);
    }
    for f in files {
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        feed(&(bytes.len() as u64).to_le_bytes());
        feed(&bytes);
    }
    Ok(format!("{h:016x}"))
}

/// Packages every demo title into `titles_dir` unless it is there already, packaged from the
/// same inputs: a stamp file beside each title records a fingerprint of its inputs, and a title
/// whose stamp is missing or differs (an older demo's data directory, changed fixtures) is
/// packaged again. Returns the ids of the titles packaged by this call (the caller drops stale
/// copies of them from the appliances' caches).
pub fn ensure_titles(fixtures: &Path, titles_dir: &Path) -> anyhow::Result<Vec<&'static str>> {
    std::fs::create_dir_all(titles_dir)
        .with_context(|| format!("creating {}", titles_dir.display()))?;
    let mut packaged = Vec::new();
    for t in &TITLES {
        let ladder = fixtures.join(t.ladder);
        let (args, files) = package_args(t, &ladder)?;
        let want = stamp(t, &ladder, &args, &files)?;
        let stamp_file = t.stamp_file(titles_dir);
        let dir = titles_dir.join(t.id);
        let current = std::fs::read_to_string(&stamp_file).unwrap_or_default();
        if dir.join("catalog.json").is_file() && current.trim() == want {
            continue;
        }
        if dir.exists() {
            eprintln!(
                "demo: {} was packaged from other inputs; packaging it again",
                t.id
            );
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("removing the stale {}", dir.display()))?;
        }
        let _ = std::fs::remove_file(&stamp_file);
        eprintln!("demo: packaging {} from {}", t.id, ladder.display());
        let mut encrypt: Vec<OsString> = Vec::new();
        if let Some(keys) = t.keys_file(titles_dir) {
            // A keys file left by an interrupted run would be refused as existing: start over.
            let _ = std::fs::remove_file(&keys);
            encrypt.extend(["--encrypt".into(), "cenc".into(), "--keys-out".into()]);
            encrypt.push(keys.into_os_string());
        }
        let status = Command::new(std::env::current_exe()?)
            .arg("package")
            .args(&encrypt)
            .arg("--title")
            .arg(t.id)
            .arg("--out")
            .arg(titles_dir)
            .args(&args)
            .status()
            .context("running outpost package")?;
        if !status.success() {
            bail!("packaging {} failed ({status})", t.id);
        }
        std::fs::write(&stamp_file, format!("{want}\n"))
            .with_context(|| format!("writing {}", stamp_file.display()))?;
        packaged.push(t.id);
    }
    Ok(packaged)
}

/// The npm packages of the player libraries (web/package.json).
const PACKAGES: [&str; 3] = ["shaka-player", "hls.js", "dashjs"];

/// dash.js's bundle (player, Clear Key and CMCD included) inside its npm package.
pub const DASHJS_DIST: &str = "dashjs/dist/modern/umd/dash.all.min.js";

/// Makes sure the player libraries are in `<web_dir>/node_modules`, fetching them with npm on
/// first use (saying so). Returns the `node_modules` directory.
pub fn ensure_player_libraries(web_dir: &Path) -> anyhow::Result<PathBuf> {
    let modules = web_dir.join("node_modules");
    let ready = [
        "shaka-player/dist/shaka-player.compiled.js",
        "hls.js/dist/hls.min.js",
        DASHJS_DIST,
    ]
    .iter()
    .all(|f| modules.join(f).is_file());
    if ready {
        return Ok(modules);
    }
    std::fs::create_dir_all(web_dir).with_context(|| format!("creating {}", web_dir.display()))?;
    // A source checkout where `scripts/install-deps` already ran `npm ci` in web/ has the same
    // pinned packages: copy them rather than asking npm again.
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/node_modules");
    if PACKAGES.iter().all(|p| checkout.join(p).is_dir()) {
        for p in PACKAGES {
            copy_tree(&checkout.join(p), &modules.join(p))?;
        }
        return Ok(modules);
    }
    std::fs::write(web_dir.join("package.json"), WEB_PACKAGE_JSON)?;
    std::fs::write(web_dir.join("package-lock.json"), WEB_PACKAGE_LOCK)?;
    eprintln!(
        "demo: fetching Shaka Player, hls.js and dash.js with npm into {} (first run only)",
        modules.display()
    );
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(web_dir)
        .status()
        .context("running npm (Node.js and npm are needed for the player page; or pass --no-browser-assets)")?;
    if !status.success() {
        bail!("npm ci in {} failed ({status})", web_dir.display());
    }
    Ok(modules)
}

/// Copies a directory tree (a packaged title into a cache directory), writing into a temporary
/// name and renaming, so an appliance never sees half a title.
pub fn copy_title(src: &Path, cache_dir: &Path, title: &str) -> anyhow::Result<()> {
    let dest = cache_dir.join(title);
    if dest.join("catalog.json").is_file() {
        return Ok(());
    }
    let tmp = cache_dir.join(format!(".tmp-{title}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    copy_tree(src, &tmp)?;
    std::fs::rename(&tmp, &dest)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
    Ok(())
}

fn copy_tree(src: &Path, dest: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dest)?;
    for entry in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let entry = entry?;
        let to = dest.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &to)?;
        } else {
            std::fs::copy(entry.path(), &to)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}
