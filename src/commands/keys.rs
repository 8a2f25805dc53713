//! `outpost keys`: grant signing keys on disk.
//!
//! A key pair is two PEM files named by key id: `<kid>.key.pem` (PKCS#8 private key, mode 0600)
//! and `<kid>.pub.pem` (SPKI public key). A directory of `*.pub.pem` files is what appliances and
//! `outpost grant verify` take as `--public-keys`.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use protocol::grant::{is_valid_kid, KeyRing, SigningKey, PRIVATE_KEY_SUFFIX, PUBLIC_KEY_SUFFIX};
use rand::RngCore as _;

/// Flags for `outpost keys`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, clap::Subcommand)]
enum KeysCommand {
    /// Generate a new Ed25519 signing key and its public key.
    Generate {
        /// Directory to write `<kid>.key.pem` (mode 0600) and `<kid>.pub.pem` into.
        #[arg(long)]
        out: PathBuf,
        /// Key id; defaults to `k` followed by the current Unix time.
        #[arg(long)]
        kid: Option<String>,
    },
}

/// Runs `outpost keys`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        KeysCommand::Generate { out, kid } => {
            let kid = kid.unwrap_or_else(|| format!("k{}", super::unix_now()));
            let (private, public) = generate(&out, &kid)?;
            println!("kid {kid}");
            println!("private {}", private.display());
            println!("public {}", public.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Generates a key pair into `dir`; refuses to overwrite an existing key of the same id.
pub fn generate(dir: &Path, kid: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    if !is_valid_kid(kid) {
        bail!(
            "--kid {kid:?}: a key id is 1-64 characters of [A-Za-z0-9._-], not starting with '.'"
        );
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let key = SigningKey::from_seed(kid, seed)?;
    let private = dir.join(format!("{kid}{PRIVATE_KEY_SUFFIX}"));
    let public = dir.join(format!("{kid}{PUBLIC_KEY_SUFFIX}"));
    for p in [&private, &public] {
        if p.exists() {
            bail!(
                "{} already exists: refusing to overwrite a key",
                p.display()
            );
        }
    }
    write_new(&private, key.to_pkcs8_pem().as_bytes(), 0o600)?;
    write_new(&public, key.public_key_pem().as_bytes(), 0o644)?;
    Ok((private, public))
}

/// Writes a new file with `mode` from the start (never briefly world-readable), fsyncs it.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Loads a private key file; the key id is the file name without `.key.pem`.
pub fn load_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let kid = name.strip_suffix(PRIVATE_KEY_SUFFIX).with_context(|| {
        format!(
            "--key {}: a private key file is named <kid>{PRIVATE_KEY_SUFFIX}",
            path.display()
        )
    })?;
    let pem = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    SigningKey::from_pkcs8_pem(kid, &pem).with_context(|| format!("--key {}", path.display()))
}

/// Loads every `<kid>.pub.pem` in `dir` into a key ring; fails if there are none.
pub fn load_key_ring(dir: &Path) -> anyhow::Result<KeyRing> {
    let mut files = Vec::new();
    let entries = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(PUBLIC_KEY_SUFFIX) {
            let text = fs::read_to_string(entry.path())
                .with_context(|| format!("reading {}", entry.path().display()))?;
            files.push((name, text));
        }
    }
    let ring = KeyRing::from_pem_files(files.iter().map(|(n, t)| (n.as_str(), t.as_str())))
        .with_context(|| format!("public keys in {}", dir.display()))?;
    if ring.is_empty() {
        bail!(
            "{}: no public keys (*{PUBLIC_KEY_SUFFIX}) found",
            dir.display()
        );
    }
    Ok(ring)
}
