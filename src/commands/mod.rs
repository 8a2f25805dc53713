//! One module per subcommand; each has an `Args` struct and a `run` function.

pub mod appliance;
pub mod check;
pub mod control_plane;
pub mod demo;
pub mod exec;
pub mod grant;
pub mod keys;
pub mod package;

use std::process::ExitCode;

use crate::cli::Command;

/// Dispatches a parsed command line.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Package(a) => package::run(a),
        Command::Appliance(a) => appliance::main(a),
        Command::ControlPlane(a) => control_plane::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Keys(a) => keys::run(a),
        Command::Grant(a) => grant::run(a),
        Command::Exec(a) => exec::run(a),
    }
}

/// Seconds since the Unix epoch, from the system clock (the CLI is where the clock is read; the
/// `protocol` crate takes `now` as an argument).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Ctrl-C, or SIGTERM from a supervisor (systemd, the demo, a test): what every long-running
/// subcommand stops on.
///
/// The handlers are installed when this is called, not when the future is first polled: a
/// SIGTERM that comes between a "listening" line and that first poll then waits for the future
/// instead of meeting the default action, which ends the process without a drain and with a
/// failed exit. Call it inside the Tokio runtime and before saying the service is ready.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let wait = |kind: SignalKind| {
        let stream = signal(kind);
        async move {
            match stream {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, ?kind, "cannot catch the signal; it ends the process");
                    std::future::pending::<()>().await
                }
            }
        }
    };
    let (term, int) = (wait(SignalKind::terminate()), wait(SignalKind::interrupt()));
    async move {
        tokio::select! {
            () = term => {}
            () = int => {}
        }
    }
}
