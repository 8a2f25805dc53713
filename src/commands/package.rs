//! `outpost package`: not built yet (issue 3).

use std::process::ExitCode;

/// Flags for `outpost package`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`outpost package` is not built yet (issue 3)")
}
