//! The Outpost packager: encoded MP4 renditions in, a title directory out (one CMAF file per
//! track with a `sidx`, or separate init and media segments; a DASH MPD; HLS master and media
//! playlists; `catalog.json`). Nothing is transcoded: every sample's bytes are copied unchanged.
//!
//! - [`bmff`]: reading MP4 inputs into a sample-table model, codec strings.
//! - [`segment`]: the ladder check and keyframe-snapped segmentation.
//! - [`cmaf`]: writing init segments, fragments and `sidx`.
//! - [`encrypt`]: Common Encryption (`cenc`, `cbcs`): keys per track, subsample maps, the
//!   cipher, the added boxes.
//! - [`text`]: the strict WebVTT and IMSC1/TTML parsers, the segmenter of text tracks and
//!   their samples in MP4 (`wvtt`, `stpp`).
//! - [`thumbs`]: thumbnail JPEG tile grids: checks (SOI, SOF size, grid) and the image view.
//! - [`manifest`]: DASH MPD and HLS playlists, bandwidth rules.
//! - [`package`](mod@package): the file-system edge: reads inputs, writes the title atomically, hashes files
//!   (and [`package::keys_needed`], the tiers a title's inputs need keys for).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bmff;
pub mod cmaf;
pub mod encrypt;
pub mod error;
pub mod limits;
pub mod manifest;
pub mod package;
pub mod segment;
pub mod text;
pub mod thumbs;

pub use error::{Error, Result};
pub use package::{package, AudioInput, AudioRole, Options, Progress};
pub use text::{TextInput, TextRole};
pub use thumbs::ThumbnailInput;
