//! A receive-only BGP speaker: the ISP's routers tell the appliance which client prefixes it
//! serves, and the fleet agent reports them to the control plane (see [`report`]).
//!
//! It runs on its own thread with its own single-threaded tokio runtime, never on the data-plane
//! threads, so a slow or hostile peer cannot stall serving. Per configured peer: an active
//! connector (unless the peer is `passive`) and, when `listen` is set, passive accepts matched by
//! source address. The session FSM (RFC 4271 §8) is OpenSent → OpenConfirm → Established with hold
//! and keepalive timers; any error sends the NOTIFICATION [`wire`] chose and drops the session and
//! its routes. The speaker never announces a route: it sends OPEN, KEEPALIVE and NOTIFICATION only.
//!
//! **Initial table.** The OPEN advertises Graceful Restart (RFC 4724 §3) with restart flags 0,
//! restart time 0 and no AFI/SAFI: the speaker preserves nothing across restarts, it only says it
//! understands End-of-RIB. Per peer, the session's initial table is *complete*
//! ([`PeerStatus::rib_complete`], reported to the control plane, which does not count an
//! appliance's routes before then):
//! - when the peer advertised Graceful Restart itself (it then sends End-of-RIB markers): once
//!   End-of-RIB has arrived for every AFI/SAFI negotiated with it (IPv4 and/or IPv6 unicast), or
//!   as a fallback [`EOR_FALLBACK`] after the last UPDATE if one never comes;
//! - otherwise (no End-of-RIB to expect): once [`BgpConfig::rib_settle`] has passed since the
//!   session became established and since the last UPDATE that changed its routes.
//!
//! Once complete it stays so until the session goes down; a new session starts incomplete.

pub mod report;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use wire::{code, Capability, Ctx, Message, Notification, Open, Prefix, WireError};

/// Default BGP port.
pub const PORT: u16 = 179;

/// How long a peer that advertised Graceful Restart may stay quiet without sending the
/// End-of-RIB markers it owes before its initial table is taken as complete anyway.
pub const EOR_FALLBACK: Duration = Duration::from_secs(60);

/// The families this speaker negotiates (multiprotocol capability): IPv4 and IPv6 unicast.
const FAMILIES: [(u16, u8); 2] = [
    (wire::AFI_IPV4, wire::SAFI_UNICAST),
    (wire::AFI_IPV6, wire::SAFI_UNICAST),
];

#[derive(Debug, thiserror::Error)]
pub enum BgpError {
    #[error("bgp: listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("bgp: starting the BGP thread: {0}")]
    Thread(std::io::Error),
    #[error("bgp: {0}")]
    Config(String),
}

/// One configured neighbour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub addr: IpAddr,
    pub port: u16,
    pub asn: u32,
    /// Only accept its connections; never connect out.
    pub passive: bool,
}

impl std::str::FromStr for PeerConfig {
    type Err = String;
    /// `ip[:port],asn[,passive]` (IPv6 with a port as `[ip]:port`).
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(',').collect();
        if parts.len() < 2 || parts.len() > 3 {
            return Err(format!("bgp peer {s:?}: expected ip[:port],asn[,passive]"));
        }
        let (addr, port) = if let Ok(sa) = parts[0].parse::<SocketAddr>() {
            (sa.ip(), sa.port())
        } else {
            let ip: IpAddr = parts[0]
                .parse()
                .map_err(|_| format!("bgp peer {s:?}: bad address {:?}", parts[0]))?;
            (ip, PORT)
        };
        let asn: u32 = parts[1]
            .parse()
            .map_err(|_| format!("bgp peer {s:?}: bad AS number {:?}", parts[1]))?;
        if asn == 0 {
            return Err(format!("bgp peer {s:?}: AS number 0"));
        }
        let passive = match parts.get(2) {
            None => false,
            Some(&"passive") => true,
            Some(o) => return Err(format!("bgp peer {s:?}: unknown option {o:?} (passive)")),
        };
        Ok(PeerConfig {
            addr,
            port,
            asn,
            passive,
        })
    }
}

#[derive(Debug, Clone)]
pub struct BgpConfig {
    /// Where to accept connections (None: active open only).
    pub listen: Option<SocketAddr>,
    pub asn: u32,
    pub router_id: Ipv4Addr,
    pub peers: Vec<PeerConfig>,
    /// Proposed hold time, seconds (0 or ≥ 3; default 90).
    pub hold_time: u16,
    /// Seconds without any established session after which the appliance reports itself
    /// unsteerable for BGP-fed prefixes.
    pub grace: Duration,
    /// Wait between active connection attempts.
    pub connect_retry: Duration,
    /// For a peer that did not advertise Graceful Restart (so sends no End-of-RIB): how long
    /// after the session came up, and after the last UPDATE that changed its routes, its
    /// initial table counts as complete.
    pub rib_settle: Duration,
}

impl BgpConfig {
    pub fn validate(&self) -> Result<(), BgpError> {
        if self.asn == 0 {
            return Err(BgpError::Config("bgp_asn must not be 0".into()));
        }
        if self.router_id.is_unspecified() {
            return Err(BgpError::Config("bgp_router_id must not be 0.0.0.0".into()));
        }
        if self.hold_time == 1 || self.hold_time == 2 {
            return Err(BgpError::Config(
                "bgp_hold_time must be 0 or at least 3".into(),
            ));
        }
        if self.peers.is_empty() {
            return Err(BgpError::Config("no bgp_peer configured".into()));
        }
        if self.listen.is_none() && self.peers.iter().all(|p| p.passive) {
            return Err(BgpError::Config(
                "every bgp peer is passive but bgp_listen is not set".into(),
            ));
        }
        Ok(())
    }
}

/// FSM states reported outside (Connect/Active are "idle" between attempts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Idle,
    Connect,
    OpenSent,
    OpenConfirm,
    Established,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Connect => "connect",
            State::OpenSent => "open_sent",
            State::OpenConfirm => "open_confirm",
            State::Established => "established",
        }
    }
    pub const ALL: [State; 5] = [
        State::Idle,
        State::Connect,
        State::OpenSent,
        State::OpenConfirm,
        State::Established,
    ];
}

/// A learned route's attributes that steering uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pub as_path_len: u32,
    pub med: u32,
    pub communities: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub peer: String,
    pub asn: u32,
    pub state: State,
    pub last_error: Option<String>,
    /// When the session became established (None unless established).
    pub established_at: Option<SystemTime>,
    pub routes: usize,
    /// NOTIFICATIONs sent and received, and UPDATEs that RFC 7606 turned into withdrawals.
    pub notifications_sent: u64,
    pub notifications_received: u64,
    pub treat_as_withdraw: u64,
    /// Established and its initial table has arrived (End-of-RIB, or the settle rule for a
    /// peer without Graceful Restart; see the module documentation).
    pub rib_complete: bool,
}

struct Peer {
    cfg: PeerConfig,
    state: State,
    /// A session (in any state past Connect) owns this peer; a second connection is refused.
    busy: bool,
    last_error: Option<String>,
    established_at: Option<(SystemTime, Instant)>,
    routes: HashMap<Prefix, Route>,
    notifications_sent: u64,
    notifications_received: u64,
    treat_as_withdraw: u64,
    /// The initial table of the current session (reset when it goes down).
    rib: Rib,
}

/// How far the initial table of a peer's current session has come.
#[derive(Debug, Default)]
struct Rib {
    /// The peer advertised Graceful Restart: it sends End-of-RIB markers.
    gr: bool,
    /// Negotiated AFI/SAFIs whose End-of-RIB has not arrived yet.
    awaiting: Vec<(u16, u8)>,
    /// When the session became established or an UPDATE last changed its routes.
    last_change: Option<Instant>,
    complete: bool,
}

impl Peer {
    /// Whether the current session's initial table is complete; latches it (and logs) when the
    /// time rule (settle, or End-of-RIB fallback) is met now.
    fn rib_complete(&mut self, settle: Duration) -> bool {
        if self.state != State::Established {
            return false;
        }
        if !self.rib.complete {
            let Some(t) = self.rib.last_change else {
                return false;
            };
            let quiet = t.elapsed();
            if self.rib.gr && self.rib.awaiting.is_empty() {
                // No family negotiated: no End-of-RIB to wait for.
                self.rib.complete = true;
            } else if self.rib.gr && quiet >= EOR_FALLBACK {
                tracing::warn!(peer = %self.cfg.addr, awaiting = ?self.rib.awaiting, "bgp: no End-of-RIB from a graceful-restart peer; taking its initial table as complete");
                self.rib.complete = true;
            } else if !self.rib.gr && quiet >= settle {
                tracing::info!(peer = %self.cfg.addr, routes = self.routes.len(), "bgp: initial table complete (no graceful restart: quiet for the settle time)");
                self.rib.complete = true;
            }
        }
        self.rib.complete
    }
}

/// State shared between the BGP thread and readers (agent, metrics, tests).
pub struct Shared {
    peers: Mutex<Vec<Peer>>,
    /// Incremented on every change of the merged table.
    version: std::sync::atomic::AtomicU64,
    grace: Duration,
    rib_settle: Duration,
    /// When the last established session went down (None while one is up or before any was).
    down_since: Mutex<Option<Instant>>,
    started: Instant,
}

impl Shared {
    pub fn sessions(&self) -> Vec<PeerStatus> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers
            .iter_mut()
            .map(|p| PeerStatus {
                rib_complete: p.rib_complete(self.rib_settle),
                peer: SocketAddr::new(p.cfg.addr, p.cfg.port).to_string(),
                asn: p.cfg.asn,
                state: p.state,
                last_error: p.last_error.clone(),
                established_at: p.established_at.map(|e| e.0),
                routes: p.routes.len(),
                notifications_sent: p.notifications_sent,
                notifications_received: p.notifications_received,
                treat_as_withdraw: p.treat_as_withdraw,
            })
            .collect()
    }

    /// The merged table: per prefix, the best route any established peer gave (shorter AS
    /// path, then lower MED).
    pub fn table(&self) -> BTreeMap<Prefix, Route> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let mut t: BTreeMap<Prefix, Route> = BTreeMap::new();
        for p in peers.iter() {
            for (pfx, r) in &p.routes {
                match t.get(pfx) {
                    Some(o) if (o.as_path_len, o.med) <= (r.as_path_len, r.med) => {}
                    _ => {
                        t.insert(*pfx, r.clone());
                    }
                }
            }
        }
        t
    }

    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    /// False once no session has been established for longer than the grace period (or none
    /// ever was, past the grace period after start): the control plane must then stop
    /// steering BGP-fed prefixes here.
    pub fn steerable(&self) -> bool {
        let any_up = self
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|p| p.state == State::Established);
        if any_up {
            return true;
        }
        let since = self
            .down_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or(self.started);
        since.elapsed() <= self.grace
    }

    fn bump(&self) {
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    fn with_peer<R>(&self, i: usize, f: impl FnOnce(&mut Peer) -> R) -> R {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut peers[i])
    }
}

/// The running speaker.
pub struct Bgp {
    shared: Arc<Shared>,
    local_addr: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Bgp {
    /// Binds `listen` (if any) and starts the BGP thread.
    pub fn start(cfg: BgpConfig) -> Result<Bgp, BgpError> {
        cfg.validate()?;
        let std_listener = match cfg.listen {
            Some(addr) => {
                let l = std::net::TcpListener::bind(addr)
                    .map_err(|source| BgpError::Listen { addr, source })?;
                l.set_nonblocking(true)
                    .map_err(|source| BgpError::Listen { addr, source })?;
                Some(l)
            }
            None => None,
        };
        let local_addr = std_listener.as_ref().and_then(|l| l.local_addr().ok());
        let shared = Arc::new(Shared {
            peers: Mutex::new(
                cfg.peers
                    .iter()
                    .map(|p| Peer {
                        cfg: p.clone(),
                        state: State::Idle,
                        busy: false,
                        last_error: None,
                        established_at: None,
                        routes: HashMap::new(),
                        notifications_sent: 0,
                        notifications_received: 0,
                        treat_as_withdraw: 0,
                        rib: Rib::default(),
                    })
                    .collect(),
            ),
            version: Default::default(),
            grace: cfg.grace,
            rib_settle: cfg.rib_settle,
            down_since: Mutex::new(None),
            started: Instant::now(),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("bgp".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "bgp: no runtime");
                        return;
                    }
                };
                rt.block_on(async move {
                    let cfg = Arc::new(cfg);
                    if let Some(l) = std_listener {
                        match TcpListener::from_std(l) {
                            Ok(l) => {
                                tokio::spawn(accept_loop(l, cfg.clone(), sh.clone()));
                            }
                            Err(e) => tracing::error!(error = %e, "bgp: listener"),
                        }
                    }
                    for (i, p) in cfg.peers.iter().enumerate() {
                        if !p.passive {
                            tokio::spawn(connect_loop(i, cfg.clone(), sh.clone()));
                        }
                    }
                    let _ = stopped.await;
                });
            })
            .map_err(BgpError::Thread)?;
        Ok(Bgp {
            shared,
            local_addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl Drop for Bgp {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(l: TcpListener, cfg: Arc<BgpConfig>, sh: Arc<Shared>) {
    loop {
        let (mut s, from) = match l.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "bgp: accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let idx = cfg.peers.iter().position(|p| p.addr == from.ip());
        let Some(i) = idx else {
            tracing::warn!(%from, "bgp: connection from an unconfigured peer refused");
            let n = notification(code::CEASE, 5); // Connection Rejected
            let _ = s.write_all(&n).await;
            continue;
        };
        if !claim(&sh, i) {
            // Collision (RFC 4271 §6.8, simplified): the session already under way wins.
            let n = notification(code::CEASE, 7);
            let _ = s.write_all(&n).await;
            continue;
        }
        let (cfg, sh) = (cfg.clone(), sh.clone());
        tokio::spawn(async move { session(s, i, &cfg, &sh).await });
    }
}

async fn connect_loop(i: usize, cfg: Arc<BgpConfig>, sh: Arc<Shared>) {
    let p = cfg.peers[i].clone();
    let to = SocketAddr::new(p.addr, p.port);
    loop {
        if claim(&sh, i) {
            sh.with_peer(i, |p| p.state = State::Connect);
            let bind_ip = cfg.listen.map(|l| l.ip()).filter(|ip| !ip.is_unspecified());
            match connect(to, bind_ip).await {
                Ok(s) => session(s, i, &cfg, &sh).await,
                Err(e) => sh.with_peer(i, |p| {
                    p.busy = false;
                    p.state = State::Idle;
                    p.last_error = Some(format!("connect to {to}: {e}"));
                }),
            }
        }
        tokio::time::sleep(cfg.connect_retry).await;
    }
}

async fn connect(to: SocketAddr, bind_ip: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let sock = if to.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(ip) = bind_ip.filter(|ip| ip.is_ipv4() == to.is_ipv4()) {
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    tokio::time::timeout(Duration::from_secs(10), sock.connect(to))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

fn claim(sh: &Shared, i: usize) -> bool {
    sh.with_peer(i, |p| {
        if p.busy {
            false
        } else {
            p.busy = true;
            true
        }
    })
}

fn notification(c: u8, sub: u8) -> Vec<u8> {
    wire::encode(
        &Message::Notification(Notification {
            code: c,
            subcode: sub,
            data: vec![],
        }),
        Ctx::default(),
    )
}

/// Why a session ended.
enum End {
    /// We sent this NOTIFICATION.
    Sent(WireError),
    /// The peer sent one.
    Received(Notification),
    Io(String),
}

async fn session(mut s: TcpStream, i: usize, cfg: &BgpConfig, sh: &Shared) {
    let _ = s.set_nodelay(true);
    let peer = sh.with_peer(i, |p| p.cfg.clone());
    let end = run(&mut s, i, &peer, cfg, sh).await;
    let msg = match &end {
        End::Sent(e) => {
            let n = wire::encode(
                &Message::Notification(Notification {
                    code: e.code,
                    subcode: e.subcode,
                    data: e.data.clone(),
                }),
                Ctx::default(),
            );
            let _ = tokio::time::timeout(Duration::from_secs(2), s.write_all(&n)).await;
            format!("sent NOTIFICATION {}/{}: {}", e.code, e.subcode, e.reason)
        }
        End::Received(n) => format!("received NOTIFICATION {}/{}", n.code, n.subcode),
        End::Io(e) => e.clone(),
    };
    tracing::warn!(peer = %peer.addr, error = %msg, "bgp: session down");
    let _ = s.shutdown().await;
    let had_routes = sh.with_peer(i, |p| {
        let was_up = p.state == State::Established;
        match &end {
            End::Sent(_) => p.notifications_sent += 1,
            End::Received(_) => p.notifications_received += 1,
            End::Io(_) => {}
        }
        p.state = State::Idle;
        p.busy = false;
        p.last_error = Some(msg);
        p.established_at = None;
        p.rib = Rib::default();
        let had = !p.routes.is_empty();
        p.routes.clear();
        (had, was_up)
    });
    if had_routes.0 {
        sh.bump();
    }
    if had_routes.1 {
        let peers = sh.peers.lock().unwrap_or_else(|e| e.into_inner());
        if !peers.iter().any(|p| p.state == State::Established) {
            *sh.down_since.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
    }
}

/// Reads until a full message is buffered or the deadline passes.
async fn read_msg(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    ctx: Ctx,
    deadline: Option<tokio::time::Instant>,
) -> Result<Option<Message>, End> {
    loop {
        match wire::parse(buf, ctx) {
            Ok(Some((m, n))) => {
                buf.drain(..n);
                return Ok(Some(m));
            }
            Ok(None) => {}
            Err(e) => return Err(End::Sent(e)),
        }
        let mut chunk = [0u8; 8192];
        let r = match deadline {
            Some(d) => match tokio::time::timeout_at(d, s.read(&mut chunk)).await {
                Ok(r) => r,
                Err(_) => return Ok(None),
            },
            None => s.read(&mut chunk).await,
        };
        match r {
            Ok(0) => return Err(End::Io("peer closed the connection".into())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(End::Io(format!("read: {e}"))),
        }
    }
}

fn hold_expired() -> End {
    End::Sent(WireError {
        code: code::HOLD_TIMER_EXPIRED,
        subcode: 0,
        data: vec![],
        reason: "hold timer expired".into(),
    })
}

fn fsm_error(sub: u8, what: &str) -> End {
    End::Sent(WireError {
        code: code::FSM,
        subcode: sub,
        data: vec![],
        reason: format!("unexpected {what}"),
    })
}

async fn send(s: &mut TcpStream, m: &Message) -> Result<(), End> {
    let b = wire::encode(m, Ctx::default());
    match tokio::time::timeout(Duration::from_secs(10), s.write_all(&b)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(End::Io(format!("write: {e}"))),
        Err(_) => Err(End::Io("write timed out".into())),
    }
}

async fn run(s: &mut TcpStream, i: usize, peer: &PeerConfig, cfg: &BgpConfig, sh: &Shared) -> End {
    match run_inner(s, i, peer, cfg, sh).await {
        Ok(()) => End::Io("stopped".into()),
        Err(e) => e,
    }
}

async fn run_inner(
    s: &mut TcpStream,
    i: usize,
    peer: &PeerConfig,
    cfg: &BgpConfig,
    sh: &Shared,
) -> Result<(), End> {
    let open = Open {
        version: 4,
        my_as: u16::try_from(cfg.asn).unwrap_or(wire::AS_TRANS),
        hold_time: cfg.hold_time,
        router_id: cfg.router_id,
        capabilities: vec![
            Capability::Multiprotocol {
                afi: wire::AFI_IPV4,
                safi: wire::SAFI_UNICAST,
            },
            Capability::Multiprotocol {
                afi: wire::AFI_IPV6,
                safi: wire::SAFI_UNICAST,
            },
            Capability::RouteRefresh,
            Capability::FourOctetAs(cfg.asn),
            // Receive-only: preserves nothing, but understands End-of-RIB.
            Capability::graceful_restart_aware(),
        ],
    };
    send(s, &Message::Open(open)).await?;
    sh.with_peer(i, |p| p.state = State::OpenSent);
    let mut buf = Vec::new();
    // RFC 4271 §8.2.2: a large hold timer (4 minutes suggested) until the OPEN arrives; the
    // configured one when it is shorter.
    let first = Duration::from_secs(u64::from(cfg.hold_time).clamp(3, 240));
    let ctx = Ctx::default();
    let theirs = match read_msg(s, &mut buf, ctx, Some(tokio::time::Instant::now() + first)).await?
    {
        None => return Err(hold_expired()),
        Some(Message::Open(o)) => o,
        Some(Message::Notification(n)) => return Err(End::Received(n)),
        Some(_) => return Err(fsm_error(1, "message in OpenSent")),
    };
    if theirs.asn() != peer.asn
        || (theirs.four_octet()
            && theirs.my_as != wire::AS_TRANS
            && u32::from(theirs.my_as) != theirs.asn())
    {
        return Err(End::Sent(WireError {
            code: code::OPEN,
            subcode: 2,
            data: vec![],
            reason: format!("peer AS {} where {} was configured", theirs.asn(), peer.asn),
        }));
    }
    if theirs.router_id == cfg.router_id {
        return Err(End::Sent(WireError {
            code: code::OPEN,
            subcode: 3,
            data: vec![],
            reason: format!("peer BGP identifier {} equals ours", theirs.router_id),
        }));
    }
    let ctx = Ctx {
        four_octet: theirs.four_octet(),
    };
    let gr = theirs.graceful_restart();
    let families: Vec<(u16, u8)> = theirs
        .families()
        .into_iter()
        .filter(|f| FAMILIES.contains(f))
        .collect();
    let hold = theirs.hold_time.min(cfg.hold_time);
    let hold_d = (hold > 0).then(|| Duration::from_secs(u64::from(hold)));
    let keep_d = hold_d.map(|h| (h / 3).max(Duration::from_secs(1)));
    send(s, &Message::Keepalive).await?;
    sh.with_peer(i, |p| p.state = State::OpenConfirm);
    let mut hold_at = hold_d.map(|h| tokio::time::Instant::now() + h);
    let mut keep_at = keep_d.map(|k| tokio::time::Instant::now() + k);
    let mut established = false;
    loop {
        let wake = match (hold_at, keep_at) {
            (Some(h), Some(k)) => Some(h.min(k)),
            (h, k) => h.or(k),
        };
        let m = read_msg(s, &mut buf, ctx, wake).await?;
        let now = tokio::time::Instant::now();
        let Some(m) = m else {
            if hold_at.is_some_and(|h| now >= h) {
                return Err(hold_expired());
            }
            if let (Some(k), Some(kd)) = (keep_at, keep_d) {
                if now >= k {
                    send(s, &Message::Keepalive).await?;
                    keep_at = Some(now + kd);
                }
            }
            continue;
        };
        if let Some(h) = hold_d {
            hold_at = Some(now + h);
        }
        match m {
            Message::Keepalive if !established => {
                established = true;
                sh.with_peer(i, |p| {
                    p.state = State::Established;
                    p.established_at = Some((SystemTime::now(), Instant::now()));
                    p.last_error = None;
                    p.rib = Rib {
                        gr,
                        awaiting: families.clone(),
                        last_change: Some(Instant::now()),
                        complete: false,
                    };
                });
                *sh.down_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
                tracing::info!(peer = %peer.addr, asn = peer.asn, hold, graceful_restart = gr, "bgp: session established");
            }
            Message::Keepalive => {}
            Message::Notification(n) => return Err(End::Received(n)),
            Message::Open(_) => return Err(fsm_error(if established { 3 } else { 2 }, "OPEN")),
            Message::Update(_) | Message::RouteRefresh { .. } if !established => {
                return Err(fsm_error(2, "message in OpenConfirm"))
            }
            Message::RouteRefresh { afi, safi } => {
                // We announce nothing, so there is nothing to resend.
                tracing::debug!(afi, safi, "bgp: route refresh received (nothing to send)");
            }
            Message::Update(u) if u.end_of_rib.is_some() => {
                let fam = u.end_of_rib.unwrap_or_default();
                sh.with_peer(i, |p| {
                    p.rib.awaiting.retain(|f| *f != fam);
                    tracing::debug!(peer = %peer.addr, afi = fam.0, safi = fam.1, "bgp: End-of-RIB");
                    if p.rib.awaiting.is_empty() && !p.rib.complete {
                        p.rib.complete = true;
                        tracing::info!(peer = %peer.addr, routes = p.routes.len(), "bgp: initial table complete (End-of-RIB)");
                    }
                });
            }
            Message::Update(u) => {
                let taw = u.treat_as_withdraw.clone();
                if let Some(r) = &taw {
                    tracing::warn!(peer = %peer.addr, reason = %r, "bgp: UPDATE treated as withdraw (RFC 7606)");
                }
                let changed = sh.with_peer(i, |p| {
                    let mut changed = false;
                    if taw.is_some() {
                        p.treat_as_withdraw += 1;
                        p.last_error = taw.clone().map(|r| format!("treat-as-withdraw: {r}"));
                    }
                    for w in &u.withdrawn {
                        changed |= p.routes.remove(w).is_some();
                    }
                    let r = Route {
                        as_path_len: u.attrs.as_path_len.unwrap_or(0),
                        med: u.attrs.med.unwrap_or(0),
                        communities: u.attrs.communities.clone(),
                    };
                    for a in &u.announced {
                        changed |= p.routes.insert(*a, r.clone()).as_ref() != Some(&r);
                    }
                    if changed {
                        p.rib.last_change = Some(Instant::now());
                    }
                    changed
                });
                if changed {
                    sh.bump();
                }
            }
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("bgp::Shared")
            .field("version", &self.version())
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Appends the BGP metrics (Prometheus text format).
    pub fn render_metrics(&self, o: &mut String) {
        use std::fmt::Write as _;
        let sessions = self.sessions();
        let _ = writeln!(
            o,
            "# HELP outpost_appliance_bgp_sessions BGP sessions by FSM state."
        );
        let _ = writeln!(o, "# TYPE outpost_appliance_bgp_sessions gauge");
        for st in State::ALL {
            let n = sessions.iter().filter(|s| s.state == st).count();
            let _ = writeln!(
                o,
                "outpost_appliance_bgp_sessions{{state=\"{}\"}} {n}",
                st.as_str()
            );
        }
        let _ = writeln!(
            o,
            "# HELP outpost_appliance_bgp_routes Routes learnt, per peer."
        );
        let _ = writeln!(o, "# TYPE outpost_appliance_bgp_routes gauge");
        for s in &sessions {
            let _ = writeln!(
                o,
                "outpost_appliance_bgp_routes{{peer=\"{}\"}} {}",
                s.peer, s.routes
            );
        }
        let _ = writeln!(
            o,
            "# HELP outpost_appliance_bgp_notifications_sent_total NOTIFICATIONs sent."
        );
        let _ = writeln!(
            o,
            "# TYPE outpost_appliance_bgp_notifications_sent_total counter"
        );
        for s in &sessions {
            let _ = writeln!(
                o,
                "outpost_appliance_bgp_notifications_sent_total{{peer=\"{}\"}} {}",
                s.peer, s.notifications_sent
            );
        }
        let _ = writeln!(o, "# HELP outpost_appliance_bgp_treat_as_withdraw_total UPDATEs treated as withdraw (RFC 7606).");
        let _ = writeln!(
            o,
            "# TYPE outpost_appliance_bgp_treat_as_withdraw_total counter"
        );
        for s in &sessions {
            let _ = writeln!(
                o,
                "outpost_appliance_bgp_treat_as_withdraw_total{{peer=\"{}\"}} {}",
                s.peer, s.treat_as_withdraw
            );
        }
        let _ = writeln!(o, "# HELP outpost_appliance_bgp_rib_complete 1 when the peer's session is established and its initial table has arrived (End-of-RIB, or the settle time).");
        let _ = writeln!(o, "# TYPE outpost_appliance_bgp_rib_complete gauge");
        for s in &sessions {
            let _ = writeln!(
                o,
                "outpost_appliance_bgp_rib_complete{{peer=\"{}\"}} {}",
                s.peer,
                u8::from(s.rib_complete)
            );
        }
        let _ = writeln!(o, "# HELP outpost_appliance_bgp_steerable 0 once no session has been up for longer than the grace period.");
        let _ = writeln!(o, "# TYPE outpost_appliance_bgp_steerable gauge");
        let _ = writeln!(
            o,
            "outpost_appliance_bgp_steerable {}",
            u8::from(self.steerable())
        );
    }
}
