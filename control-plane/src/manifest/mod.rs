//! Per-session manifests: the title's stored HLS master playlist and DASH MPD, rewritten for one
//! session. Only renditions the session may play are kept (matched by rendition id: the
//! Representation `id` in DASH, the first path segment of a URI in HLS), and every appliance of
//! the ranked list becomes an alternative location whose URL carries a grant for its cluster:
//! HLS pathways (`PATHWAY-ID`, `#EXT-X-CONTENT-STEERING`) and DASH `BaseURL@serviceLocation`
//! plus `<ContentSteering>`.
//!
//! Pure text in, text out: the caller mints the grants and builds the base URLs.

pub mod dash;
pub mod hls;

/// One alternative location: an appliance and the base URL players prefix relative URIs with,
/// `http://host:port/g/<grant>/<title>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Pathway id / service location: the appliance id.
    pub id: String,
    /// Absolute base URL ending in `/`.
    pub base_url: String,
}

/// A stored manifest that cannot be rewritten; the message says where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The HLS master playlist is malformed.
    #[error("HLS master playlist line {line}: {reason}")]
    Hls {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The MPD is malformed.
    #[error("DASH MPD: {0}")]
    Dash(String),
}

/// The rendition id a relative URI belongs to: its first path segment, or `None` for a
/// title-level file (no `/`).
pub fn rendition_of(uri: &str) -> Option<&str> {
    uri.split_once('/').map(|(first, _)| first)
}

/// Whether a URI is relative and safe to append to a base URL: no scheme, no leading `/`, no
/// `..` segments, no query-breaking characters.
pub fn is_safe_relative(uri: &str) -> bool {
    !uri.is_empty()
        && !uri.starts_with('/')
        && !uri.contains("://")
        && !uri.contains('\\')
        && !uri.chars().any(|c| c.is_control() || c == '"' || c == '<')
        && uri.split('/').all(|s| s != ".." && s != ".")
}
