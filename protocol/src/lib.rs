//! Outpost's wire contracts, shared by the packager, the appliance, the control plane and the CLI.
//!
//! This crate is pure data and pure functions: it opens no files or sockets, never reads the
//! clock and spawns nothing. Time, keys and bytes are arguments; results are values.
//!
//! - [`grant`]: stream grants, the signed token carried as the first path segment of
//!   `/g/<grant>/<title>/<file>`, and the offline verifier appliances run on every request.
//! - [`catalog`]: the catalog entry the packager writes and the control plane imports.
//! - [`content_keys`]: the content-keys file (one key per quality tier and one for audio) that
//!   encrypted packaging writes beside, never inside, a title directory.
//! - [`fleet`]: what appliances tell the control plane (registration, heartbeats with health,
//!   drives, titles held and counters) and the published grant public keys they fetch.
//! - [`fill`]: the fill plan (which titles an appliance should hold, and its ordered sources
//!   with fill grants) and the fill part of a heartbeat.
//! - [`hex`]: the lowercase hex text of ids, keys and digests.
//! - [`qoe`]: per-session quality of experience (from CMCD) reported with heartbeats.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod catalog;
pub mod content_keys;
pub mod fill;
pub mod fleet;
pub mod grant;
pub mod hex;
pub mod qoe;
