//! Rendezvous (highest random weight) placement: each key ranks the drives by a hash of
//! (drive, key); the first healthy drive wins. Adding or removing a drive moves only the keys
//! that rank it first.

use std::path::Path;

/// FNV-1a, 64 bits: stable across builds and platforms (placement must not change on upgrade).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Final avalanche (splitmix64) so that similar keys spread.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Orders `drives` (index, root) for `key`, best first.
pub fn rendezvous_order(key: &str, drives: &[(usize, &Path)]) -> Vec<usize> {
    use std::os::unix::ffi::OsStrExt as _;
    let mut scored: Vec<(u64, usize)> = drives
        .iter()
        .map(|&(i, root)| (fnv1a(&[root.as_os_str().as_bytes(), key.as_bytes()]), i))
        .collect();
    scored.sort_unstable_by(|a, b| b.cmp(a));
    scored.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_and_moves_little() {
        let roots = ["/d0", "/d1", "/d2", "/d3"];
        let all: Vec<(usize, &Path)> = roots
            .iter()
            .enumerate()
            .map(|(i, r)| (i, Path::new(*r)))
            .collect();
        let mut counts = [0usize; 4];
        let mut moved = 0;
        for k in 0..4000 {
            let key = format!("/title/v/seg{k}.m4s");
            let first = rendezvous_order(&key, &all)[0];
            counts[first] += 1;
            let without_3 = rendezvous_order(&key, &all[..3])[0];
            if first != 3 && without_3 != first {
                moved += 1;
            }
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven spread {counts:?}");
        }
        assert_eq!(moved, 0, "removing a drive moved keys that were not on it");
    }
}
