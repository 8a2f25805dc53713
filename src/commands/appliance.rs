//! `outpost appliance`: not built yet (issue 4).

use std::process::ExitCode;

/// Flags for `outpost appliance`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`outpost appliance` is not built yet (issue 4)")
}
