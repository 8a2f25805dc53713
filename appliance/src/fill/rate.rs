//! The fill rate limit: one token bucket (bytes) shared by every fill download, so the sum of
//! all downloads stays at the configured rate. A chunk larger than the tokens available is let
//! through and paid for by waiting, so the long-run rate is exact.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket over bytes.
#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    bytes_per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

fn rate_and_burst(bits_per_sec: u64) -> (f64, f64) {
    let bytes_per_sec = (bits_per_sec as f64 / 8.0).max(1.0);
    (bytes_per_sec, (bytes_per_sec * 0.05).max(16.0 * 1024.0))
}

impl RateLimiter {
    /// A limiter at `bits_per_sec` with a burst of 50 ms of traffic (at least 16 KiB).
    pub fn new(bits_per_sec: u64) -> Self {
        let (bytes_per_sec, burst) = rate_and_burst(bits_per_sec);
        RateLimiter {
            state: Mutex::new(Bucket {
                bytes_per_sec,
                burst,
                tokens: burst,
                last: Instant::now(),
            }),
        }
    }

    /// Changes the rate from now on (fill pacing); tokens already earned are kept up to the new
    /// burst.
    pub fn set_rate(&self, bits_per_sec: u64) {
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (bytes_per_sec, burst) = rate_and_burst(bits_per_sec);
        b.bytes_per_sec = bytes_per_sec;
        b.burst = burst;
        b.tokens = b.tokens.min(burst);
    }

    /// The current rate, bits per second.
    pub fn rate_bps(&self) -> u64 {
        let b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (b.bytes_per_sec * 8.0) as u64
    }

    /// Takes `n` bytes' worth of tokens and returns how long the caller must wait before
    /// sending them (zero when tokens were available).
    pub fn reserve(&self, n: usize, now: Instant) -> Duration {
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        let t = (b.tokens + elapsed * b.bytes_per_sec).min(b.burst) - n as f64;
        b.tokens = t;
        b.last = now.max(b.last);
        if t >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-t / b.bytes_per_sec)
        }
    }

    /// Waits until `n` bytes may be sent.
    pub async fn acquire(&self, n: usize) {
        let wait = self.reserve(n, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Headroom of a paced rate over the exact "bytes left ÷ time left" (downloads are not
/// perfectly continuous: sources fail over, passes restart).
pub const PACE_HEADROOM: f64 = 1.25;
/// The slowest a paced fill goes, bits per second.
pub const PACE_FLOOR_BPS: u64 = 10_000_000;

/// The rate that finishes `bytes_left` in `secs_left` with [`PACE_HEADROOM`], between
/// [`PACE_FLOOR_BPS`] and `cap_bps`: fill spread over the window instead of every appliance
/// starting at full rate when it opens.
pub fn paced_rate_bps(bytes_left: u64, secs_left: u64, cap_bps: Option<u64>) -> u64 {
    let cap = cap_bps.unwrap_or(u64::MAX);
    if secs_left == 0 {
        return cap;
    }
    let pace = (bytes_left as f64 * 8.0 * PACE_HEADROOM / secs_left as f64).ceil() as u64;
    pace.max(PACE_FLOOR_BPS).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_run_rate_is_exact() {
        // 8 Mb/s = 1 MB/s; 64 KiB chunks for a simulated 10 s.
        let r = RateLimiter::new(8_000_000);
        let t0 = Instant::now();
        let mut now = t0;
        let mut sent = 0u64;
        while now < t0 + Duration::from_secs(10) {
            let w = r.reserve(65_536, now);
            now += w;
            sent += 65_536;
        }
        let rate = sent as f64 / now.duration_since(t0).as_secs_f64();
        assert!((rate - 1e6).abs() / 1e6 < 0.02, "rate {rate}");
    }

    #[test]
    fn set_rate_changes_the_long_run_rate() {
        let r = RateLimiter::new(8_000_000);
        r.set_rate(800_000);
        assert_eq!(r.rate_bps(), 800_000);
        let t0 = Instant::now();
        let mut now = t0;
        let mut sent = 0u64;
        while now < t0 + Duration::from_secs(20) {
            now += r.reserve(16_384, now);
            sent += 16_384;
        }
        let rate = sent as f64 / now.duration_since(t0).as_secs_f64();
        assert!((rate - 1e5).abs() / 1e5 < 0.05, "rate {rate}");
    }

    #[test]
    fn paced_rate_spreads_what_is_left_over_what_remains_of_the_window() {
        // 4.5 TB left, 10 h left: 1 Gb/s × 1.25 headroom, under a 1.2 Gb/s cap.
        assert_eq!(
            paced_rate_bps(4_500_000_000_000, 36_000, Some(1_200_000_000)),
            1_200_000_000
        );
        assert_eq!(
            paced_rate_bps(450_000_000_000, 36_000, Some(1_200_000_000)),
            125_000_000
        );
        // Little left: never below the floor; no cap: the pace alone.
        assert_eq!(paced_rate_bps(1, 36_000, None), PACE_FLOOR_BPS);
        assert_eq!(
            paced_rate_bps(4_500_000_000_000, 36_000, None),
            1_250_000_000
        );
        // The window's last minute: the cap.
        assert_eq!(paced_rate_bps(4_500_000_000_000, 0, Some(7)), 7);
    }
}
