//! Bounded per-session summaries folded from CMCD, keyed by `sid`.
//!
//! A fixed number of sessions is kept ([`SessionTable::new`]'s capacity); the one least recently
//! seen is evicted to make room (and counted). Each summary is a
//! [`protocol::qoe::SessionQoe`] plus a few running sums, so memory per session is bounded by the
//! CMCD string caps (`sid`, `cid` at most 64 bytes).

use std::num::NonZeroUsize;

use lru::LruCache;
use protocol::qoe::SessionQoe;

use super::cmcd::Cmcd;

/// One observed request, as the session table folds it.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The request's CMCD.
    pub cmcd: &'a Cmcd,
    /// The title of the object served (first path segment), if any.
    pub title: Option<&'a str>,
    /// When the request was taken, Unix ms.
    pub start_ms: u64,
    /// When its response was sent, Unix ms.
    pub end_ms: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// From taking the request to handing its last byte to the kernel, microseconds.
    pub send_us: u64,
}

#[derive(Debug, Clone, Default)]
struct Entry {
    q: SessionQoe,
    startup_end_ms: Option<u64>,
    startup_done: bool,
    bitrate_ms_sum: u128,
    mtp_sum: u128,
    mtp_count: u64,
    last_media_ms: Option<u64>,
    last_br: Option<u64>,
}

/// The per-session summaries.
#[derive(Debug)]
pub struct SessionTable {
    map: LruCache<String, Entry>,
    evicted: u64,
}

impl SessionTable {
    /// A table of at most `capacity` sessions.
    pub fn new(capacity: usize) -> Self {
        SessionTable {
            map: LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN)),
            evicted: 0,
        }
    }

    /// Sessions evicted so far to make room.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Folds one request into its session (requests without `sid` are not folded).
    pub fn observe(&mut self, o: Observed<'_>) {
        let Some(sid) = o.cmcd.sid.as_deref() else {
            return;
        };
        // A known session: one lookup, no allocation. A new one: its key and summary are
        // allocated once.
        if self.map.get_mut(sid).is_none() {
            if self.map.len() == self.map.cap().get() {
                self.map.pop_lru();
                self.evicted += 1;
            }
            let e = Entry {
                q: SessionQoe {
                    sid: sid.to_owned(),
                    first_ms: o.start_ms,
                    ..SessionQoe::default()
                },
                ..Entry::default()
            };
            self.map.put(sid.to_owned(), e);
        }
        let Some(e) = self.map.get_mut(sid) else {
            return;
        };
        let c = o.cmcd;
        let q = &mut e.q;
        q.first_ms = q.first_ms.min(o.start_ms);
        q.last_ms = q.last_ms.max(o.end_ms);
        q.requests += 1;
        q.bytes += o.bytes;
        // The appliance's own send rate, over responses large enough to measure it.
        if o.bytes >= super::ETP_MIN_BYTES {
            q.timed_bytes = Some(q.timed_bytes.unwrap_or(0) + o.bytes);
            q.timed_us = Some(q.timed_us.unwrap_or(0) + o.send_us);
        }
        if let Some(cid) = &c.cid {
            if q.cid.as_deref() != Some(cid.as_str()) {
                q.cid = Some(cid.as_str().to_owned());
            }
        }
        if let Some(t) = o.title {
            if q.title.as_deref() != Some(t) {
                q.title = Some(t.to_owned());
            }
        }
        if c.bs {
            q.starvation_events += 1;
        }
        if let Some(bl) = c.bl {
            q.buffer_ms = Some(bl);
            q.min_buffer_ms = Some(q.min_buffer_ms.map_or(bl, |m| m.min(bl)));
        }
        if let Some(mtp) = c.mtp {
            e.mtp_sum += u128::from(mtp);
            e.mtp_count += 1;
            q.avg_throughput_kbps = Some((e.mtp_sum / u128::from(e.mtp_count)) as u64);
        }
        let media = c.ot.is_some_and(|t| t.is_media());
        if c.su {
            e.startup_end_ms = Some(e.startup_end_ms.map_or(o.end_ms, |t| t.max(o.end_ms)));
        } else if media && !e.startup_done {
            e.startup_done = true;
            q.startup_ms = e.startup_end_ms.map(|end| end.saturating_sub(q.first_ms));
        }
        // Bitrate, media time and switches follow the video (or muxed) track: audio has its own
        // bitrate and would count every alternation as a switch.
        if media && c.ot != Some(super::cmcd::ObjectType::A) {
            if let Some(br) = c.br {
                // Media time: the object's duration, else the wall time since the previous
                // video request of this session.
                let dt = c.d.unwrap_or_else(|| {
                    e.last_media_ms
                        .map_or(0, |t| o.start_ms.saturating_sub(t))
                        .min(60_000)
                });
                q.media_ms += dt;
                e.bitrate_ms_sum += u128::from(br) * u128::from(dt);
                if q.media_ms > 0 {
                    q.avg_bitrate_kbps = Some((e.bitrate_ms_sum / u128::from(q.media_ms)) as u64);
                }
                if e.last_br.is_some_and(|b| b != br) {
                    q.switches += 1;
                }
                e.last_br = Some(br);
            }
            e.last_media_ms = Some(o.start_ms);
        }
    }

    /// The summaries, most recently seen first.
    pub fn snapshot(&self) -> Vec<SessionQoe> {
        self.map.iter().map(|(_, e)| e.q.clone()).collect()
    }

    /// The summaries of sessions seen at or after `since_ms`, most recent first, at most `max`.
    pub fn since(&self, since_ms: u64, max: usize) -> Vec<SessionQoe> {
        self.map
            .iter()
            .filter(|(_, e)| e.q.last_ms >= since_ms)
            .take(max)
            .map(|(_, e)| e.q.clone())
            .collect()
    }

    /// The summary of one session.
    pub fn get(&self, sid: &str) -> Option<SessionQoe> {
        self.map.peek(sid).map(|e| e.q.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(t: &mut SessionTable, dict: &str, start_ms: u64) {
        let mut c = Cmcd::default();
        c.add(dict);
        assert_eq!(c.ignored, 0, "{dict}");
        t.observe(Observed {
            cmcd: &c,
            title: Some("tears"),
            start_ms,
            end_ms: start_ms + 100,
            bytes: 1000,
            send_us: 100_000,
        });
    }

    #[test]
    fn folds_startup_starvation_bitrate_and_switches() {
        let mut t = SessionTable::new(8);
        req(&mut t, r#"sid="s",cid="tears",ot=m,su"#, 1_000);
        req(&mut t, r#"sid="s",ot=i,su"#, 1_200);
        req(&mut t, r#"sid="s",ot=v,br=1000,d=4000,bl=0,su"#, 1_400);
        req(
            &mut t,
            r#"sid="s",ot=v,br=1000,d=4000,bl=4000,mtp=8000"#,
            2_000,
        );
        req(&mut t, r#"sid="s",ot=a,br=128,d=4000"#, 2_100);
        req(
            &mut t,
            r#"sid="s",ot=v,br=3000,d=4000,bl=300,bs,mtp=2000"#,
            9_000,
        );
        req(&mut t, r#"sid="s",ot=v,br=3000,d=8000,bl=6000"#, 10_000);
        let q = t.get("s").unwrap();
        assert_eq!(q.requests, 7);
        assert_eq!(q.cid.as_deref(), Some("tears"));
        assert_eq!(
            q.startup_ms,
            Some(500),
            "first request to end of the last su"
        );
        assert_eq!(q.starvation_events, 1);
        assert!(q.starved());
        assert_eq!(q.switches, 1, "audio does not count as a switch");
        // (1000*4000*2 + 3000*4000 + 3000*8000) / 20000: audio is left out
        assert_eq!(q.media_ms, 20_000);
        assert_eq!(q.avg_bitrate_kbps, Some(2_200));
        assert_eq!((q.buffer_ms, q.min_buffer_ms), (Some(6000), Some(0)));
        assert_eq!(q.avg_throughput_kbps, Some(5000));
        assert_eq!((q.first_ms, q.last_ms), (1_000, 10_100));
        assert_eq!(
            (q.timed_bytes, q.served_kbps()),
            (None, None),
            "all below 64 KiB"
        );
    }

    #[test]
    fn times_only_responses_large_enough_to_measure() {
        let mut t = SessionTable::new(2);
        let mut c = Cmcd::default();
        c.add(r#"sid="s",ot=v,br=1000"#);
        for (bytes, send_us) in [(1_000, 50_000), (200_000, 800_000), (300_000, 1_200_000)] {
            t.observe(Observed {
                cmcd: &c,
                title: None,
                start_ms: 1,
                end_ms: 2,
                bytes,
                send_us,
            });
        }
        let q = t.get("s").unwrap();
        assert_eq!(
            (q.bytes, q.timed_bytes, q.timed_us),
            (501_000, Some(500_000), Some(2_000_000))
        );
        assert_eq!(q.served_kbps(), Some(2_000), "500 kB in 2 s");
    }

    #[test]
    fn oldest_session_is_evicted_at_capacity() {
        let mut t = SessionTable::new(2);
        req(&mut t, r#"sid="a",ot=v,br=1"#, 1);
        req(&mut t, r#"sid="b",ot=v,br=1"#, 2);
        req(&mut t, r#"sid="a",ot=v,br=1"#, 3);
        req(&mut t, r#"sid="c",ot=v,br=1"#, 4);
        assert_eq!(t.len(), 2);
        assert_eq!(t.evicted(), 1);
        assert!(t.get("b").is_none(), "b was least recently seen");
        assert!(t.get("a").is_some() && t.get("c").is_some());
        assert_eq!(t.since(104, 10).len(), 1);
        let mut none = Cmcd::default();
        none.add("ot=v,br=5");
        t.observe(Observed {
            cmcd: &none,
            title: None,
            start_ms: 9,
            end_ms: 9,
            bytes: 1,
            send_us: 0,
        });
        assert_eq!(t.len(), 2, "no sid: not folded");
    }
}
