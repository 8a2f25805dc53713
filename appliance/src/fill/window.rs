//! The fill window: the local times of day when fill may fetch non-urgent titles
//! (`02:00-14:00`, wrapping past midnight allowed, or `always`). Pure: the minute of the day is
//! an argument; [`local_minute_now`] reads the clock and the time zone.

use std::time::{SystemTime, UNIX_EPOCH};

/// When fill runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillWindow {
    /// At any time.
    Always,
    /// From `start` (inclusive) to `end` (exclusive), minutes after local midnight; `start >
    /// end` wraps past midnight.
    Between {
        /// First minute inside.
        start: u16,
        /// First minute outside.
        end: u16,
    },
}

/// Minutes in a day.
const DAY: u16 = 24 * 60;

fn parse_hhmm(s: &str) -> Result<u16, String> {
    let bad = || format!("{s:?} is not a time HH:MM between 00:00 and 24:00");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 24 || m > 59 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl std::str::FromStr for FillWindow {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "always" {
            return Ok(FillWindow::Always);
        }
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("{s:?}: expected HH:MM-HH:MM or \"always\""))?;
        let start = parse_hhmm(a.trim())? % DAY;
        let end = parse_hhmm(b.trim())? % DAY;
        if start == end {
            return Err(format!(
                "{s:?}: empty window (start equals end; use \"always\" for all day)"
            ));
        }
        Ok(FillWindow::Between { start, end })
    }
}

impl std::fmt::Display for FillWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FillWindow::Always => f.write_str("always"),
            FillWindow::Between { start, end } => write!(
                f,
                "{:02}:{:02}-{:02}:{:02}",
                start / 60,
                start % 60,
                end / 60,
                end % 60
            ),
        }
    }
}

impl FillWindow {
    /// Whether `minute` (after local midnight, 0..1440) is inside the window.
    pub fn contains(&self, minute: u16) -> bool {
        match *self {
            FillWindow::Always => true,
            FillWindow::Between { start, end } if start < end => (start..end).contains(&minute),
            FillWindow::Between { start, end } => minute >= start || minute < end,
        }
    }
}

impl FillWindow {
    /// Minutes from `minute` to the end of the window when `minute` is inside it (`None` for
    /// [`FillWindow::Always`] or outside the window).
    pub fn minutes_left(&self, minute: u16) -> Option<u16> {
        match *self {
            FillWindow::Between { end, .. } if self.contains(minute) => {
                Some((end + DAY - minute) % DAY)
            }
            _ => None,
        }
    }
}

/// The current minute after local midnight.
pub fn local_minute_now() -> u16 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let local = secs + crate::io::sys::local_utc_offset_secs(secs);
    (local.rem_euclid(86_400) / 60) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_left_until_the_window_closes() {
        let w: FillWindow = "02:00-14:00".parse().unwrap();
        assert_eq!(w.minutes_left(120), Some(720));
        assert_eq!(w.minutes_left(839), Some(1));
        assert_eq!(w.minutes_left(840), None);
        let wrap: FillWindow = "22:00-06:00".parse().unwrap();
        assert_eq!(wrap.minutes_left(23 * 60), Some(7 * 60));
        assert_eq!(wrap.minutes_left(60), Some(5 * 60));
        assert_eq!(FillWindow::Always.minutes_left(0), None);
    }

    #[test]
    fn parses_and_wraps() {
        let w: FillWindow = "02:00-14:00".parse().unwrap();
        assert_eq!(
            w,
            FillWindow::Between {
                start: 120,
                end: 840
            }
        );
        assert!(w.contains(120) && w.contains(839));
        assert!(!w.contains(840) && !w.contains(119) && !w.contains(0));
        let night: FillWindow = "22:30-04:00".parse().unwrap();
        assert!(night.contains(23 * 60) && night.contains(0) && night.contains(239));
        assert!(!night.contains(240) && !night.contains(12 * 60));
        assert_eq!(night.to_string(), "22:30-04:00");
        assert!("always".parse::<FillWindow>().unwrap().contains(700));
        for bad in [
            "",
            "2-14",
            "02:00",
            "25:00-01:00",
            "02:60-03:00",
            "03:00-03:00",
            "x-y",
        ] {
            assert!(bad.parse::<FillWindow>().is_err(), "{bad:?} accepted");
        }
        assert!(local_minute_now() < DAY);
    }
}
