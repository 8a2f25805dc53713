//! Subsample maps of VP9 samples (`vp09`) per the VP9 Common Encryption binding
//! (<https://www.webmproject.org/vp9/mp4/>): each frame of a superframe is its own subsample,
//! its uncompressed header stays clear, and its protected part is the largest whole number of
//! 16-byte blocks at its end (so the clear part is the header plus the remainder); the
//! superframe index stays clear. Pure functions over sample bytes; the uncompressed header is
//! parsed (VP9 bitstream specification §6.2) only as far as its length, which needs each
//! reference slot's frame width (tile columns depend on it), kept in [`Vp9State`] per track.

use super::nal::Bits;
use super::subsample::{push, MapError, Peek, Subsample};

/// Longest uncompressed header read (the syntax allows well under 100 bytes).
const MAX_HEADER: usize = 128;

/// Per-track decoder state the header length depends on: the width of each reference slot.
#[derive(Debug, Clone, Default)]
pub struct Vp9State {
    ref_width: [u32; 8],
}

/// The length in bytes of the uncompressed header of the VP9 frame starting `head` (its first
/// bytes), updating the reference widths. 0 for a `show_existing_frame` frame (no header beyond
/// its first byte or two, left clear whole by the caller).
pub fn uncompressed_header_len(head: &[u8], st: &mut Vp9State) -> Result<usize, MapError> {
    let r = &mut Bits::new(head, "VP9 uncompressed header");
    if r.u(2)? != 2 {
        return Err(MapError("VP9 frame_marker is not 2".into()));
    }
    let low = r.u(1)?;
    let profile = (r.u(1)? << 1) | low;
    if profile == 3 {
        r.u(1)?;
    }
    if r.u(1)? == 1 {
        return Ok(0);
    }
    let frame_type = r.u(1)?;
    let show_frame = r.u(1)?;
    let error_resilient = r.u(1)?;
    let color_config = |r: &mut Bits| -> Result<(), MapError> {
        if profile >= 2 {
            r.u(1)?;
        }
        let cs = r.u(3)?;
        if cs != 7 {
            r.u(1)?;
            if profile == 1 || profile == 3 {
                r.u(3)?;
            }
        } else if profile == 1 || profile == 3 {
            r.u(1)?;
        }
        Ok(())
    };
    let sync = |r: &mut Bits| -> Result<(), MapError> {
        if r.u(24)? != 0x49_83_42 {
            return Err(MapError("VP9 frame_sync_code is wrong".into()));
        }
        Ok(())
    };
    let frame_size = |r: &mut Bits| -> Result<u32, MapError> {
        let w = r.u(16)? + 1;
        r.u(16)?;
        Ok(w)
    };
    let render_size = |r: &mut Bits| -> Result<(), MapError> {
        if r.u(1)? == 1 {
            r.u(32)?;
        }
        Ok(())
    };
    let width;
    let refresh;
    if frame_type == 0 {
        sync(r)?;
        color_config(r)?;
        width = frame_size(r)?;
        render_size(r)?;
        refresh = 0xff;
    } else {
        let intra_only = if show_frame == 0 { r.u(1)? } else { 0 };
        if error_resilient == 0 {
            r.u(2)?;
        }
        if intra_only == 1 {
            sync(r)?;
            if profile > 0 {
                color_config(r)?;
            }
            refresh = r.u(8)?;
            width = frame_size(r)?;
            render_size(r)?;
        } else {
            refresh = r.u(8)?;
            let mut idx = [0usize; 3];
            for i in &mut idx {
                *i = r.u(3)? as usize;
                r.u(1)?;
            }
            let mut found = None;
            for i in idx {
                if r.u(1)? == 1 {
                    found = Some(st.ref_width[i]);
                    break;
                }
            }
            width = match found {
                Some(w) => {
                    render_size(r)?;
                    w
                }
                None => {
                    let w = frame_size(r)?;
                    render_size(r)?;
                    w
                }
            };
            r.u(1)?; // allow_high_precision_mv
            if r.u(1)? == 0 {
                r.u(2)?; // raw_interpolation_filter
            }
        }
    }
    if error_resilient == 0 {
        r.u(2)?; // refresh_frame_context, frame_parallel_decoding_mode
    }
    r.u(2)?; // frame_context_idx
             // loop_filter_params
    r.u(9)?;
    if r.u(1)? == 1 && r.u(1)? == 1 {
        for _ in 0..6 {
            if r.u(1)? == 1 {
                r.u(7)?;
            }
        }
    }
    // quantization_params
    r.u(8)?;
    for _ in 0..3 {
        if r.u(1)? == 1 {
            r.u(5)?;
        }
    }
    // segmentation_params
    if r.u(1)? == 1 {
        if r.u(1)? == 1 {
            for _ in 0..7 {
                if r.u(1)? == 1 {
                    r.u(8)?;
                }
            }
            if r.u(1)? == 1 {
                for _ in 0..3 {
                    if r.u(1)? == 1 {
                        r.u(8)?;
                    }
                }
            }
        }
        if r.u(1)? == 1 {
            r.u(1)?;
            for _ in 0..8 {
                for (bits, signed) in [(8, true), (6, true), (2, false), (0, false)] {
                    if r.u(1)? == 1 {
                        r.u(bits)?;
                        if signed {
                            r.u(1)?;
                        }
                    }
                }
            }
        }
    }
    // tile_info
    let sb64_cols = (width.div_ceil(8)).div_ceil(8);
    let mut min_log2 = 0;
    while (64u32 << min_log2) < sb64_cols {
        min_log2 += 1;
    }
    let mut max_log2 = 1;
    while (sb64_cols >> max_log2) >= 4 {
        max_log2 += 1;
    }
    max_log2 -= 1;
    let mut cols = min_log2;
    while cols < max_log2 {
        if r.u(1)? == 1 {
            cols += 1;
        } else {
            break;
        }
    }
    if r.u(1)? == 1 {
        r.u(1)?;
    }
    r.u(16)?; // header_size_in_bytes
    for (i, w) in st.ref_width.iter_mut().enumerate() {
        if refresh >> i & 1 == 1 {
            *w = width;
        }
    }
    Ok(r.pos.div_ceil(8))
}

/// The subsample map of one VP9 sample of `size` bytes read through `peek`.
pub fn map_with(
    size: usize,
    st: &mut Vp9State,
    peek: &mut Peek<'_>,
) -> Result<Vec<Subsample>, MapError> {
    // Superframe index: its marker byte ends the sample and starts the index.
    let mut frames = vec![size];
    let mut index_len = 0;
    if size > 0 {
        let mut last = [0u8];
        peek(size - 1, &mut last)?;
        let m = last[0];
        if m & 0xe0 == 0xc0 {
            let n = usize::from(m & 7) + 1;
            let bytes = usize::from((m >> 3) & 3) + 1;
            let len = 2 + bytes * n;
            if len <= size {
                let mut idx = vec![0u8; len];
                peek(size - len, &mut idx)?;
                if idx[0] == m {
                    frames = (0..n)
                        .map(|k| {
                            idx[1 + k * bytes..1 + (k + 1) * bytes]
                                .iter()
                                .rev()
                                .fold(0usize, |a, &b| (a << 8) | usize::from(b))
                        })
                        .collect();
                    index_len = len;
                    if frames.iter().sum::<usize>() + len != size {
                        return Err(MapError(format!(
                            "VP9 superframe index lists {} bytes of frames in a {size}-byte sample",
                            frames.iter().sum::<usize>()
                        )));
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut clear = 0u64;
    let mut at = 0usize;
    let mut head = [0u8; MAX_HEADER];
    for len in frames {
        let n = len.min(MAX_HEADER);
        peek(at, &mut head[..n])?;
        let hl = uncompressed_header_len(&head[..n], st)
            .map_err(|e| MapError(format!("frame at byte {at}: {}", e.0)))?;
        let protected = if hl == 0 { 0 } else { (len - hl) / 16 * 16 };
        clear += (len - protected) as u64;
        if protected > 0 {
            push(&mut out, &mut clear, protected as u32);
        }
        at += len;
    }
    clear += index_len as u64;
    if clear > 0 {
        push(&mut out, &mut clear, 0);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(sample: &[u8], st: &mut Vp9State) -> Result<Vec<Subsample>, MapError> {
        map_with(sample.len(), st, &mut |pos, out| {
            out.copy_from_slice(&sample[pos..pos + out.len()]);
            Ok(())
        })
    }

    /// The first 18 bytes of the fixture's first frame (`ladder-vp9/video-240p.mp4`, a 426x240
    /// key frame whose uncompressed header is 140 bits, 18 bytes, by ffmpeg's `trace_headers`:
    /// `header_size_in_bytes` at bit 124) + `payload` bytes.
    fn key_frame(payload: usize) -> Vec<u8> {
        let mut v = vec![
            0x82, 0x49, 0x83, 0x42, 0x00, 0x1a, 0x90, 0x0e, 0xf6, 0x14, 0x38, 0x24, 0x1c, 0x18,
            0x5c, 0x00, 0x0a, 0x20,
        ];
        v.extend(std::iter::repeat_n(0x5a, payload));
        v
    }

    #[test]
    fn fixture_header_lengths_match_ffmpeg_trace_headers() {
        let mut st = Vp9State::default();
        assert_eq!(uncompressed_header_len(&key_frame(0), &mut st).unwrap(), 18);
        // The second frame: an inter frame predicting from slot 0 (header_size_in_bytes at bit
        // 62: 78 bits, 10 bytes).
        let inter = [0x86, 0x00, 0x40, 0x92, 0xf0, 0xa1, 0x2e, 0x00, 0x00, 0x70];
        assert_eq!(uncompressed_header_len(&inter, &mut st).unwrap(), 10);
    }

    #[test]
    fn key_frame_header_stays_clear_and_blocks_end_the_frame() {
        let mut st = Vp9State::default();
        let f = key_frame(100);
        let hl = uncompressed_header_len(&f, &mut st).unwrap();
        assert_eq!(hl, 18);
        let m = map(&f, &mut st).unwrap();
        let total: usize = m
            .iter()
            .map(|s| usize::from(s.clear) + s.protected as usize)
            .sum();
        assert_eq!(total, f.len());
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].protected as usize % 16, 0);
        assert!(usize::from(m[0].clear) >= hl);
        assert_eq!((f.len() - hl) / 16 * 16, m[0].protected as usize);
        assert_eq!(st.ref_width, [426; 8]);
    }

    #[test]
    fn superframe_frames_are_subsamples_and_the_index_is_clear() {
        let mut st = Vp9State::default();
        let a = key_frame(60);
        let b = key_frame(40);
        let mut s = a.clone();
        s.extend(&b);
        // Index: marker 0b110_01_001 (2 frames, 2 bytes per size), sizes LE, marker.
        let m = 0xc0 | (1 << 3) | 1;
        s.push(m);
        s.extend((a.len() as u16).to_le_bytes());
        s.extend((b.len() as u16).to_le_bytes());
        s.push(m);
        let map = map(&s, &mut st).unwrap();
        assert_eq!(map.len(), 3);
        assert_eq!(map[2].protected, 0);
        assert_eq!(usize::from(map[2].clear), 6);
        let total: usize = map
            .iter()
            .map(|x| usize::from(x.clear) + x.protected as usize)
            .sum();
        assert_eq!(total, s.len());
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut st = Vp9State::default();
        assert!(map(&[0x00, 1, 2, 3], &mut st)
            .unwrap_err()
            .0
            .contains("frame_marker"));
        let f = key_frame(0);
        assert!(map(&f[..6], &mut st).unwrap_err().0.contains("runs past"));
    }
}
