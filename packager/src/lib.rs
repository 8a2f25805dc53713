//! The Outpost packager: encoded MP4 renditions in, a title directory out (one CMAF file per
//! track with a `sidx`, or separate init and media segments; a DASH MPD; HLS master and media
//! playlists; `catalog.json`). Nothing is transcoded: every sample's bytes are copied unchanged.
//!
//! - [`bmff`]: reading MP4 inputs into a sample-table model, codec strings.
//! - [`segment`]: the ladder check and keyframe-snapped segmentation.
//! - [`cmaf`]: writing init segments, fragments and `sidx`.
//! - [`encrypt`]: Common Encryption (`cenc` and `cbcs`): keys per track, the ciphers, the
//!   subsample maps, the added boxes.
//! - [`manifest`]: DASH MPD and HLS playlists, bandwidth rules.
//! - [`package`]: the file-system edge: reads inputs, writes the title atomically, hashes files.
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

pub use error::{Error, Result};
pub use package::{package, Options, Progress};
