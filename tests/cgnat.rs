//! Attribution through a real NAT: a namespace masquerades (nftables) an
//! inside namespace's two hosts behind one public address; the bindings it
//! really makes, read from `conntrack -E` (accounting and timestamps on),
//! are exported by the test as IPFIX NAT44 session events; softflowd on the
//! NAT's outside interface exports the traffic, which carries only the
//! public address; radclient gives the inside addresses to alice and bob.
//! flowtally bills each exactly the bytes conntrack counted for their host.
//!
//! ```text
//!  inside ns                  nat ns (the NAS and the CGNAT)                  server ns
//!  alice 198.18.64.10 ─ in0 ══ in1 198.18.64.1   masquerade   pub0 198.19.0.1 ══ pub1 198.19.0.2
//!  bob   198.18.64.11          conntrack -E → NAT events     softflowd -i pub0
//!                              radclient                     exp0 198.18.0.1 ══ exp1 198.18.0.2
//!                                                                          collector ns: flowtally
//! ```
//!
//! The traffic, in two phases: alice and bob send UDP from the same source
//! port to the same server port at once (the NAT must give bob another
//! public port), alice has a TCP conversation from port 40001; every
//! conntrack entry is then deleted (DESTROY: the NAT session deletes). Then
//! bob talks TCP from port 40001 too, to another server port: the NAT hands
//! him public port 40001, alice's before — the binding's time decides.

#[path = "support/pcap.rs"]
mod pcap;
#[path = "support/softflowd_lab.rs"]
mod softflowd_lab;
mod support;

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use flowtally::netflow::{
    encode::{self, Set, Template},
    nat::{event, ie},
    sets::{FieldSpec, Header, IPFIX},
};
use softflowd_lab::{COLLECTOR, Softflowd, Version};
use support::{
    Flowtally, NetNs, PATIENCE, TempDir, eventually, path_str, radclient_in, require_root, scrape,
    sh, usage_by_user, veth_named,
};

const SECRET: &str = "testing123";
const RADIUS: &str = "198.18.0.2:1813";
const NAS: &str = "198.18.0.1";
const PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
const ALICE: Ipv4Addr = Ipv4Addr::new(198, 18, 64, 10);
const BOB: Ipv4Addr = Ipv4Addr::new(198, 18, 64, 11);
/// Payload of the NAT box's own datagram.
const WARM_UP: usize = 100;
/// The inside hosts' network.
const INSIDE: &str = "198.18.64.";
/// A conntrack entry that only tells the reader is listening.
const PROBE: &str = "198.18.99.1";

struct Lab {
    inside: NetNs,
    nat: NetNs,
    server: NetNs,
    collector: NetNs,
    dir: TempDir,
}

impl Lab {
    fn new() -> Self {
        let lab = Self {
            inside: NetNs::new(),
            nat: NetNs::new(),
            server: NetNs::new(),
            collector: NetNs::new(),
            dir: TempDir::new(),
        };
        // No IPv6: the kernel's own packets would be flows for softflowd.
        for ns in [&lab.inside, &lab.nat, &lab.server] {
            lab.exec(ns, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
            lab.exec(
                ns,
                &["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"],
            );
        }
        veth_named(
            &lab.inside,
            "in0",
            "198.18.64.10/24",
            &lab.nat,
            "in1",
            "198.18.64.1/24",
        );
        lab.inside
            .ip(&["addr", "add", "198.18.64.11/24", "dev", "in0"]);
        lab.inside
            .ip(&["route", "add", "default", "via", "198.18.64.1"]);
        veth_named(
            &lab.nat,
            "pub0",
            "198.19.0.1/24",
            &lab.server,
            "pub1",
            "198.19.0.2/24",
        );
        veth_named(
            &lab.nat,
            "exp0",
            "198.18.0.1/30",
            &lab.collector,
            "exp1",
            "198.18.0.2/30",
        );
        lab.exec(&lab.nat, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        lab.exec(
            &lab.nat,
            &[
                "nft",
                "add table ip nat; add chain ip nat post { type nat hook postrouting priority \
                 srcnat; }; add rule ip nat post oifname \"pub0\" masquerade",
            ],
        );
        // Per namespace, once conntrack is there (the NAT rule loads it).
        lab.exec(
            &lab.nat,
            &["sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1"],
        );
        lab.exec(
            &lab.nat,
            &["sysctl", "-qw", "net.netfilter.nf_conntrack_timestamp=1"],
        );
        lab
    }

    fn exec(&self, ns: &NetNs, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", &ns.name];
        all.extend_from_slice(args);
        sh("ip", &all)
    }
}

/// One conntrack event of a NATed connection.
#[derive(Clone, Debug)]
struct Ct {
    destroy: bool,
    time_ms: u64,
    protocol: u8,
    inside: Ipv4Addr,
    inside_port: u16,
    public: Ipv4Addr,
    public_port: u16,
    /// DESTROY: packets and bytes, both directions.
    packets: u64,
    bytes: u64,
}

/// Reads `conntrack -E -o timestamp` lines such as
/// `[1796532785.744249] [NEW] udp 17 30 src=198.18.64.10 dst=198.19.0.2
/// sport=40000 dport=5002 [UNREPLIED] src=198.19.0.2 dst=198.19.0.1
/// sport=5002 dport=40000 id=42`, DESTROY ones with `packets= bytes=`
/// per direction.
fn parse(line: &str) -> Option<(Ct, String)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let stamp = words.first()?.trim_start_matches('[').trim_end_matches(']');
    let (secs, micros) = stamp.split_once('.')?;
    let time_ms = secs.parse::<u64>().ok()? * 1000 + micros.parse::<u64>().ok()? / 1000;
    let destroy = match *words.get(1)? {
        "[NEW]" => false,
        "[DESTROY]" => true,
        _ => return None,
    };
    let protocol = words.get(3)?.parse().ok()?;
    let values = |key: &str| -> Vec<&str> {
        words
            .iter()
            .filter_map(|w| w.strip_prefix(key).and_then(|w| w.strip_prefix('=')))
            .collect()
    };
    let (src, dst, sport, dport) = (
        values("src"),
        values("dst"),
        values("sport"),
        values("dport"),
    );
    let sum = |key| values(key).iter().map(|v| v.parse::<u64>().unwrap()).sum();
    let ct = Ct {
        destroy,
        time_ms,
        protocol,
        inside: src.first()?.parse().ok()?,
        inside_port: sport.first()?.parse().ok()?,
        public: dst.get(1)?.parse().ok()?,
        public_port: dport.get(1)?.parse().ok()?,
        packets: sum("packets"),
        bytes: sum("bytes"),
    };
    Some((ct, src.first()?.to_string()))
}

/// An IPFIX NAT44 session event for `ct`.
fn nat_event(ct: &Ct) -> Vec<u8> {
    let fields: [(u16, Vec<u8>); 7] = [
        (
            ie::OBSERVATION_TIME_MILLISECONDS,
            ct.time_ms.to_be_bytes().to_vec(),
        ),
        (
            ie::NAT_EVENT,
            vec![if ct.destroy {
                event::NAT44_SESSION_DELETE
            } else {
                event::NAT44_SESSION_CREATE
            }],
        ),
        (ie::PROTOCOL, vec![ct.protocol]),
        (ie::SOURCE_IPV4_ADDRESS, ct.inside.octets().to_vec()),
        (
            ie::SOURCE_TRANSPORT_PORT,
            ct.inside_port.to_be_bytes().to_vec(),
        ),
        (
            ie::POST_NAT_SOURCE_IPV4_ADDRESS,
            ct.public.octets().to_vec(),
        ),
        (
            ie::POST_NAPT_SOURCE_TRANSPORT_PORT,
            ct.public_port.to_be_bytes().to_vec(),
        ),
    ];
    let template = Template {
        id: 300,
        fields: fields
            .iter()
            .map(|(ie, v)| FieldSpec::iana(*ie, v.len() as u16))
            .collect(),
    };
    let header = Header {
        version: IPFIX,
        unix_secs: (ct.time_ms / 1000) as u32,
        sequence: 0,
        domain: 1,
        ..Header::default()
    };
    let record = fields.into_iter().flat_map(|(_, v)| v).collect();
    encode::export(
        &header,
        &[
            Set::Templates(vec![template]),
            Set::Data {
                id: 300,
                records: vec![record],
            },
        ],
        false,
    )
}

/// `conntrack -E` in the NAT namespace; every event of an inside host is
/// exported to flowtally as a NAT event, and kept.
struct Conntrack {
    child: Child,
    events: Arc<Mutex<Vec<Ct>>>,
    probed: Arc<AtomicBool>,
}

impl Conntrack {
    fn start(nat: &NetNs) -> Self {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &nat.name,
                "conntrack",
                "-E",
                "-e",
                "NEW,DESTROY",
            ])
            .args(["-o", "timestamp"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("conntrack runs (Debian package conntrack)");
        let out = BufReader::new(child.stdout.take().unwrap());
        let events = Arc::new(Mutex::new(Vec::new()));
        let probed = Arc::new(AtomicBool::new(false));
        let (kept, seen) = (Arc::clone(&events), Arc::clone(&probed));
        nat.spawn(move || {
            let socket = UdpSocket::bind("198.18.0.1:0").unwrap();
            for line in out.lines().map_while(Result::ok) {
                let Some((ct, src)) = parse(&line) else {
                    continue;
                };
                if src == PROBE {
                    seen.store(true, Ordering::SeqCst);
                }
                // Only the inside hosts' connections are NATed (this
                // socket's, radclient's are the NAT box's own).
                if !src.starts_with(INSIDE) {
                    continue;
                }
                socket.send_to(&nat_event(&ct), COLLECTOR).unwrap();
                kept.lock().unwrap().push(ct);
            }
        });
        let this = Self {
            child,
            events,
            probed,
        };
        // An entry of no traffic, inserted until the reader reports it: then
        // it listens.
        let probe = |action: &str| {
            Command::new("ip")
                .args(["netns", "exec", &nat.name, "conntrack", action, "-p", "udp"])
                .args([
                    "-s",
                    PROBE,
                    "-d",
                    "198.18.99.2",
                    "--sport",
                    "1",
                    "--dport",
                    "2",
                ])
                .args(["-t", "30", "-u", "SEEN_REPLY"])
                .output()
                .unwrap()
        };
        eventually("conntrack -E to listen", || {
            probe("-D");
            probe("-I");
            this.probed.load(Ordering::SeqCst)
        });
        probe("-D");
        this
    }

    fn events(&self) -> Vec<Ct> {
        self.events.lock().unwrap().clone()
    }
}

impl Drop for Conntrack {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Servers on the server's address: TCP on 5001 and 5003 answers a quarter
/// of what it read, once the client is done; UDP on 5002 answers half of
/// each datagram.
fn serve(server: &NetNs, stop: &Arc<AtomicBool>) {
    for port in [5001, 5003] {
        let stop = Arc::clone(stop);
        server.spawn(move || {
            let listener = TcpListener::bind((SERVER, port)).unwrap();
            listener.set_nonblocking(true).unwrap();
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let mut got = Vec::new();
                        stream.read_to_end(&mut got).unwrap();
                        stream.write_all(&vec![7; got.len() / 4]).unwrap();
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
    }
    let stop = Arc::clone(stop);
    server.spawn(move || {
        let socket = UdpSocket::bind((SERVER, 5002)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut buf = [0; 2048];
        while !stop.load(Ordering::SeqCst) {
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                socket.send_to(&buf[..n / 2], from).unwrap();
            }
        }
    });
}

fn udp(from: Ipv4Addr, datagrams: usize, size: usize) -> UdpSocket {
    let socket = UdpSocket::bind((from, 40_000)).unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    for _ in 0..datagrams {
        socket.send_to(&vec![1; size], (SERVER, 5002)).unwrap();
        let mut buf = [0; 2048];
        assert_eq!(socket.recv(&mut buf).unwrap(), size / 2);
    }
    socket
}

fn tcp(from: Ipv4Addr, port: u16, bytes: usize) {
    let socket = socket2_bind(from, 40_001);
    let mut stream = connect(socket, SocketAddr::from((SERVER, port)));
    stream.write_all(&vec![3; bytes]).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    assert_eq!(answer.len(), bytes / 4);
}

/// A TCP socket bound to a chosen source address and port (std has no
/// bind-before-connect): the raw calls.
fn socket2_bind(addr: Ipv4Addr, port: u16) -> i32 {
    // SAFETY: plain socket calls on a socket we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&raw const one).cast(),
            4,
        );
        let sa = sockaddr(addr, port);
        let rc = libc::bind(
            fd,
            (&raw const sa).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        fd
    }
}

fn connect(fd: i32, to: SocketAddr) -> TcpStream {
    let SocketAddr::V4(to) = to else {
        unreachable!()
    };
    let sa = sockaddr(*to.ip(), to.port());
    // SAFETY: connect on the socket we own; the stream takes it over.
    unsafe {
        let rc = libc::connect(
            fd,
            (&raw const sa).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        use std::os::fd::FromRawFd as _;
        TcpStream::from_raw_fd(fd)
    }
}

fn sockaddr(addr: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Deletes every NATed conntrack entry once its TCP conversation is over
/// (TIME_WAIT): their DESTROY events are the session deletes.
fn end_sessions(lab: &Lab) {
    eventually("the TCP conversations to close", || {
        let listed = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.nat.name,
                "conntrack",
                "-L",
                "-p",
                "tcp",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&listed.stdout)
            .lines()
            .all(|line| line.contains("TIME_WAIT"))
    });
    let _ = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.nat.name,
            "conntrack",
            "-D",
            "-s",
            "198.18.64.0/24",
        ])
        .output()
        .unwrap();
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn radclient_start(lab: &Lab, user: &str, ip: Ipv4Addr) {
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60;
    let attributes = format!(
        "Acct-Status-Type = Start, User-Name = {user}, Acct-Session-Id = {user}-1, \
         Framed-IP-Address = {ip}, NAS-IP-Address = {NAS}, Event-Timestamp = {at}"
    );
    radclient_in(&lab.nat, RADIUS, SECRET, &attributes);
}

/// The rows waiting and the bindings, to see why a row waits.
fn dump(db: &std::path::Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut out = String::new();
    for query in [
        "SELECT subscriber_ip, subscriber_port, protocol, first_ms, last_ms, bytes FROM usage_pending",
        "SELECT public_ip, port_start, protocol, inside_ip, from_ms, to_ms FROM nat_bindings",
    ] {
        let mut stmt = conn.prepare(query).unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |row| {
                Ok((0..n)
                    .map(|i| format!("{:?}", row.get::<_, rusqlite::types::Value>(i).unwrap()))
                    .collect::<Vec<_>>()
                    .join(" "))
            })
            .unwrap();
        for row in rows {
            out.push_str(&row.unwrap());
            out.push('\n');
        }
    }
    out
}

fn metric(metrics: &BTreeMap<String, f64>, name: &str) -> u64 {
    metrics.get(name).copied().unwrap_or(0.0) as u64
}

fn billed_through_a_real_nat(mode: &str) {
    require_root();
    let lab = Lab::new();
    let db = lab.dir.path("ft.db");
    let config = lab.dir.path("flowtally.toml");
    std::fs::write(&config, format!("[cgnat]\npools = [\"{PUBLIC}/32\"]\n")).unwrap();
    let mut args = vec!["--config", path_str(&config), "--mode", mode];
    if mode == "xdp" {
        args.extend(["--iface", "exp1"]);
    }
    args.extend(["--netflow", COLLECTOR, "--metrics", "127.0.0.1:0"]);
    args.extend([
        "--radius",
        RADIUS,
        "--radius-secret",
        SECRET,
        "--db",
        path_str(&db),
    ]);
    args.extend(["--flush-interval", "250ms", "--late-window", "1s"]);
    let mut flowtally = Flowtally::start(Some(&lab.collector), &args);
    let addr = flowtally.metrics_addr();
    let metrics = || lab.collector.enter(|| scrape(addr));
    radclient_start(&lab, "alice", ALICE);
    radclient_start(&lab, "bob", BOB);

    let stop = Arc::new(AtomicBool::new(false));
    serve(&lab.server, &stop);
    let conntrack = Conntrack::start(&lab.nat);
    let mut softflowd = Softflowd::start(&lab.nat, "pub0", Version::Ipfix, &lab.dir);

    // Phase 0: the NAT box's own datagram from the public address, not
    // NATed: exported with softflowd's templates, which the socket path
    // learns (and compiles for the kernel); no binding will ever own it.
    lab.nat.enter(|| {
        let socket = UdpSocket::bind((PUBLIC, 5555)).unwrap();
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        socket.send_to(&[0; WARM_UP], (SERVER, 5002)).unwrap();
        assert_eq!(socket.recv(&mut [0; 2048]).unwrap(), WARM_UP / 2);
    });
    softflowd.drain_through(&lab.server, "pub1", 2);
    softflowd.expire_all();
    // IP lengths: the datagram and its answer, 28 bytes of headers each.
    let warm_up = (WARM_UP + 28 + WARM_UP / 2 + 28) as u64;

    // Phase 1: both hosts from UDP port 40000 at once; alice's TCP.
    lab.inside.enter(|| {
        let alice = udp(ALICE, 20, 200);
        let bob = udp(BOB, 10, 300);
        tcp(ALICE, 5001, 100_000);
        drop((alice, bob));
    });
    end_sessions(&lab);
    // Phase 2: bob's TCP from the port alice's had, more than a second after
    // her binding ended: record times can come out up to a second early
    // (README, CGNAT), and a port handed over within that second is its
    // former holder's.
    let mut alice_ended = None;
    eventually("alice's TCP binding to end", || {
        alice_ended = conntrack
            .events()
            .iter()
            .find(|ct| ct.destroy && ct.inside == ALICE && ct.protocol == 6)
            .map(|ct| ct.time_ms);
        alice_ended.is_some()
    });
    let handover = alice_ended.unwrap_or_default() + 1_100;
    while now_ms() < handover {
        thread::sleep(Duration::from_millis(20));
    }
    lab.inside.enter(|| tcp(BOB, 5003, 50_000));
    end_sessions(&lab);
    eventually("every NAT session to end", || {
        conntrack.events().iter().filter(|ct| ct.destroy).count() == 4
    });
    let events = conntrack.events();
    assert_eq!(events.len(), 8, "{events:?}");
    let public_port = |who: Ipv4Addr, protocol: u8| -> Vec<u16> {
        events
            .iter()
            .filter(|ct| !ct.destroy && ct.inside == who && ct.protocol == protocol)
            .map(|ct| ct.public_port)
            .collect()
    };
    assert_eq!(public_port(ALICE, 17), [40_000]);
    assert_ne!(
        public_port(BOB, 17),
        [40_000],
        "the NAT moved bob's UDP port"
    );
    assert_eq!(public_port(ALICE, 6), [40_001]);
    assert_eq!(
        public_port(BOB, 6),
        [40_001],
        "bob got alice's former public port"
    );
    assert!(events.iter().all(|ct| ct.public == PUBLIC));
    let destroyed = || events.iter().filter(|ct| ct.destroy);
    let bytes_of = |who: Ipv4Addr| -> u64 {
        destroyed()
            .filter(|ct| ct.inside == who)
            .map(|ct| ct.bytes)
            .sum()
    };
    let (alice, bob) = (bytes_of(ALICE), bytes_of(BOB));
    let packets: u64 = destroyed().map(|ct| ct.packets).sum();
    eprintln!("conntrack: alice {alice} bytes, bob {bob} bytes, {packets} packets");

    // softflowd exports what crossed the outside interface, without
    // templates: in XDP mode the kernel aggregates it.
    softflowd.drain_through(&lab.server, "pub1", 2 + packets);
    softflowd.shutdown();
    let counted = |m: &BTreeMap<String, f64>| {
        metric(m, r#"flowtally_record_bytes_total{path="xdp"}"#)
            + metric(m, r#"flowtally_record_bytes_total{path="socket"}"#)
    };
    eventually("flowtally to count every exported byte", || {
        counted(&metrics()) >= warm_up + alice + bob
    });
    let deadline = std::time::Instant::now() + PATIENCE;
    while metric(&metrics(), "flowtally_attributed_bytes_total") != alice + bob
        || metric(&metrics(), "flowtally_unattributed_bytes_total") != warm_up
    {
        let m = metrics();
        assert!(
            std::time::Instant::now() < deadline,
            "not every byte attributed: {:?}\n{}\n{}",
            m.iter()
                .filter(|(k, _)| k.contains("attributed")
                    || k.contains("nat_")
                    || k.contains("backlog"))
                .collect::<Vec<_>>(),
            flowtally.stderr(),
            dump(&db)
        );
        thread::sleep(Duration::from_millis(20));
    }
    let m = metrics();
    assert_eq!(
        counted(&m),
        warm_up + alice + bob,
        "softflowd's bytes are conntrack's"
    );
    if mode == "xdp" {
        assert_eq!(
            metric(&m, r#"flowtally_record_bytes_total{path="xdp"}"#),
            alice + bob,
            "the kernel aggregated the traffic; NAT events went up to the socket path"
        );
    }
    assert_eq!(
        metric(&m, "flowtally_nat_attributed_bytes_total"),
        alice + bob
    );
    assert_eq!(
        metric(
            &m,
            r#"flowtally_nat_unattributed_bytes_total{reason="no_binding"}"#
        ),
        warm_up,
        "the pool's own traffic: no binding"
    );
    assert_eq!(metric(&m, "flowtally_nat_lookups_without_binding_total"), 2);
    assert_eq!(
        metric(&m, r#"flowtally_nat_events_applied_total{result="opened"}"#),
        4
    );
    assert_eq!(
        metric(&m, r#"flowtally_nat_events_applied_total{result="closed"}"#),
        4
    );
    assert_eq!(
        metric(
            &m,
            r#"flowtally_nat_events_total{type="nat44_session_create"}"#
        ),
        4
    );
    stop.store(true, Ordering::SeqCst);
    flowtally.signal(libc::SIGTERM);
    assert!(flowtally.wait().success(), "{}", flowtally.stderr());

    let usage = usage_by_user(&db);
    assert_eq!(
        usage,
        BTreeMap::from([
            (None, warm_up),
            (Some("alice".to_owned()), alice),
            (Some("bob".to_owned()), bob)
        ]),
        "each user billed exactly their inside host's bytes"
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let reasons: Vec<(Option<String>, i64)> = conn
        .prepare("SELECT unattributed, sum(bytes) FROM usage GROUP BY 1 ORDER BY 1")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        reasons,
        [
            (None, (alice + bob) as i64),
            (Some("nat_no_binding".to_owned()), warm_up as i64)
        ],
        "the pool's own traffic is written with its reason"
    );
    let subscribers: Vec<String> = conn
        .prepare("SELECT DISTINCT subscriber_ip FROM usage")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        subscribers,
        [PUBLIC.to_string()],
        "seen only with the public address"
    );
    let bindings: i64 = conn
        .query_row(
            "SELECT count(*) FROM nat_bindings WHERE deleted",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(bindings, 4);
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn xdp_users_are_billed_through_a_real_nat() {
    billed_through_a_real_nat("xdp");
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn socket_users_are_billed_through_a_real_nat() {
    billed_through_a_real_nat("socket");
}
