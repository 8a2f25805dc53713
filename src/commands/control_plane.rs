//! `outpost control-plane`: not built yet (issue 5).

use std::process::ExitCode;

/// Flags for `outpost control-plane`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`outpost control-plane` is not built yet (issue 5)")
}
