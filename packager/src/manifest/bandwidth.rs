//! Bit-rate rules. HLS `BANDWIDTH` is the peak segment bit rate of RFC 8216 §4.1 (the highest
//! rate of any contiguous run of segments lasting 0.5 to 1.5 times the target duration);
//! `AVERAGE-BANDWIDTH` is all segment bits over the duration. DASH `@bandwidth` is the smallest
//! rate B at which, starting at any segment after buffering `minBufferTime x B` bits, every
//! later segment arrives before it is due (ISO/IEC 23009-1 §5.3.5.2, checked per segment).
//! Inputs are (bytes, seconds) per segment, container bytes included.

/// HLS peak segment bit rate, bits per second, rounded up.
pub fn hls_peak(segs: &[(u64, f64)], target_duration: u64) -> u64 {
    let lo = 0.5 * target_duration as f64;
    let hi = 1.5 * target_duration as f64;
    let mut peak = 0f64;
    let mut any = false;
    for i in 0..segs.len() {
        let (mut bytes, mut secs) = (0u64, 0f64);
        for s in &segs[i..] {
            bytes += s.0;
            secs += s.1;
            if secs > hi + 1e-9 {
                break;
            }
            if secs + 1e-9 >= lo && secs > 0.0 {
                any = true;
                peak = peak.max(bytes as f64 * 8.0 / secs);
            }
        }
    }
    if !any {
        // Every run is shorter than half the target (a very short title): use single segments.
        for s in segs.iter().filter(|s| s.1 > 0.0) {
            peak = peak.max(s.0 as f64 * 8.0 / s.1);
        }
    }
    (peak.ceil() as u64).max(hls_average(segs))
}

/// Average bit rate over the whole playlist, bits per second, rounded up.
pub fn hls_average(segs: &[(u64, f64)]) -> u64 {
    let bytes: u64 = segs.iter().map(|s| s.0).sum();
    let secs: f64 = segs.iter().map(|s| s.1).sum();
    if secs <= 0.0 {
        return 1;
    }
    ((bytes as f64 * 8.0 / secs).ceil() as u64).max(1)
}

/// DASH leaky-bucket bandwidth against `min_buffer_time` seconds, bits per second, rounded up.
pub fn dash_bandwidth(segs: &[(u64, f64)], min_buffer_time: f64) -> u64 {
    let mut b = 0f64;
    let starts: Vec<f64> = segs
        .iter()
        .scan(0f64, |t, s| {
            let st = *t;
            *t += s.1;
            Some(st)
        })
        .collect();
    for i in 0..segs.len() {
        let mut bits = 0f64;
        for k in i..segs.len() {
            bits += segs[k].0 as f64 * 8.0;
            // Segment k must be fully downloaded when playback, started at segment i after
            // min_buffer_time, reaches segment k's start.
            let window = min_buffer_time + (starts[k] - starts[i]);
            if window > 0.0 {
                b = b.max(bits / window);
            }
        }
    }
    (b.ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_uses_windows_of_half_to_one_and_a_half_targets() {
        // Target 6: one 6 s segment of 600 kB then a 2 s burst of 600 kB, then 6 s of 300 kB.
        let segs = [(600_000, 6.0), (600_000, 2.0), (300_000, 6.0)];
        // Runs within 3..9 s: [6]=800k, [6,2]=1.2M/8=1.2Mb/s, [2,6]=900k*8/8=900kb/s, [6]=400k.
        // The lone 2 s burst (2.4 Mb/s) is shorter than 3 s, so it only counts inside a run.
        assert_eq!(hls_peak(&segs, 6), 1_200_000);
        assert_eq!(hls_average(&segs), 1_500_000 * 8 / 14 + 1);
        // A title shorter than half the target falls back to single segments.
        assert_eq!(hls_peak(&[(1000, 1.0)], 6), 8000);
    }

    #[test]
    fn leaky_bucket_is_the_smallest_rate_without_stall() {
        // Constant 1 Mb/s, 2 s segments: with 2 s of buffer, B = bits(i..k) / (2 + t_k - t_i);
        // the tightest is k = i: 2 Mb / 2 s = 1 Mb/s.
        let segs = vec![(250_000, 2.0); 10];
        assert_eq!(dash_bandwidth(&segs, 2.0), 1_000_000);
        // A 4 Mb burst segment with 2 s of buffer needs 2 Mb/s.
        let mut s = segs.clone();
        s[5] = (500_000, 2.0);
        assert_eq!(dash_bandwidth(&s, 2.0), 2_000_000);
        // A longer buffer absorbs it: (4 Mb + 2 Mb) / (4 + 2) s = 1 Mb/s.
        assert_eq!(dash_bandwidth(&s, 4.0), 1_000_000);
    }
}
