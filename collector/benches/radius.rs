//! RADIUS and attribution benchmarks (`cargo xtask bench`): accounting
//! requests per second with durable acknowledgement against the real
//! daemon, `whois` lookups per second with a million sessions in the
//! history, and association of a million aggregates against it. Prints a
//! Markdown table; BENCHMARKS.md explains the method.

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
    let server: SocketAddr = BufReader::new(daemon.0.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            line.strip_prefix("listen radius udp ")
                .map(|a| a.parse().unwrap())
        })
        .expect("radius address announced");

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
