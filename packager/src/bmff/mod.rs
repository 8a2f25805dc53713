//! ISO base media file format (MP4) reading: a bounded cursor over box bodies that knows its box
//! path ([`reader`]), the top-level scan and the `moov`/`moof` parsers that turn an input into a
//! sample-table model ([`track`], [`parse`]), and codec configuration records with their
//! RFC 6381 codec strings ([`codec`]). Nothing here writes; see [`crate::cmaf`] for that.

pub mod codec;
pub mod parse;
pub mod reader;
pub mod track;

pub use parse::{parse_file, parse_source, Source};
pub use track::{Sample, SampleEntry, Track, TrackKind};
