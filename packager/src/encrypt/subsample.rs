//! Subsample maps of length-prefixed NAL unit samples (H.264 `avc1`/`avc3`, HEVC `hvc1`/`hev1`):
//! which bytes of a sample stay clear and which are encrypted (ISO/IEC 23001-7 subsample
//! encryption). Pure functions over sample bytes.
//!
//! Rules applied:
//! - every NAL length field and NAL unit header stays clear;
//! - non-VCL NAL units (SPS, PPS, SEI, AUD, ...) stay clear whole;
//! - in a VCL NAL unit the protected range is the largest whole number of 16-byte blocks at its
//!   end; the rest (header, the first bytes of the slice header, the partial block) stays clear,
//!   so a decryptor never handles a partial block. NAL units with less than one block of payload
//!   stay clear whole.
//! - emulation prevention bytes are not removed: they are part of the stored NAL unit, and the
//!   ranges are counted over the stored bytes, as the standard requires.
//!
//! Clear runs longer than 65 535 bytes are split into several entries (`BytesOfClearData` is 16
//! bits); consecutive clear NAL units merge into one clear run.

/// One subsample entry: `clear` bytes followed by `protected` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subsample {
    /// BytesOfClearData.
    pub clear: u16,
    /// BytesOfProtectedData.
    pub protected: u32,
}

/// How a track's samples are split into NAL units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NalFormat {
    /// Size of each NAL length prefix: 1, 2 or 4 bytes.
    pub length_size: usize,
    /// HEVC (2-byte NAL header, VCL types 0-31) rather than H.264 (1 byte, VCL types 1-5).
    pub hevc: bool,
}

impl NalFormat {
    fn header_len(self) -> usize {
        if self.hevc {
            2
        } else {
            1
        }
    }

    fn is_vcl(self, first: u8) -> bool {
        if self.hevc {
            (first >> 1) & 0x3f < 32
        } else {
            matches!(first & 0x1f, 1..=5)
        }
    }
}

/// Why a sample cannot be mapped (the caller adds the file and sample number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapError(pub String);

/// The subsample map of one sample. The entries cover the sample exactly.
pub fn map(sample: &[u8], fmt: NalFormat) -> Result<Vec<Subsample>, MapError> {
    map_with(sample.len(), fmt, &mut |pos, out| {
        out.copy_from_slice(&sample[pos..pos + out.len()]);
        Ok(())
    })
}

/// Reads a sample's bytes from a position (see [`map_with`]).
pub type Peek<'a> = dyn FnMut(usize, &mut [u8]) -> Result<(), MapError> + 'a;

/// The subsample map of a `size`-byte sample that is not in memory: `peek(pos, buf)` fills `buf`
/// with the sample's bytes from `pos`. Only each NAL unit's length field and first header byte
/// are read (a few bytes per NAL unit), so mapping a track does not copy its sample data.
pub fn map_with(
    size: usize,
    fmt: NalFormat,
    peek: &mut Peek<'_>,
) -> Result<Vec<Subsample>, MapError> {
    let mut out = Vec::new();
    let mut clear: u64 = 0;
    let mut pos = 0usize;
    let ls = fmt.length_size;
    let mut head = [0u8; 5];
    while pos < size {
        if size - pos < ls {
            return Err(MapError(format!(
                "NAL length field at byte {pos} runs past the end of the {size}-byte sample"
            )));
        }
        // The length field and, when present, the NAL header's first byte in one read.
        let n = (ls + 1).min(size - pos);
        peek(pos, &mut head[..n])?;
        let len = head[..ls]
            .iter()
            .fold(0usize, |a, &b| (a << 8) | usize::from(b));
        let body = pos + ls;
        if len > size - body {
            return Err(MapError(format!(
                "NAL unit at byte {pos} claims {len} bytes but only {} remain in the sample",
                size - body
            )));
        }
        let hl = fmt.header_len();
        let protected = if len > hl && fmt.is_vcl(head[ls]) {
            (len - hl) / 16 * 16
        } else {
            0
        };
        clear += (ls + len - protected) as u64;
        if protected > 0 {
            push(&mut out, &mut clear, protected as u32);
        }
        pos = body + len;
    }
    if clear > 0 {
        push(&mut out, &mut clear, 0);
    }
    Ok(out)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    const AVC4: NalFormat = NalFormat {
        length_size: 4,
        hevc: false,
    };

    fn nal(header: u8, payload_len: usize, fill: u8) -> Vec<u8> {
        let mut v = ((payload_len + 1) as u32).to_be_bytes().to_vec();
        v.push(header);
        v.extend(std::iter::repeat_n(fill, payload_len));
        v
    }

    fn total(m: &[Subsample]) -> usize {
        m.iter()
            .map(|s| usize::from(s.clear) + s.protected as usize)
            .sum()
    }

    #[test]
    fn idr_slice_keeps_header_and_partial_block_clear() {
        // 4-byte length + 1-byte header + 100 payload bytes: 96 protected, 4+1+4 clear.
        let s = nal(0x65, 100, 0xaa);
        let m = map(&s, AVC4).unwrap();
        assert_eq!(
            m,
            vec![Subsample {
                clear: 9,
                protected: 96
            }]
        );
        assert_eq!(total(&m), s.len());
    }

    #[test]
    fn parameter_sets_and_sei_merge_into_the_next_clear_run() {
        let mut s = nal(0x67, 20, 1); // SPS
        s.extend(nal(0x68, 4, 2)); // PPS
        s.extend(nal(0x06, 30, 3)); // SEI
        s.extend(nal(0x65, 64, 4)); // IDR slice: exactly 4 blocks
        let m = map(&s, AVC4).unwrap();
        assert_eq!(
            m,
            vec![Subsample {
                clear: (25 + 9 + 35 + 5) as u16,
                protected: 64
            }]
        );
        assert_eq!(total(&m), s.len());
    }

    #[test]
    fn short_slices_stay_clear() {
        // A slice with 15 payload bytes has no whole block to protect.
        let mut s = nal(0x41, 15, 7);
        s.extend(nal(0x41, 0, 0));
        let m = map(&s, AVC4).unwrap();
        assert_eq!(
            m,
            vec![Subsample {
                clear: (20 + 5) as u16,
                protected: 0
            }]
        );
    }

    #[test]
    fn several_slices_per_frame_get_one_entry_each() {
        let mut s = nal(0x65, 40, 1);
        s.extend(nal(0x65, 33, 2));
        s.extend(nal(0x65, 16, 3));
        let m = map(&s, AVC4).unwrap();
        assert_eq!(
            m,
            vec![
                Subsample {
                    clear: 5 + 8,
                    protected: 32
                },
                Subsample {
                    clear: 5 + 1,
                    protected: 32
                },
                Subsample {
                    clear: 5,
                    protected: 16
                },
            ]
        );
        assert_eq!(total(&m), s.len());
    }

    #[test]
    fn emulation_prevention_bytes_count_as_stored_bytes() {
        // Payload with 00 00 03 sequences: ranges are over the stored (escaped) bytes.
        let payload = [
            0x88, 0, 0, 3, 1, 0, 0, 3, 0, 0x11, 0, 0, 3, 2, 9, 9, 9, 9, 9, 9,
        ];
        let mut s = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
        s.push(0x25);
        s.extend_from_slice(&payload);
        let m = map(&s, AVC4).unwrap();
        assert_eq!(
            m,
            vec![Subsample {
                clear: 4 + 1 + 4,
                protected: 16
            }]
        );
        assert_eq!(total(&m), s.len());
    }

    #[test]
    fn long_clear_runs_split_at_16_bits() {
        let mut s = nal(0x06, 70_000, 0); // a huge SEI
        s.extend(nal(0x65, 32, 1));
        let m = map(&s, AVC4).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].clear, u16::MAX);
        assert_eq!(m[0].protected, 0);
        assert_eq!(m[1].protected, 32);
        assert_eq!(total(&m), s.len());
    }

    #[test]
    fn hevc_uses_two_byte_headers_and_its_vcl_types() {
        let f = NalFormat {
            length_size: 4,
            hevc: true,
        };
        // IDR_W_RADL (19) slice: header 0x26 0x01, 34 payload bytes -> 32 protected.
        let mut s = 36u32.to_be_bytes().to_vec();
        s.extend_from_slice(&[0x26, 0x01]);
        s.extend([5u8; 34]);
        // VPS (32) stays clear.
        let mut v = 6u32.to_be_bytes().to_vec();
        v.extend_from_slice(&[0x40, 0x01, 1, 2, 3, 4]);
        v.extend(s);
        let m = map(&v, f).unwrap();
        assert_eq!(
            m,
            vec![Subsample {
                clear: 10 + 4 + 2 + 2,
                protected: 32
            }]
        );
    }

    #[test]
    fn truncated_nal_is_an_error_naming_the_byte() {
        let mut s = nal(0x65, 40, 1);
        s.truncate(30);
        let e = map(&s, AVC4).unwrap_err();
        assert!(
            e.0.contains("byte 0") && e.0.contains("41 bytes"),
            "{}",
            e.0
        );
        let e = map(&[0, 0], AVC4).unwrap_err();
        assert!(e.0.contains("length field"), "{}", e.0);
    }
}
