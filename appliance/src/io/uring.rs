//! The io_uring backend (not built yet): the server falls back to epoll.

use std::io;

/// Probes whether io_uring and the opcodes the backend needs are available.
pub fn probe() -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "io_uring backend not built yet",
    ))
}

/// Runs one io_uring data-plane thread.
pub fn run(
    _listener: std::net::TcpListener,
    _shared: std::sync::Arc<super::Shared>,
) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "io_uring backend not built yet",
    ))
}
