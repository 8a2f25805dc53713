//! The TLS listener: rustls (ALPN `http/1.1`) on a small tokio runtime, serving through the same
//! [`Conn`] state machine and [`crate::service::Service`] as the plaintext backends, so every
//! HTTP rule is shared. Certificates come from PEM files and are reloaded on SIGHUP
//! ([`CertStore::reload`]); a failed reload keeps the previous certificate.
//!
//! Not zero-copy: without kernel TLS (absent on the reference kernel) file bytes are read into a
//! buffer and encrypted in user space, as every userspace TLS server does. File reads are
//! `pread` on the runtime's worker threads (a page-cache miss blocks that worker).

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::conn::{Action, Conn};
use crate::io::Shared;

/// Plaintext bytes read from a file per TLS write.
const FILE_CHUNK: usize = 256 * 1024;

/// TLS setup errors, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading a PEM file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file holds no certificate / no private key.
    #[error("{path}: {what}")]
    Missing {
        /// The file.
        path: PathBuf,
        /// What is missing.
        what: &'static str,
    },
    /// rustls refused the certificate and key.
    #[error("certificate {cert} with key {key}: {source}")]
    Rustls {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// The cause.
        source: rustls::Error,
    },
}

/// The current certificate, swappable on SIGHUP.
#[derive(Debug)]
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

fn load(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Io { path, source }
    };
    let cert_pem = std::fs::read(cert).map_err(io_err(cert))?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(io_err(cert))?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            path: cert.to_path_buf(),
            what: "no PEM certificate",
        });
    }
    let key_pem = std::fs::read(key).map_err(io_err(key))?;
    let pkey: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(io_err(key))?
        .ok_or_else(|| TlsError::Missing {
            path: key.to_path_buf(),
            what: "no PEM private key",
        })?;
    let rustls_err = |source| TlsError::Rustls {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source,
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(rustls_err)?
    .with_no_client_auth()
    .with_single_cert(certs, pkey)
    .map_err(rustls_err)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

impl CertStore {
    /// Loads the certificate chain and private key from PEM files.
    pub fn open(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let cfg = load(cert, key)?;
        Ok(CertStore {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(cfg)),
        })
    }

    /// Re-reads the files; on error the previous certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let cfg = load(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(cfg);
        Ok(())
    }

    fn config(&self) -> Arc<rustls::ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Serves TLS on `listener` until the drain finishes.
pub async fn serve(listener: tokio::net::TcpListener, certs: Arc<CertStore>, shared: Arc<Shared>) {
    let live = Arc::new(AtomicUsize::new(0));
    loop {
        if shared.is_shutting_down() {
            break;
        }
        let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        let Ok(Ok((stream, peer))) = accepted else {
            continue;
        };
        let m = shared.svc.metrics();
        if !shared.admit() {
            m.conn_refused();
            continue;
        }
        m.conn_opened();
        live.fetch_add(1, Ordering::SeqCst);
        let (certs, shared, live) = (certs.clone(), shared.clone(), live.clone());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let _ = connection(stream, peer, &certs, &shared).await;
            shared.svc.metrics().conn_closed();
            live.fetch_sub(1, Ordering::SeqCst);
        });
    }
    drop(listener);
    while live.load(Ordering::SeqCst) > 0
        && shared.drain_deadline().is_none_or(|d| Instant::now() < d)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    certs: &CertStore,
    shared: &Shared,
) -> io::Result<()> {
    let t = shared.timeouts;
    let acceptor = tokio_rustls::TlsAcceptor::from(certs.config());
    let mut tls = tokio::time::timeout(t.header, acceptor.accept(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timeout"))??;
    let svc = &shared.svc;
    let mut conn = Conn::new(Some(peer.ip()), Instant::now());
    let mut rbuf = vec![0u8; 16 * 1024];
    let mut fbuf = vec![0u8; FILE_CHUNK];
    loop {
        if shared.is_shutting_down() {
            conn.close_after_response();
        }
        let now = Instant::now();
        match conn.next(svc, now) {
            Action::Read => {
                tls.flush().await?;
                let deadline = conn.deadline(t);
                if now >= deadline {
                    svc.metrics().timeout();
                    break;
                }
                // Wake at least every 100 ms to notice a drain.
                let wait = (deadline - now).min(Duration::from_millis(100));
                match tokio::time::timeout(wait, tls.read(&mut rbuf)).await {
                    Ok(Ok(n)) => conn.feed(&rbuf[..n], Instant::now()),
                    Ok(Err(_)) => break,
                    Err(_) => {}
                }
            }
            Action::Send { data, .. } => {
                tls.write_all(data).await?;
                let n = data.len();
                conn.advance(n, Instant::now());
            }
            Action::SendFile {
                file, offset, len, ..
            } => {
                let n = (len as usize).min(fbuf.len());
                let got = file.file.read_at(&mut fbuf[..n], offset)?;
                if got == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank"));
                }
                tls.write_all(&fbuf[..got]).await?;
                conn.advance(got, Instant::now());
            }
            Action::Close => break,
        }
    }
    let _ = tls.shutdown().await;
    Ok(())
}
