//! RADIUS and attribution benchmarks (`cargo xtask bench`): accounting
//! requests per second with durable acknowledgement against the real
//! daemon, the response time of accounting requests while XDP takes flow
//! exports and every flush writes ~100 000 rows (needs root), `whois`
//! lookups per second with a million sessions in the history, and
//! association of a million aggregates against it. Prints a Markdown table;
//! BENCHMARKS.md explains the method.

use std::{
    io::{BufRead as _, BufReader},
    net::{SocketAddr, UdpSocket},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use flowtally::{
    associate::Associator,
    radius::{AccountingRequest, StatusType},
    rng::Rng,
    sessions::{Event, History},
    usage::UsageRow,
};
use flowtally_common::agg::Direction;

const SECRET: &str = "bench-secret";
const REQUESTS: u32 = 20_000;
/// Requests in flight at once (one socket each, so identifiers never clash).
const WINDOW: usize = 64;
const SESSIONS: u32 = 1_000_000;
const LOOKUPS: u32 = 1_000_000;
const AGGREGATES: u32 = 1_000_000;

fn main() {
    println!("| measurement | figure |");
    println!("|---|---:|");
    accounting_rate();
    response_under_flow_load();
    let history = whois_rate();
    association_rate(&history);
}

/// Starts the release daemon (socket mode, its own database) and drives it
/// with `WINDOW` outstanding Accounting-Request Starts, each answered only
/// once durable.
fn accounting_rate() {
    let dir = std::env::temp_dir().join(format!("flowtally-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // One client sends everything: lift the per-client rate limit.
    let config = dir.join("flowtally.toml");
    std::fs::write(&config, "[radius]\nrate_limit = 10000000\n").unwrap();
    let mut daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_flowtally"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .args([
                "--mode",
                "socket",
                "--netflow",
                "127.0.0.1:0",
                "--metrics",
                "127.0.0.1:0",
            ])
            .args(["--radius", "127.0.0.1:0", "--radius-secret", SECRET])
            .arg("--db")
            .arg(dir.join("bench.db"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("flowtally starts"),
    );
    // Read up to `ready`, not just the address: a pipe closed early broke
    // the daemon's next line (which took it down before it answered).
    let mut server = None;
    for line in BufReader::new(daemon.0.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        if line == "ready" {
            break;
        }
        if let Some(addr) = line.strip_prefix("listen radius udp ") {
            server = addr.parse::<SocketAddr>().ok();
        }
    }
    let server = server.expect("radius address announced");

    let sockets: Vec<UdpSocket> = (0..WINDOW)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        })
        .collect();
    let request = |n: u32| {
        let mut r = AccountingRequest::new(StatusType::Start);
        r.user_name = Some(format!("user{n}"));
        r.session_id = Some(format!("bench-{n}"));
        r.framed_ip = Some(std::net::Ipv4Addr::from(0x6440_0000 + n));
        r.encode((n % 256) as u8, SECRET.as_bytes()).unwrap()
    };
    let started = Instant::now();
    let mut sent = 0u32;
    let mut answered = 0u32;
    let mut buf = [0; 64];
    while answered < REQUESTS {
        for socket in &sockets {
            if sent < REQUESTS {
                socket.send_to(&request(sent), server).unwrap();
                sent += 1;
            }
        }
        for socket in &sockets[..(sent - answered).min(WINDOW as u32) as usize] {
            socket.recv_from(&mut buf).expect("answered in time");
            answered += 1;
        }
    }
    let rate = f64::from(REQUESTS) / started.elapsed().as_secs_f64();
    println!(
        "| RADIUS Accounting-Request Start, durable (synchronous=FULL), {WINDOW} in flight | {rate:.0} req/s |"
    );
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Flow load of the response-time benchmark: NetFlow v5 exports per
/// second (`FLOWTALLY_LOAD_EXPORTS` overrides it: XDP mode's loss-free
/// rate is higher), of `RECORDS_PER_EXPORT` records each, on `LOAD_KEYS`
/// keys, so that each flush (every 5 s, the default) writes ~100 000 usage
/// rows.
const LOAD_EXPORTS_PER_SECOND: u32 = 10_000;
const RECORDS_PER_EXPORT: usize = 30;
const LOAD_KEYS: u64 = 100_000;
const LOAD_SECONDS: u64 = 30;
/// Accounting-Requests per second during the load, one in flight.
const PROBES_PER_SECOND: u32 = 50;
/// Subscribers of the flow load, each with a session started beforehand,
/// so that every row is attributed and written by the flush that made it.
const LOAD_SUBSCRIBERS: u32 = 1024;

/// The release daemon with XDP on the loopback of a network namespace of
/// its own (generic mode), a flush every 5 s: while NetFlow v5 exports
/// that make ~100 000 usage rows per flush arrive, one Accounting-Request
/// at a time (Starts and Interim-Updates of sessions owning the flows'
/// addresses); each response time is measured at the client, from send
/// to receipt.
fn response_under_flow_load() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("| RADIUS response time under flow load | skipped: needs root (XDP, netns) |");
        return;
    }
    let ns = Netns::new(&format!("ft-bench-{}", std::process::id()));
    let name = ns.0.clone();
    // The namespace is entered by a thread of its own: what it spawns
    // (the daemon, the sender) lives there too.
    std::thread::spawn(move || {
        Netns::enter(&name);
        measure_under_load();
    })
    .join()
    .expect("the load benchmark ran");
    drop(ns);
}

fn measure_under_load() {
    let dir = std::env::temp_dir().join(format!("flowtally-bench-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("flowtally.toml");
    std::fs::write(&config, "[radius]\nrate_limit = 10000000\n").unwrap();
    let mut daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_flowtally"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .args(["--mode", "xdp", "--iface", "lo"])
            .args(["--netflow", "127.0.0.1:0", "--sflow", "127.0.0.1:0"])
            .args([
                "--metrics",
                "127.0.0.1:0",
                "--subscriber-net",
                "100.64.0.0/10",
            ])
            .args(["--radius", "127.0.0.1:0", "--radius-secret", SECRET])
            .arg("--db")
            .arg(dir.join("bench.db"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("flowtally starts"),
    );
    let mut netflow = None;
    let mut radius = None;
    let mut metrics = None;
    for line in BufReader::new(daemon.0.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["ready"] => break,
            ["listen", "netflow", "udp", addr] => netflow = addr.parse::<SocketAddr>().ok(),
            ["listen", "radius", "udp", addr] => radius = addr.parse::<SocketAddr>().ok(),
            ["listen", "metrics", url] => {
                metrics = url
                    .trim_start_matches("http://")
                    .trim_end_matches("/metrics")
                    .parse::<SocketAddr>()
                    .ok()
            }
            _ => {}
        }
    }
    let (netflow, radius, metrics) = (
        netflow.expect("netflow address"),
        radius.expect("radius address"),
        metrics.expect("metrics address"),
    );
    let nas = UdpSocket::bind("127.0.0.1:0").unwrap();
    nas.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0; 64];
    let mut account = |status, n: u32, ip: u32| {
        let mut r = AccountingRequest::new(status);
        r.user_name = Some(format!("user{n}"));
        r.session_id = Some(format!("load-{n}"));
        r.framed_ip = Some(std::net::Ipv4Addr::from(ip));
        let request = r.encode((n % 256) as u8, SECRET.as_bytes()).unwrap();
        let sent = Instant::now();
        nas.send_to(&request, radius).unwrap();
        nas.recv_from(&mut buf).ok().map(|_| sent.elapsed())
    };
    for n in 0..LOAD_SUBSCRIBERS {
        account(StatusType::Start, n, 0x6440_0000 + n).expect("a session starts");
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || send_exports(netflow, &stop))
    };
    // The first flush of the load passes before measuring.
    std::thread::sleep(Duration::from_secs(6));
    let before = scrape(metrics);
    let mut times = Vec::new();
    let mut lost = 0;
    let started = Instant::now();
    let mut n = 0u32;
    while started.elapsed() < Duration::from_secs(LOAD_SECONDS) {
        let due = started + Duration::from_secs(1) * n / PROBES_PER_SECOND;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        // Interim-Updates of the load's sessions, and Starts of new ones
        // (on addresses without flows).
        let answered = if n.is_multiple_of(2) {
            account(
                StatusType::InterimUpdate,
                n / 2 % LOAD_SUBSCRIBERS,
                0x6440_0000 + n / 2 % LOAD_SUBSCRIBERS,
            )
        } else {
            let new = LOAD_SUBSCRIBERS + n;
            account(StatusType::Start, new, 0x6441_0000 + n)
        };
        match answered {
            Some(time) => times.push(time),
            None => lost += 1,
        }
        n += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let exports = sender.join().unwrap();
    let after = scrape(metrics);
    let delta = |name: &str| after.get(name).unwrap_or(&0.0) - before.get(name).unwrap_or(&0.0);
    let flushes = delta("flowtally_drain_duration_seconds_count");
    let rows = delta("flowtally_usage_rows_total");
    let records = delta("flowtally_records_total{path=\"xdp\"}");
    let flush_seconds = delta("flowtally_drain_duration_seconds_sum");
    // The daemon's own figure: from reading a request to sending its answer.
    let buckets: Vec<(f64, f64)> = after
        .iter()
        .filter_map(|(name, count)| {
            let le = name
                .strip_prefix("flowtally_radius_response_seconds_bucket{le=\"")?
                .strip_suffix("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count - before.get(name).unwrap_or(&0.0)))
        })
        .collect();
    let total = buckets.iter().map(|b| b.1).fold(0.0, f64::max);
    let server_p99 = buckets
        .iter()
        .filter(|(_, count)| *count >= 0.99 * total)
        .map(|(le, _)| *le)
        .fold(f64::INFINITY, f64::min);
    times.sort();
    let at = |q: f64| {
        times
            .get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "| RADIUS response time while XDP takes {:.0} exports/s ({:.0} records/s) and each flush (every 5 s) writes {:.0} usage rows (mean; a flush takes {:.0} ms), {} requests one at a time | p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {lost} unanswered within 10 s; in the daemon (`flowtally_radius_response_seconds`) p99 ≤ {:.1} ms |",
        exports,
        records / LOAD_SECONDS as f64,
        rows / flushes.max(1.0),
        1e3 * flush_seconds / flushes.max(1.0),
        times.len() + lost,
        at(0.5),
        at(0.99),
        times.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
        server_p99 * 1e3,
    );
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Paced NetFlow v5 exports until `stop`; returns how many per second.
fn send_exports(to: SocketAddr, stop: &std::sync::atomic::AtomicBool) -> f64 {
    use flowtally::netflow::v5::{Record, encode};
    use flowtally_common::v5::Header;
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rate = std::env::var("FLOWTALLY_LOAD_EXPORTS")
        .ok()
        .and_then(|rate| rate.parse().ok())
        .unwrap_or(LOAD_EXPORTS_PER_SECOND);
    let mut rng = Rng(0x0dd_ba11);
    let started = Instant::now();
    let mut sent = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let due = started + Duration::from_secs(1) * sent as u32 / rate;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let uptime = started.elapsed().as_millis() as u32 + 1_000_000;
        let records: Vec<Record> = (0..RECORDS_PER_EXPORT)
            .map(|_| {
                let key = rng.next_u64() % LOAD_KEYS;
                let subscriber = (key % u64::from(LOAD_SUBSCRIBERS)) as u32;
                Record {
                    // The load's subscribers, each talking to one peer
                    // from many ports.
                    src: (0x6440_0000 + subscriber).to_be_bytes(),
                    dst: (0xc633_0000 + subscriber).to_be_bytes(),
                    src_port: 1024 + (key / u64::from(LOAD_SUBSCRIBERS)) as u16,
                    dst_port: 443,
                    protocol: 6,
                    packets: 10,
                    octets: 10_000,
                    first: uptime - 500,
                    last: uptime - 100,
                    ..Record::default()
                }
            })
            .collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let header = Header {
            version: 5,
            sys_uptime: uptime,
            unix_secs: now.as_secs() as u32,
            unix_nsecs: now.subsec_nanos(),
            flow_sequence: (sent * RECORDS_PER_EXPORT as u64) as u32,
            ..Header::default()
        };
        let _ = socket.send_to(&encode(&header, &records), to);
        sent += 1;
    }
    sent as f64 / started.elapsed().as_secs_f64()
}

/// `/metrics` as `name{labels}` → value.
fn scrape(addr: SocketAddr) -> std::collections::BTreeMap<String, f64> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// A network namespace with its loopback up, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: &str) -> Self {
        let ip = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().expect("ip runs");
            assert!(status.success(), "ip {args:?}");
        };
        ip(&["netns", "add", name]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        Self(name.to_owned())
    }

    /// Moves the calling thread into namespace `name`.
    fn enter(name: &str) {
        use std::os::fd::AsRawFd as _;
        let file = std::fs::File::open(format!("/run/netns/{name}")).expect("netns file");
        // SAFETY: a valid namespace fd; affects only the calling thread.
        let done = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(done, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The daemon under test, stopped however the benchmark ends.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A million sessions, each on its own IPv4 address, then lookups at
/// pseudo-random addresses and times.
fn whois_rate() -> History {
    let mut history = History::new();
    let build = Instant::now();
    for n in 0..SESSIONS {
        let event = Event::start_v4(
            format!("198.18.0.{}", n % 200),
            format!("s{n}"),
            format!("user{n}"),
            std::net::Ipv4Addr::from(0x6440_0000 + n),
            1_700_000_000_000 + u64::from(n),
        );
        history.apply(&event);
    }
    let build = build.elapsed();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let started = Instant::now();
    let mut found = 0u32;
    for _ in 0..LOOKUPS {
        let x = rng.next_u64();
        let ip = std::net::Ipv4Addr::from(0x6440_0000 + (x % u64::from(SESSIONS)) as u32);
        let at = 1_700_000_000_000 + x % (2 * u64::from(SESSIONS));
        found += u32::from(std::hint::black_box(history.whois(ip.into(), at)).is_some());
    }
    let per_lookup = started.elapsed() / LOOKUPS;
    assert!(found > LOOKUPS / 4, "lookups find owners ({found})");
    println!(
        "| whois with {SESSIONS} sessions (built in {:.1} s) | {} ns/lookup ({:.1} M/s) |",
        build.as_secs_f64(),
        per_lookup.as_nanos(),
        1e3 / per_lookup.as_nanos().max(1) as f64
    );
    history
}

/// One flush of a million usage rows at pseudo-random subscriber addresses
/// through the associator, against the million-session history.
fn association_rate(history: &History) {
    let rss_before = resident_bytes();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let rows: Vec<UsageRow> = (0..AGGREGATES)
        .map(|_| {
            let x = rng.next_u64();
            let at = 1_700_000_000_000 + x % (2 * u64::from(SESSIONS));
            UsageRow::bare(
                at,
                std::net::Ipv4Addr::from(0x6440_0000 + (x >> 20) as u32 % SESSIONS).into(),
                Direction::Down,
                1500,
            )
        })
        .collect();
    let rss_rows = resident_bytes();
    let mut associator = Associator::new(5_000, 30_000);
    let started = Instant::now();
    let no_nat = flowtally::nat::Bindings::new(flowtally::nat::Limits {
        max_lifetime_ms: 1,
        memory_retention_ms: 1,
        max_bindings: 1,
    });
    let (ready, summary) = associator.associate(rows, history, &no_nat, 1_800_000_000_000, true);
    let elapsed = started.elapsed();
    assert_eq!(ready.len(), AGGREGATES as usize);
    assert!(summary.attributed_bytes > 0);
    println!(
        "| association, {AGGREGATES} aggregates against {SESSIONS} sessions | {:.2} M aggregates/s ({} ns each); rows {} MiB |",
        f64::from(AGGREGATES) / elapsed.as_secs_f64() / 1e6,
        (elapsed / AGGREGATES).as_nanos(),
        (rss_rows.saturating_sub(rss_before)) >> 20,
    );
}

/// This process's resident memory, from /proc.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
