//! The root package's end-to-end tests, in one test binary: the real `outpost` binary with real
//! files, sockets and clients (curl, ffmpeg, nginx, Shaka Player, dash.js and hls.js in
//! Chromium; Shaka Player and hls.js in Firefox ESR). One module per area; [`support`] holds
//! what they share and compiles once.
//!
//! Tests that need an external tool or service are `#[ignore]`d with the reason; `./scripts/test`
//! installs and starts what they need and runs `cargo test --test e2e -- --include-ignored`
//! (among the rest of the workspace). One area: `cargo test --test e2e fill_e2e::`.

mod support;

mod appliance_cli;
mod bgp;
mod check_cli;
mod cli_fill_plan;
mod cli_grant;
mod clock_skew;
mod control_plane_cli;
mod cp_replicas;
mod cp_restart;
mod demo_bird;
mod demo_browser;
mod demo_firefox;
mod demo_orphans;
mod drive_fault;
mod encrypt_av1;
mod encrypt_cbcs;
mod encrypt_cenc;
mod encrypt_players;
mod fill_e2e;
mod log_format;
mod openapi_contract;
mod package_catalogue_players;
mod package_cli;
mod package_players;
mod packaging;
mod pg_restart;
mod qoe_cli;
mod qoe_players;
mod stop_at_readiness;
