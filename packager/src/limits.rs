//! Caps on sizes and counts read from untrusted inputs. Every allocation driven by a number in a
//! file is checked against one of these first.

/// Largest `moov` (or `moof`) box read into memory, bytes.
pub const MAX_HEADER_BOX: u64 = 256 * 1024 * 1024;
/// Largest number of samples in one track.
pub const MAX_SAMPLES: u64 = 50_000_000;
/// Largest number of entries in any sample-table box (`stts`, `ctts`, `stsc`, `stco`, `elst`...).
pub const MAX_TABLE_ENTRIES: u64 = 50_000_000;
/// Largest codec configuration record (`avcC`, `esds`, ...), bytes.
pub const MAX_CODEC_CONFIG: u64 = 1024 * 1024;
/// Largest single sample, bytes.
pub const MAX_SAMPLE_SIZE: u64 = 256 * 1024 * 1024;
/// Deepest box nesting followed.
pub const MAX_DEPTH: usize = 16;
/// Most tracks in one input file.
pub const MAX_TRACKS: usize = 64;
/// Most fragments in one fragmented input.
pub const MAX_FRAGMENTS: u64 = 10_000_000;
