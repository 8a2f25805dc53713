//! Loading the grant public keys from a directory of `<kid>.pub.pem` files (the `protocol` crate
//! does no I/O). Used at start-up and on SIGHUP (key rotation).

use std::path::{Path, PathBuf};

use protocol::grant::{GrantError, KeyRing, PUBLIC_KEY_SUFFIX};

/// Why the key directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading the directory or a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is not a valid public key.
    #[error("public keys in {dir}: {source}")]
    Invalid {
        /// The directory.
        dir: PathBuf,
        /// The cause, naming the file.
        source: GrantError,
    },
    /// No `*.pub.pem` file.
    #[error("{0}: no public keys (*{PUBLIC_KEY_SUFFIX}) found")]
    Empty(PathBuf),
}

/// Most key files read from the directory (a ring holds a handful during rotation).
pub const MAX_KEY_FILES: usize = 256;

/// Largest key file read, bytes.
pub const MAX_KEY_FILE_BYTES: u64 = 16 * 1024;

/// Reads every `<kid>.pub.pem` in `dir` into a key ring; fails when there is none.
pub fn load_dir(dir: &Path) -> Result<KeyRing, KeyError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KeyError::Io { path, source }
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(PUBLIC_KEY_SUFFIX) {
            continue;
        }
        let path = entry.path();
        let len = entry.metadata().map_err(io(&path))?.len();
        if len > MAX_KEY_FILE_BYTES || files.len() >= MAX_KEY_FILES {
            return Err(KeyError::Io {
                path,
                source: std::io::Error::other("key file too large or too many key files"),
            });
        }
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        files.push((name, text));
    }
    let ring = KeyRing::from_pem_files(files.iter().map(|(n, t)| (n.as_str(), t.as_str())))
        .map_err(|source| KeyError::Invalid {
            dir: dir.to_path_buf(),
            source,
        })?;
    if ring.is_empty() {
        return Err(KeyError::Empty(dir.to_path_buf()));
    }
    Ok(ring)
}
