//! The fill rate limit: one token bucket (bytes) shared by every fill download, so the sum of
//! all downloads stays at the configured rate. A chunk larger than the tokens available is let
//! through and paid for by waiting, so the long-run rate is exact.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket over bytes.
#[derive(Debug)]
pub struct RateLimiter {
    bytes_per_sec: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// A limiter at `bits_per_sec` with a burst of 50 ms of traffic (at least 16 KiB).
    pub fn new(bits_per_sec: u64) -> Self {
        let bytes_per_sec = (bits_per_sec as f64 / 8.0).max(1.0);
        let burst = (bytes_per_sec * 0.05).max(16.0 * 1024.0);
        RateLimiter {
            bytes_per_sec,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes `n` bytes' worth of tokens and returns how long the caller must wait before
    /// sending them (zero when tokens were available).
    pub fn reserve(&self, n: usize, now: Instant) -> Duration {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = *st;
        let elapsed = now.saturating_duration_since(last).as_secs_f64();
        let mut t = (tokens + elapsed * self.bytes_per_sec).min(self.burst);
        t -= n as f64;
        *st = (t, now.max(last));
        if t >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-t / self.bytes_per_sec)
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
}
