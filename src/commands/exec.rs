//! `outpost exec PROGRAM ARGS...` (hidden, internal): replaces this process with another program.
//!
//! `outpost demo` starts a program that is not `outpost` (BIRD) as
//! `outpost --exit-with-parent <demo pid> exec -- bird ...`: `main` sets `PR_SET_PDEATHSIG` and
//! checks the parent, then this `execve`s the program, which keeps the parent-death signal (the
//! kernel clears it only for set-user-ID, set-group-ID or file-capability binaries). So that
//! child too stops when the demo is killed outright, without `unsafe` code in a `pre_exec` hook.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags for `outpost exec`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The program (a path, or a name looked up on PATH).
    pub program: PathBuf,
    /// Its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<OsString>,
}

/// Executes the program; returns only when that fails.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let err = std::process::Command::new(&args.program)
        .args(&args.args)
        .exec();
    Err(anyhow::Error::new(err).context(format!("executing {}", args.program.display())))
}
