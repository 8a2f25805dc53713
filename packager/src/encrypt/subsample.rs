//! Subsample maps (ISO/IEC 23001-7 subsample encryption): the entry type and what the
//! codec-specific map builders share. NAL unit samples (H.264, HEVC) are mapped by the walker in
//! [`super::nal`], VP9 frames by [`super::vp9`].

/// One subsample entry: `clear` bytes followed by `protected` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subsample {
    /// BytesOfClearData.
    pub clear: u16,
    /// BytesOfProtectedData.
    pub protected: u32,
}

/// Why a sample cannot be mapped (the caller adds the file and sample number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapError(pub String);

/// Reads a sample's bytes from a position: `peek(pos, buf)` fills `buf` with the sample's bytes
/// from `pos` ([`super::nal::map_with`], [`super::vp9::map_with`]).
pub type Peek<'a> = dyn FnMut(usize, &mut [u8]) -> Result<(), MapError> + 'a;

/// Emits `clear` pending clear bytes (split at 65 535) followed by `protected` bytes.
pub(crate) fn push(out: &mut Vec<Subsample>, clear: &mut u64, protected: u32) {
    while *clear > u64::from(u16::MAX) {
        out.push(Subsample {
            clear: u16::MAX,
            protected: 0,
        });
        *clear -= u64::from(u16::MAX);
    }
    out.push(Subsample {
        clear: *clear as u16,
        protected,
    });
    *clear = 0;
}
