//! The BGP speaker against a raw test peer over real loopback sockets: the happy path (OPEN with
//! capabilities, KEEPALIVE, IPv4 and multiprotocol IPv6 UPDATEs, withdrawals), and malformed
//! messages each answered with the RFC's NOTIFICATION (or RFC 7606 treat-as-withdraw), with the
//! data plane still answering HTTP after every one.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use appliance::bgp::report::Reporter;
use appliance::bgp::wire::{self, Capability, Ctx, Message, Open, PathAttrs, Prefix, Update};
use appliance::bgp::{Bgp, BgpConfig, PeerConfig, State};
use appliance::cache::Store;
use appliance::conn::Timeouts;
use appliance::metrics::Metrics;
use appliance::server::{self, BackendChoice, Running, ServerConfig};
use appliance::service::{Service, ServiceConfig};
use protocol::grant::{KeyRing, Verifier};

const OUR_AS: u32 = 64512;
const PEER_AS: u32 = 4_200_000_001; // a 4-octet AS

struct Fixture {
    _dir: tempfile::TempDir,
    running: Running,
    bgp: Bgp,
}

fn fixture(hold_time: u16) -> Fixture {
    fixture_with(hold_time, Duration::from_secs(3600))
}

fn fixture_with(hold_time: u16, grace: Duration) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let store = Arc::new(Store::open(&[cache], Some(1 << 30)).unwrap());
    let svc = Arc::new(Service::new(
        ServiceConfig {
            id: "oca-bgp".into(),
            access_log_every: 0,
        },
        Verifier::new(KeyRing::new(), "c1"),
        store,
        Arc::new(Metrics::default()),
    ));
    let cfg = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: None,
        threads: 1,
        backend: BackendChoice::Epoll,
        max_connections: 100,
        timeouts: Timeouts {
            header: Duration::from_secs(10),
            idle: Duration::from_secs(30),
        },
        drain_timeout: Duration::from_secs(1),
        handle_signals: false,
        tls: None,
    };
    let running = server::start(cfg, svc, None).unwrap();
    let bgp = Bgp::start(BgpConfig {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        asn: OUR_AS,
        router_id: "10.255.0.1".parse().unwrap(),
        peers: vec![PeerConfig {
            addr: "127.0.0.1".parse().unwrap(),
            port: 179,
            asn: PEER_AS,
            passive: true,
        }],
        hold_time,
        grace,
        connect_retry: Duration::from_secs(1),
        rib_settle: Duration::from_millis(300),
    })
    .unwrap();
    Fixture {
        _dir: dir,
        running,
        bgp,
    }
}

impl Fixture {
    fn addr(&self) -> SocketAddr {
        self.bgp.local_addr().unwrap()
    }

    /// The data plane answers an HTTP request (a 4xx for a path without a grant).
    fn assert_serving(&self) {
        let mut s = TcpStream::connect(self.running.local_addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /g/x/t/v/seg.m4s HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 4"), "{text}");
    }

    /// Polls (bounded) until the peer's session is in `state`.
    fn wait_state(&self, state: State) {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.bgp.shared().sessions();
            if s[0].state == state {
                return;
            }
            assert!(
                Instant::now() < end,
                "session never reached {state:?}: {s:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_routes(&self, n: usize) {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let t = self.bgp.shared().table();
            if t.len() == n {
                return;
            }
            assert!(Instant::now() < end, "table never had {n} routes: {t:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn reporter_full(f: &Fixture) -> protocol::fleet::BgpReport {
    Reporter::default().build(f.bgp.shared())
}

struct TestPeer {
    s: TcpStream,
    buf: Vec<u8>,
}

fn four() -> Ctx {
    Ctx { four_octet: true }
}

impl TestPeer {
    fn connect(to: SocketAddr) -> TestPeer {
        let s = TcpStream::connect(to).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        TestPeer { s, buf: Vec::new() }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    fn send_msg(&mut self, m: &Message) {
        self.send(&wire::encode(m, four()));
    }

    /// The next message, or None when the speaker closed the connection.
    fn recv(&mut self) -> Option<Message> {
        loop {
            if let Some((m, n)) = wire::parse(&self.buf, four()).unwrap() {
                self.buf.drain(..n);
                return Some(m);
            }
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn open(hold: u16) -> Message {
        Message::Open(Open {
            version: 4,
            my_as: wire::AS_TRANS,
            hold_time: hold,
            router_id: "10.255.0.2".parse().unwrap(),
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
                Capability::FourOctetAs(PEER_AS),
            ],
        })
    }

    /// OPEN exchange and KEEPALIVEs up to Established; checks the speaker's OPEN.
    fn establish(f: &Fixture, hold: u16) -> TestPeer {
        TestPeer::establish_with(f, TestPeer::open(hold))
    }

    /// [`TestPeer::establish`] sending this OPEN.
    fn establish_with(f: &Fixture, open: Message) -> TestPeer {
        let mut p = TestPeer::connect(f.addr());
        let Some(Message::Open(o)) = p.recv() else {
            panic!("no OPEN")
        };
        assert_eq!(o.asn(), OUR_AS);
        assert_eq!(o.my_as, OUR_AS as u16);
        assert!(o.capabilities.contains(&Capability::FourOctetAs(OUR_AS)));
        assert!(o.capabilities.contains(&Capability::RouteRefresh));
        assert!(o.capabilities.contains(&Capability::Multiprotocol {
            afi: wire::AFI_IPV6,
            safi: wire::SAFI_UNICAST
        }));
        // GR-aware only: flags 0, restart time 0, no AFI/SAFI (it understands End-of-RIB).
        assert!(o
            .capabilities
            .contains(&Capability::graceful_restart_aware()));
        p.send_msg(&open);
        assert_eq!(p.recv(), Some(Message::Keepalive));
        p.send_msg(&Message::Keepalive);
        f.wait_state(State::Established);
        p
    }

    /// Expects a NOTIFICATION with this code/subcode, then the close.
    fn expect_notification(&mut self, code: u8, subcode: u8) {
        loop {
            match self.recv() {
                Some(Message::Keepalive) => continue,
                Some(Message::Notification(n)) => {
                    assert_eq!((n.code, n.subcode), (code, subcode), "{n:?}");
                    break;
                }
                other => panic!("expected NOTIFICATION {code}/{subcode}, got {other:?}"),
            }
        }
        assert_eq!(
            self.recv(),
            None,
            "connection not closed after NOTIFICATION"
        );
    }
}

fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}

fn announce(prefixes: &[&str], path: Vec<u32>, med: Option<u32>) -> Message {
    Message::Update(Update {
        announced: prefixes.iter().map(|s| p(s)).collect(),
        attrs: PathAttrs {
            origin: Some(0),
            as_path: path,
            med,
            communities: vec![(64500 << 16) | 7],
            ..Default::default()
        },
        ..Default::default()
    })
}

#[test]
fn happy_path_v4_and_v6_routes_then_withdraw_and_route_refresh() {
    let f = fixture(90);
    let mut peer = TestPeer::establish(&f, 90);
    peer.send_msg(&announce(
        &["198.51.100.0/24", "203.0.113.0/25", "2001:db8:100::/48"],
        vec![PEER_AS, 64501],
        Some(20),
    ));
    f.wait_routes(3);
    // The first heartbeat report is the full table with its digest.
    let mut reporter = Reporter::default();
    let r = reporter.build(f.bgp.shared());
    assert!(r.full);
    assert_eq!(r.announced.len(), 3);
    assert_eq!(r.digest, protocol::fleet::bgp_digest(&r.announced));
    assert_eq!(r.sessions[0].state, "established");
    assert!(r.steerable);
    assert!(r.announced[0].communities.contains(&"64500:7".to_owned()));
    reporter.accepted(false);
    let t = f.bgp.shared().table();
    let r = &t[&p("2001:db8:100::/48")];
    assert_eq!((r.as_path_len, r.med), (2, 20));
    assert_eq!(r.communities, vec![(64500 << 16) | 7]);
    assert_eq!(f.bgp.shared().sessions()[0].routes, 3);
    // A route refresh request is accepted (nothing to resend: the speaker announces nothing).
    peer.send_msg(&Message::RouteRefresh {
        afi: wire::AFI_IPV6,
        safi: 1,
    });
    // Withdraw one v4 and the v6 prefix.
    peer.send_msg(&Message::Update(Update {
        withdrawn: vec![p("203.0.113.0/25"), p("2001:db8:100::/48")],
        ..Default::default()
    }));
    f.wait_routes(1);
    assert!(f.bgp.shared().table().contains_key(&p("198.51.100.0/24")));
    // The next report carries only the two withdrawals; its digest is that of the whole table.
    let r = reporter.build(f.bgp.shared());
    assert!(!r.full);
    assert!(r.announced.is_empty(), "{r:?}");
    let mut w = r.withdrawn.clone();
    w.sort();
    assert_eq!(w, vec!["2001:db8:100::/48", "203.0.113.0/25"]);
    let whole = reporter_full(&f);
    assert_eq!(r.digest, protocol::fleet::bgp_digest(&whole.announced));
    // When the control plane asks for the full table, the next report is whole again.
    reporter.accepted(true);
    assert!(reporter.build(f.bgp.shared()).full);
    // /metrics shows the session and its routes.
    let mut m = String::new();
    f.bgp.shared().render_metrics(&mut m);
    assert!(
        m.contains("outpost_appliance_bgp_sessions{state=\"established\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("outpost_appliance_bgp_routes{peer=\"127.0.0.1:179\"} 1"),
        "{m}"
    );
    f.assert_serving();
    // The peer's Cease drops the session and its routes.
    peer.send_msg(&Message::Notification(wire::Notification {
        code: 6,
        subcode: 2,
        data: vec![],
    }));
    f.wait_state(State::Idle);
    f.wait_routes(0);
    let s = &f.bgp.shared().sessions()[0];
    assert_eq!(s.notifications_received, 1);
    assert!(s.last_error.as_deref().unwrap().contains("6/2"), "{s:?}");
}

#[test]
fn malformed_messages_get_the_right_notification_and_serving_goes_on() {
    let f = fixture(90);
    let keepalive = wire::encode(&Message::Keepalive, four());

    // Bad marker before any OPEN: Message Header Error / Connection Not Synchronized.
    let mut peer = TestPeer::connect(f.addr());
    let _ = peer.recv(); // its OPEN
    let mut bad = keepalive.clone();
    bad[0] = 0;
    peer.send(&bad);
    peer.expect_notification(1, 1);
    f.wait_state(State::Idle);
    f.assert_serving();

    // Bad length (a KEEPALIVE claiming 20 bytes): Bad Message Length.
    let mut peer = TestPeer::establish(&f, 90);
    let mut bad = keepalive.clone();
    bad[17] = 20;
    bad.push(0);
    peer.send(&bad);
    peer.expect_notification(1, 2);
    f.wait_state(State::Idle);
    f.assert_serving();

    // Bad version in OPEN: Unsupported Version Number.
    let mut peer = TestPeer::connect(f.addr());
    let _ = peer.recv();
    let mut open = wire::encode(&TestPeer::open(90), four());
    open[19] = 3;
    peer.send(&open);
    peer.expect_notification(2, 1);
    f.wait_state(State::Idle);

    // Wrong peer AS: Bad Peer AS.
    let mut peer = TestPeer::connect(f.addr());
    let _ = peer.recv();
    let Message::Open(mut o) = TestPeer::open(90) else {
        unreachable!()
    };
    o.capabilities
        .retain(|c| !matches!(c, Capability::FourOctetAs(_)));
    o.capabilities.push(Capability::FourOctetAs(65000));
    peer.send_msg(&Message::Open(o));
    peer.expect_notification(2, 2);
    f.wait_state(State::Idle);
    f.assert_serving();

    // Unknown well-known (non-optional) attribute: Unrecognized Well-known Attribute.
    let mut peer = TestPeer::establish(&f, 90);
    let mut body = vec![0, 0]; // no withdrawn routes
    let attrs = [0x40u8, 1, 1, 0, 0x40, 99, 1, 7]; // ORIGIN, then type 99 flagged well-known
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(&attrs);
    body.extend_from_slice(&[24, 198, 51, 100]);
    peer.send(&raw(2, &body));
    peer.expect_notification(3, 2);
    f.wait_state(State::Idle);
    f.assert_serving();

    // Truncated NLRI (a /24 with only two address bytes): Invalid Network Field.
    let mut peer = TestPeer::establish(&f, 90);
    let mut good = wire::encode(&announce(&["198.51.100.0/24"], vec![PEER_AS], None), four());
    good.truncate(good.len() - 1);
    let len = good.len() as u16;
    good[16..18].copy_from_slice(&len.to_be_bytes());
    peer.send(&good);
    peer.expect_notification(3, 10);
    f.wait_state(State::Idle);
    f.assert_serving();

    // Unexpected OPEN in Established: FSM error.
    let mut peer = TestPeer::establish(&f, 90);
    peer.send_msg(&TestPeer::open(90));
    peer.expect_notification(5, 3);
    f.wait_state(State::Idle);
    assert_eq!(f.bgp.shared().sessions()[0].notifications_sent, 7);
    f.assert_serving();
}

/// A message of type `ty` with this body.
fn raw(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(ty);
    m.extend_from_slice(body);
    m
}

#[test]
fn malformed_as_path_is_treated_as_withdraw_and_the_session_stays_up() {
    let f = fixture(90);
    let mut peer = TestPeer::establish(&f, 90);
    peer.send_msg(&announce(
        &["198.51.100.0/24", "192.0.2.0/24"],
        vec![PEER_AS],
        None,
    ));
    f.wait_routes(2);
    // Re-announce 198.51.100.0/24 with an AS_SEQUENCE claiming 3 ASes but carrying one.
    let mut body = vec![0, 0];
    let mut attrs = vec![0x40u8, 1, 1, 0];
    attrs.extend_from_slice(&[0x40, 2, 6, 2, 3]);
    attrs.extend_from_slice(&PEER_AS.to_be_bytes());
    attrs.extend_from_slice(&[0x40, 3, 4, 127, 0, 0, 1]);
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(&attrs);
    body.extend_from_slice(&[24, 198, 51, 100]);
    peer.send(&raw(2, &body));
    f.wait_routes(1);
    assert!(f.bgp.shared().table().contains_key(&p("192.0.2.0/24")));
    let s = &f.bgp.shared().sessions()[0];
    assert_eq!(s.state, State::Established);
    assert_eq!(s.treat_as_withdraw, 1);
    assert!(
        s.last_error.as_deref().unwrap().contains("AS_PATH"),
        "{s:?}"
    );
    // Still established: a KEEPALIVE round is fine and a new route is learnt.
    peer.send_msg(&announce(&["2001:db8:7::/48"], vec![PEER_AS], None));
    f.wait_routes(2);
    f.assert_serving();
}

#[test]
fn hold_timer_expiry_sends_notification_4_and_drops_routes() {
    let f = fixture(3);
    let mut peer = TestPeer::establish(&f, 3);
    peer.send_msg(&announce(&["198.51.100.0/24"], vec![PEER_AS], None));
    f.wait_routes(1);
    // Go silent: the speaker's KEEPALIVEs arrive, then Hold Timer Expired.
    peer.expect_notification(4, 0);
    f.wait_state(State::Idle);
    f.wait_routes(0);
    f.assert_serving();
}

#[test]
fn connection_from_an_unconfigured_address_is_rejected() {
    let f = fixture(90);
    // 127.0.0.1 is configured; connect from 127.0.0.2 instead.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.2:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.connect(&f.addr().into()).unwrap();
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut peer = TestPeer { s, buf: Vec::new() };
    peer.expect_notification(6, 5);
    assert_eq!(f.bgp.shared().sessions()[0].state, State::Idle);
}

#[test]
fn without_a_session_for_longer_than_the_grace_period_the_appliance_is_unsteerable() {
    // A grace of zero: unsteerable before any session, steerable while one is established,
    // unsteerable again as soon as it drops.
    let f = fixture_with(90, Duration::ZERO);
    assert!(!f.bgp.shared().steerable());
    let mut peer = TestPeer::establish(&f, 90);
    assert!(f.bgp.shared().steerable());
    assert!(Reporter::default().build(f.bgp.shared()).steerable);
    peer.send_msg(&Message::Notification(wire::Notification {
        code: 6,
        subcode: 2,
        data: vec![],
    }));
    f.wait_state(State::Idle);
    assert!(!f.bgp.shared().steerable());
    let r = Reporter::default().build(f.bgp.shared());
    assert!(!r.steerable);
    assert_eq!(r.sessions[0].state, "idle");
    assert!(r.sessions[0].last_error.as_deref().unwrap().contains("6/2"));
    let mut m = String::new();
    f.bgp.shared().render_metrics(&mut m);
    assert!(m.contains("outpost_appliance_bgp_steerable 0"), "{m}");
}

fn end_of_rib(afi: u16) -> Message {
    Message::Update(Update {
        end_of_rib: Some((afi, wire::SAFI_UNICAST)),
        ..Default::default()
    })
}

fn rib_complete(f: &Fixture) -> bool {
    f.bgp.shared().sessions()[0].rib_complete
}

#[test]
fn initial_table_completes_with_end_of_rib_per_family_or_after_settling() {
    let f = fixture(90);
    // A peer that advertises graceful restart sends End-of-RIB: complete once it came for both
    // negotiated families (IPv4 and IPv6 unicast), however long that takes.
    let Message::Open(mut open) = TestPeer::open(90) else {
        unreachable!()
    };
    open.capabilities.push(Capability::GracefulRestart {
        flags: 0,
        time: 120,
        families: vec![],
    });
    let mut peer = TestPeer::establish_with(&f, Message::Open(open));
    assert!(!rib_complete(&f));
    peer.send_msg(&announce(
        &["198.51.100.0/24", "2001:db8:100::/48"],
        vec![PEER_AS],
        None,
    ));
    peer.send_msg(&end_of_rib(wire::AFI_IPV4));
    peer.send_msg(&announce(&["2001:db8:200::/48"], vec![PEER_AS], None));
    f.wait_routes(3);
    // Longer than the settle time: still waiting for the IPv6 End-of-RIB.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!rib_complete(&f));
    assert!(!Reporter::default().build(f.bgp.shared()).sessions[0].rib_complete);
    peer.send_msg(&end_of_rib(wire::AFI_IPV6));
    let end = Instant::now() + Duration::from_secs(20);
    while !rib_complete(&f) {
        assert!(Instant::now() < end, "End-of-RIB never completed the table");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The markers are neither routes nor errors.
    assert_eq!(f.bgp.shared().table().len(), 3);
    let r = Reporter::default().build(f.bgp.shared());
    assert!(r.sessions[0].rib_complete);
    assert!(r.sessions[0].last_error.is_none(), "{r:?}");
    let mut m = String::new();
    f.bgp.shared().render_metrics(&mut m);
    assert!(
        m.contains("outpost_appliance_bgp_rib_complete{peer=\"127.0.0.1:179\"} 1"),
        "{m}"
    );
    // Session down: reset.
    peer.send_msg(&Message::Notification(wire::Notification {
        code: 6,
        subcode: 2,
        data: vec![],
    }));
    f.wait_state(State::Idle);
    assert!(!rib_complete(&f));

    // A peer without graceful restart sends no End-of-RIB: complete once the settle time
    // (300 ms in the fixture) passed without a change.
    let mut peer = TestPeer::establish(&f, 90);
    peer.send_msg(&announce(&["198.51.100.0/24"], vec![PEER_AS], None));
    f.wait_routes(1);
    let end = Instant::now() + Duration::from_secs(20);
    while !rib_complete(&f) {
        assert!(Instant::now() < end, "the table never settled");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Latched: a later change does not make it incomplete again.
    peer.send_msg(&announce(&["203.0.113.0/24"], vec![PEER_AS], None));
    f.wait_routes(2);
    assert!(rib_complete(&f));
}
