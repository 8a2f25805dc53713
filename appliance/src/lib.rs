//! The Outpost appliance: serves `/g/<grant>/<title>/<file>` from its cache directories.
//!
//! Layers, each its own module:
//! - [`http1`]: the sans-I/O HTTP/1.1 core (parser, ranges, conditionals, response heads);
//! - [`conn`]: the per-connection state machine (bytes in, "send these bytes, then this file
//!   range" out), driven by both I/O backends;
//! - [`service`]: grant checks (with a verified-token cache) and the mapping of a request onto a
//!   cached file;
//! - [`bufpool`]: per-thread pools of response buffers (no allocation on a warm hit);
//! - [`cache`]: cache directories (drives), the in-memory index, placement and eviction;
//! - [`io`]: the I/O backends (io_uring and epoll + sendfile) and the only `unsafe` code;
//! - [`admin`]: the tokio + hyper admin listener (`/metrics`, `/healthz`, `/readyz`);
//! - [`tls`]: the rustls listener (tokio), serving through the same state machine;
//! - [`server`]: start-up, signals and drain;
//! - [`agent`]: the fleet agent (registration, heartbeats, key cache, fill plan), tokio only;
//! - [`qoe`]: CMCD in, CMSD out, per-session QoE summaries and the JSON access log;
//! - [`fill`]: the filler (verified, resumable, windowed, rate-limited downloads of planned
//!   titles) and the title gate it relies on in [`cache`].
#![deny(unsafe_code)]

pub mod admin;
pub mod agent;
pub mod bgp;
pub mod bufpool;
pub mod cache;
pub mod conn;
pub mod fill;
pub mod http1;
pub mod io;
pub mod keys;
pub mod metrics;
pub mod qoe;
pub mod server;
pub mod service;
pub mod tls;
