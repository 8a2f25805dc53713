//! The command-line grammar (clap derive). Each subcommand's flags live beside its code in
//! `commands/`.

use clap::{Parser, Subcommand};

use crate::commands;

/// Outpost: an Open Connect-style video CDN.
///
/// The packager turns encoded renditions into CMAF files with DASH and HLS manifests; ISPs host
/// appliances that serve them; the control plane decides who may watch what, where, and signs the
/// grants that appliances check offline.
#[derive(Debug, Parser)]
#[command(name = "outpost", version, propagate_version = true)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `outpost=debug,appliance=trace`.
    #[arg(long, global = true, env = "OUTPOST_LOG", default_value = "info")]
    pub log: String,

    /// Log line format on stderr: `text` (human) or `json` (one object per line, for the journal
    /// and log shippers). Default: the config file's `log_format` key, else `text`.
    #[arg(
        long,
        global = true,
        env = "OUTPOST_LOG_FORMAT",
        value_name = "text|json"
    )]
    pub log_format: Option<LogFormat>,

    /// Exit when process PID (the parent that started this one, e.g. `outpost demo`) dies:
    /// sets PR_SET_PDEATHSIG to SIGTERM. Internal.
    #[arg(long, global = true, hide = true, value_name = "PID")]
    pub exit_with_parent: Option<i32>,

    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written (`--log-format`, config key `log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`).
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Package encoded MP4 renditions into CMAF files, DASH and HLS manifests and a catalog entry.
    Package(commands::package::Args),
    /// Run an appliance: the segment server an ISP hosts.
    Appliance(commands::appliance::Args),
    /// Run the control plane, or import policy and catalog data into it.
    #[command(name = "control-plane")]
    ControlPlane(commands::control_plane::Args),
    /// Run the whole CDN on loopback: a control plane, clusters of appliances and a player page.
    Demo(commands::demo::Args),
    /// Manage grant signing keys.
    Keys(commands::keys::Args),
    /// Sign or verify stream grants.
    Grant(commands::grant::Args),
    /// Internal: replaces this process with PROGRAM ARGS... (after `--exit-with-parent`, so the
    /// program keeps the parent-death signal: how `outpost demo` runs BIRD).
    #[command(hide = true)]
    Exec(commands::exec::Args),
}
