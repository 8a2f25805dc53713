//! Quality of experience: the per-session summary an appliance folds from its players' CMCD
//! (CTA-5004) and sends with its heartbeats ([`crate::fleet::Heartbeat::qoe`]).

use serde::{Deserialize, Serialize};

/// Most session summaries one heartbeat carries (the appliance sends the most recently active).
pub const MAX_SESSIONS_PER_HEARTBEAT: usize = 512;

/// One playback session as seen by one appliance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SessionQoe {
    /// CMCD `sid`.
    pub sid: String,
    /// CMCD `cid` (content id), when the player sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    /// The title of the last object served in this session (from its path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// First request seen, Unix milliseconds.
    pub first_ms: u64,
    /// Last request seen, Unix milliseconds.
    pub last_ms: u64,
    /// Requests with this `sid`.
    pub requests: u64,
    /// Bytes sent for them.
    pub bytes: u64,
    /// Startup time: from the first request to the end of the last request flagged `su`, once a
    /// media request without `su` followed, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_ms: Option<u64>,
    /// Requests flagged `bs` (the buffer starved before them).
    pub starvation_events: u64,
    /// Video (or muxed) media time requested, milliseconds (sum of CMCD `d`, or the time between
    /// requests when the player sends no `d`).
    pub media_ms: u64,
    /// Average encoded bitrate weighted by media time, kbps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_bitrate_kbps: Option<u64>,
    /// The last buffer length reported (`bl`), milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_ms: Option<u64>,
    /// The lowest buffer length reported, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_buffer_ms: Option<u64>,
    /// Average measured throughput reported (`mtp`), kbps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_throughput_kbps: Option<u64>,
    /// Changes of encoded bitrate between successive video (or muxed) requests.
    pub switches: u64,
    /// Bytes of this session's responses large enough to time (at least 64 KiB: smaller ones
    /// fit in socket buffers), as the appliance sent them. Absent from older appliances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timed_bytes: Option<u64>,
    /// The time the appliance took to send them, microseconds: from taking each request to
    /// handing its last byte to the kernel, so a client slower than the socket buffers can
    /// absorb shows here, a slow link past a buffering hop (a proxy) does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timed_us: Option<u64>,
}

impl SessionQoe {
    /// Whether the session starved at least once.
    pub fn starved(&self) -> bool {
        self.starvation_events > 0
    }

    /// The rate the appliance sent the timed responses at ([`SessionQoe::timed_bytes`] over
    /// [`SessionQoe::timed_us`]), kbit/s.
    pub fn served_kbps(&self) -> Option<u64> {
        match (self.timed_bytes, self.timed_us) {
            (Some(b), Some(us)) if us > 0 => Some((u128::from(b) * 8_000 / u128::from(us)) as u64),
            _ => None,
        }
    }
}
