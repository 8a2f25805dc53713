//! Start-up and shutdown: binds the listeners, probes io_uring and falls back to epoll (logged),
//! starts one data-plane thread per core and the admin runtime, handles SIGTERM/SIGINT (drain)
//! and SIGHUP (reload).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::admin::{self, AdminState};
use crate::conn::Timeouts;
use crate::io::{self as backends, Shared};
use crate::service::Service;
use crate::tls::{self, CertStore};

/// Which backend to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// io_uring when the probe succeeds, else epoll.
    Auto,
    /// io_uring or fail.
    Uring,
    /// epoll + sendfile.
    Epoll,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "io_uring" | "uring" => Ok(Self::Uring),
            "epoll" => Ok(Self::Epoll),
            other => Err(format!(
                "backend {other:?}: expected \"auto\", \"io_uring\" or \"epoll\""
            )),
        }
    }
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Data-plane listen address.
    pub listen: SocketAddr,
    /// Admin listen address.
    pub admin_listen: Option<SocketAddr>,
    /// Data-plane threads (one per core by default).
    pub threads: usize,
    /// Backend choice.
    pub backend: BackendChoice,
    /// Connection limit.
    pub max_connections: usize,
    /// Header and idle timeouts.
    pub timeouts: Timeouts,
    /// How long a drain may take before remaining connections are cut.
    pub drain_timeout: Duration,
    /// Install SIGTERM/SIGINT/SIGHUP handlers (the binary does; in-process tests do not).
    pub handle_signals: bool,
    /// The TLS listener, if any.
    pub tls: Option<TlsConfig>,
}

/// The TLS listener's settings.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Certificate and key (reloadable).
    pub certs: Arc<CertStore>,
}

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding a listener failed.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// io_uring was required but is unavailable.
    #[error("backend io_uring requested but unavailable: {0}")]
    UringUnavailable(io::Error),
    /// A thread or runtime could not start.
    #[error("starting {what}: {source}")]
    Start {
        /// What.
        what: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// A data-plane thread failed.
    #[error("data-plane thread failed: {0}")]
    Thread(io::Error),
}

/// Callback run on SIGHUP (reload keys, certificates).
pub type ReloadFn = Arc<dyn Fn() + Send + Sync>;

/// A running server.
pub struct Running {
    /// The data-plane address actually bound.
    pub local_addr: SocketAddr,
    /// The admin address actually bound.
    pub admin_addr: Option<SocketAddr>,
    /// The TLS address actually bound.
    pub tls_addr: Option<SocketAddr>,
    /// The backend in use.
    pub backend: &'static str,
    shared: Arc<Shared>,
    drain_timeout: Duration,
    threads: Vec<JoinHandle<io::Result<()>>>,
    tls: Option<JoinHandle<()>>,
    admin: Option<(JoinHandle<()>, tokio::sync::oneshot::Sender<()>)>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("local_addr", &self.local_addr)
            .field("backend", &self.backend)
            .finish()
    }
}

/// Starts the server.
pub fn start(
    cfg: ServerConfig,
    svc: Arc<Service>,
    reload: Option<ReloadFn>,
) -> Result<Running, ServerError> {
    let use_uring = match cfg.backend {
        BackendChoice::Epoll => false,
        BackendChoice::Uring => {
            backends::uring::probe().map_err(ServerError::UringUnavailable)?;
            true
        }
        BackendChoice::Auto => match backends::uring::probe() {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "io_uring unavailable; falling back to epoll + sendfile");
                false
            }
        },
    };
    let backend = if use_uring { "io_uring" } else { "epoll" };
    let threads = cfg.threads.max(1);
    let listeners =
        backends::bind_listeners(cfg.listen, threads).map_err(|source| ServerError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let local_addr = listeners[0]
        .local_addr()
        .map_err(|source| ServerError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let shared = Arc::new(Shared::new(svc, cfg.max_connections, cfg.timeouts));
    let mut handles = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let sh = shared.clone();
        let h = std::thread::Builder::new()
            .name(format!("outpost-{backend}-{i}"))
            .spawn(move || {
                if use_uring {
                    backends::uring::run(l, sh)
                } else {
                    backends::epoll::run(l, sh)
                }
            })
            .map_err(|source| ServerError::Start {
                what: "data-plane thread",
                source,
            })?;
        handles.push(h);
    }
    // The TLS listener: its own multi-threaded tokio runtime.
    let mut tls_addr = None;
    let mut tls_thread = None;
    if let Some(t) = &cfg.tls {
        let l = std::net::TcpListener::bind(t.listen).map_err(|source| ServerError::Bind {
            addr: t.listen,
            source,
        })?;
        l.set_nonblocking(true)
            .map_err(|source| ServerError::Bind {
                addr: t.listen,
                source,
            })?;
        tls_addr = l.local_addr().ok();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("outpost-tls")
            .enable_all()
            .build()
            .map_err(|source| ServerError::Start {
                what: "TLS runtime",
                source,
            })?;
        let (certs, sh) = (t.certs.clone(), shared.clone());
        tls_thread = Some(
            std::thread::Builder::new()
                .name("outpost-tls-main".into())
                .spawn(move || {
                    rt.block_on(async move {
                        match tokio::net::TcpListener::from_std(l) {
                            Ok(l) => tls::serve(l, certs, sh).await,
                            Err(e) => tracing::error!(error = %e, "TLS listener"),
                        }
                    });
                })
                .map_err(|source| ServerError::Start {
                    what: "TLS thread",
                    source,
                })?,
        );
    }
    // The admin runtime: admin listener and signals.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ServerError::Start {
            what: "admin runtime",
            source,
        })?;
    let admin_listener = match cfg.admin_listen {
        Some(a) => {
            let std_l = std::net::TcpListener::bind(a)
                .map_err(|source| ServerError::Bind { addr: a, source })?;
            std_l
                .set_nonblocking(true)
                .map_err(|source| ServerError::Bind { addr: a, source })?;
            Some(std_l)
        }
        None => None,
    };
    let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let state = Arc::new(AdminState {
        shared: shared.clone(),
        backend,
    });
    let drain = cfg.drain_timeout;
    // Registered here, before "appliance serving" is said, not in the admin thread's first poll:
    // a SIGTERM sent right after readiness is then queued for `signals`, never left to the
    // default action (which would end the process without draining).
    let signal_streams = if cfg.handle_signals {
        let _runtime = rt.enter();
        Some(Signals::register().map_err(|source| ServerError::Start {
            what: "signal handlers",
            source,
        })?)
    } else {
        None
    };
    let admin = std::thread::Builder::new()
        .name("outpost-admin".into())
        .spawn(move || {
            rt.block_on(async move {
                if let Some(l) = admin_listener {
                    match tokio::net::TcpListener::from_std(l) {
                        Ok(l) => {
                            tokio::spawn(admin::serve(l, state.clone()));
                        }
                        Err(e) => tracing::error!(error = %e, "admin listener"),
                    }
                }
                if let Some(streams) = signal_streams {
                    tokio::spawn(signals(streams, state.shared.clone(), drain, reload));
                }
                tokio::spawn(watch_drives(state.shared.clone()));
                let _ = stop_rx.await;
            });
        })
        .map_err(|source| ServerError::Start {
            what: "admin thread",
            source,
        })?;
    tracing::info!(%local_addr, ?admin_addr, ?tls_addr, backend, threads, "appliance serving");
    Ok(Running {
        local_addr,
        admin_addr,
        tls_addr,
        tls: tls_thread,
        backend,
        shared,
        drain_timeout: cfg.drain_timeout,
        threads: handles,
        admin: Some((admin, stop_tx)),
    })
}

/// How often every cache drive's root is checked (see [`crate::cache::Store::check_drive`]).
pub const DRIVE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Checks the cache drives every [`DRIVE_CHECK_INTERVAL`], so a drive that disappears (removed,
/// unmounted) is taken out, reported in `/metrics`, `/readyz` and the heartbeat, and its titles
/// leave the held list, even when no request touches it. The check (a `stat` per drive) runs on
/// the blocking pool: a hung drive never stalls the admin listener.
async fn watch_drives(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(DRIVE_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let svc = shared.svc.clone();
        let _ = tokio::task::spawn_blocking(move || svc.store().check_drives()).await;
    }
}

/// SIGTERM, SIGINT and SIGHUP, each caught from the moment [`Signals::register`] returns.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the three handlers now. Must run inside a Tokio runtime with I/O enabled.
    fn register() -> io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// SIGHUP reloads (as often as it comes); SIGTERM or SIGINT starts the drain.
async fn signals(
    mut streams: Signals,
    shared: Arc<Shared>,
    drain: Duration,
    reload: Option<ReloadFn>,
) {
    loop {
        tokio::select! {
            _ = streams.term.recv() => break,
            _ = streams.int.recv() => break,
            _ = streams.hup.recv() => {
                tracing::info!("SIGHUP: reloading");
                if let Some(r) = &reload { r(); }
            }
        }
    }
    tracing::info!(
        deadline_secs = drain.as_secs_f64(),
        "draining: no new connections, finishing in-flight responses"
    );
    shared.begin_shutdown(Instant::now() + drain);
}

impl Running {
    /// The shared data-plane state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Starts draining (as SIGTERM does).
    pub fn shutdown(&self) {
        self.shared
            .begin_shutdown(Instant::now() + self.drain_timeout);
    }

    /// Waits for the data plane to finish draining, then stops the admin runtime.
    pub fn wait(mut self) -> Result<(), ServerError> {
        let mut first_err = None;
        for h in self.threads.drain(..) {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => first_err = first_err.or(Some(ServerError::Thread(e))),
                Err(_) => {
                    first_err = first_err.or(Some(ServerError::Thread(io::Error::other(
                        "thread panicked",
                    ))))
                }
            }
        }
        if let Some(h) = self.tls.take() {
            let _ = h.join();
        }
        if let Some((h, tx)) = self.admin.take() {
            let _ = tx.send(());
            let _ = h.join();
        }
        tracing::info!("drained; exiting");
        first_err.map_or(Ok(()), Err)
    }
}
