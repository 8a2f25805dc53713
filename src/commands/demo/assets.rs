//! What the demo needs on disk before it starts: packaged titles, signing keys and the player
//! libraries. Each step is skipped when its output is already there, so a second run starts in
//! seconds.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

/// The pinned npm manifest and lock for the player libraries (Shaka Player, hls.js).
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
}

impl DemoTitle {
    /// The content-keys file of an encrypted title (beside, never inside, its directory).
    pub fn keys_file(&self, titles_dir: &Path) -> Option<PathBuf> {
        self.encrypted
            .then(|| titles_dir.join(format!("{}.keys.json", self.id)))
    }
}

/// The demo's titles.
pub const TITLES: [DemoTitle; 2] = [
    DemoTitle {
        id: "demo-h264",
        ladder: "ladder-h264",
        name: "Test pattern (H.264 + AAC, SD and HD, Clear Key cenc)",
        encrypted: true,
    },
    DemoTitle {
        id: "demo-vp9",
        ladder: "ladder-vp9",
        name: "Test pattern (VP9 + Opus, clear)",
        encrypted: false,
    },
];

/// Packages every demo title into `titles_dir` unless its `catalog.json` exists.
pub fn ensure_titles(fixtures: &Path, titles_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(titles_dir)
        .with_context(|| format!("creating {}", titles_dir.display()))?;
    for t in &TITLES {
        if titles_dir.join(t.id).join("catalog.json").is_file() {
            continue;
        }
        let ladder = fixtures.join(t.ladder);
        let mut inputs: Vec<PathBuf> = std::fs::read_dir(&ladder)
            .with_context(|| format!("reading fixture ladder {}", ladder.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "mp4"))
            .collect();
        inputs.sort();
        if inputs.is_empty() {
            bail!("{}: no .mp4 renditions", ladder.display());
        }
        eprintln!("demo: packaging {} from {}", t.id, ladder.display());
        let mut encrypt: Vec<std::ffi::OsString> = Vec::new();
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
            // Short segments, so a player keeps fetching through the 12 s fixtures and an
            // appliance stopped mid-playback shows failover.
            .args(["--segment-duration", "2"])
            .args(&inputs)
            .status()
            .context("running outpost package")?;
        if !status.success() {
            bail!("packaging {} failed ({status})", t.id);
        }
    }
    Ok(())
}

/// Makes sure the player libraries are in `<web_dir>/node_modules`, fetching them with npm on
/// first use (saying so). Returns the `node_modules` directory.
pub fn ensure_player_libraries(web_dir: &Path) -> anyhow::Result<PathBuf> {
    let modules = web_dir.join("node_modules");
    let ready = [
        "shaka-player/dist/shaka-player.compiled.js",
        "hls.js/dist/hls.min.js",
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
    if ["shaka-player", "hls.js"]
        .iter()
        .all(|p| checkout.join(p).is_dir())
    {
        for p in ["shaka-player", "hls.js"] {
            copy_tree(&checkout.join(p), &modules.join(p))?;
        }
        return Ok(modules);
    }
    std::fs::write(web_dir.join("package.json"), WEB_PACKAGE_JSON)?;
    std::fs::write(web_dir.join("package-lock.json"), WEB_PACKAGE_LOCK)?;
    eprintln!(
        "demo: fetching Shaka Player and hls.js with npm into {} (first run only)",
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
