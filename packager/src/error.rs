//! The packager's typed errors. Every error about an input names the file; errors inside the
//! box tree also name the box path (`moov/trak[1]/mdia/minf/stbl/stsz`) and the byte offset.

use std::path::PathBuf;

use thiserror::Error;

/// What can go wrong while packaging.
#[derive(Debug, Error)]
pub enum Error {
    /// Reading an input or writing the output failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An input is not a well-formed MP4.
    #[error("{file}: invalid MP4 at {box_path} (byte offset {offset}): {reason}")]
    Invalid {
        /// The input file.
        file: PathBuf,
        /// Box path such as `moov/trak[1]/mdia/minf/stbl/stsz` (`/` for the top level).
        box_path: String,
        /// Absolute byte offset in the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An input is well-formed but uses something the packager does not support.
    #[error("{file}: unsupported at {box_path}: {reason}")]
    Unsupported {
        /// The input file.
        file: PathBuf,
        /// Box path.
        box_path: String,
        /// What is not supported.
        reason: String,
    },
    /// A size or count in an input exceeds a limit in [`crate::limits`].
    #[error(
        "{file}: {box_path} (byte offset {offset}): {what} is {value}, over the limit of {limit}"
    )]
    OverLimit {
        /// The input file.
        file: PathBuf,
        /// Box path.
        box_path: String,
        /// Absolute byte offset in the file.
        offset: u64,
        /// What was counted.
        what: &'static str,
        /// The value found.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// A text track (WebVTT) is malformed or does not fit the title.
    #[error("{file}: line {line}, {cue}: {reason}")]
    Text {
        /// The text file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Which cue: `cue 3 ("intro")`, or `header`.
        cue: String,
        /// What is wrong.
        reason: String,
    },
    /// The renditions cannot be packaged together (keyframes not aligned, ids clash, ...).
    #[error("ladder: {0}")]
    Ladder(String),
    /// A `--trick-play` input cannot be a trick play rendition: a sample that is not a sync
    /// sample, a codec other than the ladder's, timing that cannot line up with the video's
    /// segments.
    #[error("{file}: not usable for trick play: {reason}")]
    TrickPlay {
        /// The input file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The options are unusable (bad title, bad segment duration, no inputs, ...).
    #[error("{0}")]
    Options(String),
    /// The content keys do not fit the title or the scheme; the message names the field.
    #[error("keys: {0}")]
    Keys(String),
    /// The catalog entry the packager built breaks a schema rule (a packager bug).
    #[error(transparent)]
    Catalog(#[from] protocol::catalog::CatalogError),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias for the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
