//! `outpost demo`: not built yet (issue 9).

use std::process::ExitCode;

/// Flags for `outpost demo`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`outpost demo` is not built yet (issue 9)")
}
