//! The catalog entry: what the packager writes beside a packaged title (`catalog.json`) and the
//! control plane imports. It describes one title: its renditions (with codec string, bandwidth,
//! resolution and quality tier), every output file with its size and SHA-256, and the manifests.
//!
//! # Layout contract
//!
//! A title directory is `<title>/` holding title-level files (the HLS master playlist
//! [`HLS_MASTER`], the MPD [`DASH_MANIFEST`], this entry [`CATALOG_FILE`]) and one subdirectory
//! per rendition, named by the rendition id, holding that rendition's media (and its HLS media
//! playlist). Grants restrict renditions by that subdirectory name (see
//! [`crate::grant::ResourcePath::rendition`]).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The schema version this crate writes and reads.
pub const CATALOG_VERSION: u32 = 1;
/// File name of the HLS master playlist inside a title directory.
pub const HLS_MASTER: &str = "master.m3u8";
/// File name of the DASH MPD inside a title directory.
pub const DASH_MANIFEST: &str = "manifest.mpd";
/// File name of the catalog entry inside a title directory.
pub const CATALOG_FILE: &str = "catalog.json";
/// Placeholder the packager writes as the Clear Key licence URL (`dashif:Laurl`) of an encrypted
/// title's MPD; the control plane replaces it with its licence endpoint in every session's MPD.
pub const CLEARKEY_LICENSE_URL_PLACEHOLDER: &str = "$OUTPOST_CLEARKEY_LICENSE_URL$";
/// The `role` of a trick play video rendition: keyframes only, for fast forward and rewind (a
/// DASH trick mode AdaptationSet, an HLS I-frame playlist), never picked for normal playback.
pub const TRICK_ROLE: &str = "trick";

/// A catalog entry that does not parse or breaks a rule; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CatalogError {
    /// Not valid JSON for the schema (the message carries serde's line and column).
    #[error("catalog entry: {0}")]
    Parse(String),
    /// A field breaks a rule; `field` is a JSON path such as `renditions[2].id`.
    #[error("catalog entry field {field}: {reason}")]
    Invalid {
        /// Where in the entry.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> CatalogError {
    CatalogError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A quality tier, derived from a video rendition's height. Ordered: `Sd < Hd < Fhd < Uhd`, so
/// an effective tier is the `min` of the plan's, the window's and the device's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "UPPERCASE")]
pub enum Tier {
    /// Below 720 lines.
    Sd,
    /// 720 to 1079 lines.
    Hd,
    /// 1080 to 2159 lines.
    Fhd,
    /// 2160 lines and above.
    Uhd,
}

impl Tier {
    /// The tier rule: height < 720 is SD, < 1080 HD, < 2160 FHD, otherwise UHD.
    pub fn from_height(height: u32) -> Tier {
        match height {
            0..=719 => Tier::Sd,
            720..=1079 => Tier::Hd,
            1080..=2159 => Tier::Fhd,
            _ => Tier::Uhd,
        }
    }

    /// Every tier, lowest first.
    pub const ALL: [Tier; 4] = [Tier::Sd, Tier::Hd, Tier::Fhd, Tier::Uhd];

    /// The upper-case name (`SD`, `HD`, `FHD`, `UHD`).
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Sd => "SD",
            Tier::Hd => "HD",
            Tier::Fhd => "FHD",
            Tier::Uhd => "UHD",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "SD" => Ok(Tier::Sd),
            "HD" => Ok(Tier::Hd),
            "FHD" => Ok(Tier::Fhd),
            "UHD" => Ok(Tier::Uhd),
            _ => Err(format!("{s:?} is not a tier (SD, HD, FHD, UHD)")),
        }
    }
}

/// What a track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum TrackKind {
    /// Video.
    Video,
    /// Audio.
    Audio,
    /// Text (subtitles, captions): segmented WebVTT (HLS) and text in MP4 (DASH); codec `wvtt`
    /// (WebVTT input) or `stpp.ttml.im1t` (IMSC1 input), `role` subtitle, caption or
    /// forced. Allowed at every tier, like audio.
    Text,
    /// Thumbnails: JPEG tile grids (codec `jpeg`; `width`/`height` are the grid image's).
    /// Allowed at every tier, like audio.
    Image,
}

/// How the title was packaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum PackagingMode {
    /// One CMAF file per track with a `sidx`, read by byte range (DASH on-demand, HLS byte ranges).
    OnDemand,
    /// Separate init and media segment files (DASH SegmentTemplate, HLS segment URIs).
    Segmented,
}

/// One catalog entry: a packaged title.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    /// Schema version, [`CATALOG_VERSION`].
    pub version: u32,
    /// Title id; also the directory name.
    pub title: String,
    /// Presentation duration in milliseconds (the longest track).
    pub duration_ms: u64,
    /// Packaging mode.
    pub mode: PackagingMode,
    /// Target segment duration the packager was asked for, milliseconds.
    pub segment_duration_ms: u64,
    /// Renditions, video first, each with a unique id.
    pub renditions: Vec<Rendition>,
    /// Manifest file names relative to the title directory.
    pub manifests: Manifests,
    /// Every file in the title directory except this entry itself.
    pub files: Vec<FileEntry>,
    /// Present when the title is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// One rendition (one track of one encode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Rendition {
    /// Rendition id; also the subdirectory holding its files.
    pub id: String,
    /// Video or audio.
    pub kind: TrackKind,
    /// RFC 6381 codec string, e.g. `avc1.64001e`, `mp4a.40.2`, `vp09.00.21.08`, `opus`.
    pub codec: String,
    /// Peak bit rate, bits per second (HLS BANDWIDTH rule for this track alone).
    pub bandwidth: u64,
    /// Average bit rate, bits per second.
    pub average_bandwidth: u64,
    /// Width in pixels (video).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Height in pixels (video).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Frame rate as a decimal string with up to 3 decimals, e.g. `25` or `29.970` (video).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_rate: Option<String>,
    /// Sample rate in Hz (audio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
    /// Channel count (audio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u16>,
    /// BCP 47 language tag (audio, text), `und` when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Quality tier (video only, from the height).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// Key id (32 lowercase hex digits) when the rendition is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Role of an audio rendition: `main`, `commentary` or `description` (audio description);
    /// absent means `main` (catalogs written before roles existed). Of a text rendition:
    /// `subtitle`, `caption` or `forced`. Of a video rendition: absent, or [`TRICK_ROLE`] for a
    /// keyframe-only trick play rendition (it has a tier like any video rendition, so a session
    /// gets only the trick renditions of its tier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The rendition's files, relative to the title directory (`<id>/...`).
    pub files: Vec<String>,
}

impl Rendition {
    /// A keyframe-only trick play video rendition ([`TRICK_ROLE`]): not for normal playback.
    pub fn is_trick(&self) -> bool {
        self.kind == TrackKind::Video && self.role.as_deref() == Some(TRICK_ROLE)
    }
}

/// Manifest files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Manifests {
    /// HLS master playlist, normally [`HLS_MASTER`].
    pub hls: String,
    /// DASH MPD, normally [`DASH_MANIFEST`].
    pub dash: String,
}

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path relative to the title directory.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the contents, 64 lowercase hex digits.
    pub sha256: String,
}

/// Encryption of the title (ISO/IEC 23001-7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    /// `cenc` or `cbcs`.
    pub scheme: String,
    /// The key ids used (no key material: keys never enter the catalog).
    pub key_ids: Vec<String>,
}

impl CatalogEntry {
    /// Parses and validates an entry.
    pub fn from_json(text: &str) -> Result<Self, CatalogError> {
        let entry: CatalogEntry =
            serde_json::from_str(text).map_err(|e| CatalogError::Parse(e.to_string()))?;
        entry.validate()?;
        Ok(entry)
    }

    /// Pretty JSON, newline-terminated.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Checks every rule the schema's types cannot express.
    pub fn validate(&self) -> Result<(), CatalogError> {
        if self.version != CATALOG_VERSION {
            return Err(invalid(
                "version",
                format!(
                    "{} is not supported (expected {CATALOG_VERSION})",
                    self.version
                ),
            ));
        }
        check_segment("title", &self.title)?;
        if self.renditions.is_empty() {
            return Err(invalid("renditions", "at least one rendition is required"));
        }
        let mut files = BTreeSet::new();
        for (i, f) in self.files.iter().enumerate() {
            let field = format!("files[{i}]");
            check_relative_path(&format!("{field}.path"), &f.path)?;
            if !is_hex(&f.sha256, 64) {
                return Err(invalid(
                    format!("{field}.sha256"),
                    "must be 64 lowercase hex digits",
                ));
            }
            if !files.insert(f.path.as_str()) {
                return Err(invalid(
                    format!("{field}.path"),
                    format!("{:?} listed twice", f.path),
                ));
            }
        }
        for (name, m) in [
            ("manifests.hls", &self.manifests.hls),
            ("manifests.dash", &self.manifests.dash),
        ] {
            check_segment(name, m)?;
            if !files.contains(m.as_str()) {
                return Err(invalid(name, format!("{m:?} is not in files")));
            }
        }
        let mut ids = BTreeSet::new();
        for (i, r) in self.renditions.iter().enumerate() {
            let field = format!("renditions[{i}]");
            check_segment(&format!("{field}.id"), &r.id)?;
            if !ids.insert(r.id.as_str()) {
                return Err(invalid(
                    format!("{field}.id"),
                    format!("{:?} is not unique", r.id),
                ));
            }
            if r.codec.is_empty() || !r.codec.is_ascii() {
                return Err(invalid(
                    format!("{field}.codec"),
                    "must be a non-empty RFC 6381 string",
                ));
            }
            if r.bandwidth == 0 || r.average_bandwidth == 0 {
                return Err(invalid(format!("{field}.bandwidth"), "must be positive"));
            }
            if r.kind == TrackKind::Video {
                let (Some(_), Some(h)) = (r.width, r.height) else {
                    return Err(invalid(
                        format!("{field}.height"),
                        "video needs width and height",
                    ));
                };
                if r.tier != Some(Tier::from_height(h)) {
                    return Err(invalid(
                        format!("{field}.tier"),
                        format!("must be {} for height {h}", Tier::from_height(h)),
                    ));
                }
                if r.role.as_deref().is_some_and(|role| role != TRICK_ROLE) {
                    return Err(invalid(
                        format!("{field}.role"),
                        format!("a video rendition's role is absent or {TRICK_ROLE:?}"),
                    ));
                }
            } else if r.tier.is_some() {
                return Err(invalid(
                    format!("{field}.tier"),
                    "only video renditions have a tier",
                ));
            }
            if let Some(k) = &r.key_id {
                if !is_hex(k, 32) {
                    return Err(invalid(
                        format!("{field}.key_id"),
                        "must be 32 lowercase hex digits",
                    ));
                }
            }
            if r.files.is_empty() {
                return Err(invalid(
                    format!("{field}.files"),
                    "a rendition has at least one file",
                ));
            }
            for (j, f) in r.files.iter().enumerate() {
                let ff = format!("{field}.files[{j}]");
                if !files.contains(f.as_str()) {
                    return Err(invalid(ff, format!("{f:?} is not in files")));
                }
                if f.split('/').next() != Some(r.id.as_str()) || !f.contains('/') {
                    return Err(invalid(ff, format!("{f:?} must live under {}/", r.id)));
                }
            }
        }
        if self.renditions.iter().any(Rendition::is_trick)
            && !self
                .renditions
                .iter()
                .any(|r| r.kind == TrackKind::Video && !r.is_trick())
        {
            return Err(invalid(
                "renditions",
                "trick play renditions need a normal video rendition",
            ));
        }
        Ok(())
    }

    /// The renditions at or below `tier` (audio renditions are always included).
    pub fn renditions_within(&self, tier: Tier) -> impl Iterator<Item = &Rendition> {
        self.renditions
            .iter()
            .filter(move |r| r.tier.is_none_or(|t| t <= tier))
    }

    /// Total bytes of every file.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A single path segment usable as a file or directory name: 1-128 characters of
/// `[A-Za-z0-9._-]`, not starting with `.`.
pub fn is_valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn check_segment(field: &str, s: &str) -> Result<(), CatalogError> {
    if is_valid_segment(s) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{s:?} must be 1-128 characters of [A-Za-z0-9._-], not starting with '.'"),
        ))
    }
}

fn check_relative_path(field: &str, p: &str) -> Result<(), CatalogError> {
    if p.split('/').all(is_valid_segment) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{p:?} is not a relative path of safe segments"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_rule() {
        assert_eq!(Tier::from_height(240), Tier::Sd);
        assert_eq!(Tier::from_height(576), Tier::Sd);
        assert_eq!(Tier::from_height(720), Tier::Hd);
        assert_eq!(Tier::from_height(1080), Tier::Fhd);
        assert_eq!(Tier::from_height(2160), Tier::Uhd);
        assert!(Tier::Sd < Tier::Uhd);
        assert_eq!("fhd".parse::<Tier>().unwrap(), Tier::Fhd);
    }
}
