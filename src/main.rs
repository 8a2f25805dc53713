//! `outpost`: the command-line front end. Glue only: every subcommand parses its flags and
//! configuration, then calls into the library crates (`packager`, `appliance`, `control_plane`,
//! `protocol`).

mod cli;
mod commands;
mod config;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if let Some(parent) = cli.exit_with_parent {
        if let Err(e) = exit_with_parent(parent) {
            eprintln!("error: --exit-with-parent {parent}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let format = cli
        .log_format
        .or_else(|| config_log_format(&cli.command))
        .unwrap_or(cli::LogFormat::Text);
    init_tracing(&cli.log, format);
    match commands::run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Asks the kernel for SIGTERM when the parent dies (`PR_SET_PDEATHSIG`), then checks that the
/// parent is still `parent`: if it died before the request, this process was re-parented and
/// stops at once.
fn exit_with_parent(parent: i32) -> Result<(), String> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
        .map_err(|e| format!("prctl(PR_SET_PDEATHSIG): {e}"))?;
    let now = nix::unistd::getppid().as_raw();
    if now != parent {
        return Err(format!("the parent already exited (parent is now {now})"));
    }
    Ok(())
}

/// The `log_format` key of the service's `--config` file, read before logging starts (the
/// subcommand's own loader reads the file again and reports any error in it, this key included).
fn config_log_format(command: &cli::Command) -> Option<cli::LogFormat> {
    let path = match command {
        cli::Command::Appliance(a) => a.config_path()?,
        cli::Command::ControlPlane(a) => a.config.as_deref()?,
        _ => return None,
    };
    let table: toml::Table = std::fs::read_to_string(path).ok()?.parse().ok()?;
    match table.get("log_format")?.as_str()? {
        "json" => Some(cli::LogFormat::Json),
        "text" => Some(cli::LogFormat::Text),
        _ => None,
    }
}

fn init_tracing(filter: &str, format: cli::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // No colour codes in the journal or a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        cli::LogFormat::Text => builder.try_init(),
        cli::LogFormat::Json => builder.json().try_init(),
    };
}
