//! One trial: the stream at one rate for a while against one collector,
//! then a wait until the collector has accounted all of it or stopped
//! accounting, and what it cost.

use std::{
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result};

use crate::{
    StreamArgs,
    churn::{Churn, ChurnReport},
    collectors::{self, Collector, Kind, RADIUS_PORT, Setup},
    lab::{COLLECTOR_IP, Lab, NAS_IP},
    procfs,
    sender::{self, Frame, Link, PacketSocket, Sent},
    stream::{Format, Spec, Stream},
};

/// Template exports are sent this fast before the data.
const PRIME_RATE: f64 = 5_000.0;
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

pub struct Bench {
    pub lab: Lab,
    dir: TempDir,
    flowtally: PathBuf,
    aggregate_entries: u32,
    socket_threads: usize,
    lanes: Vec<Vec<Frame>>,
    templates: Vec<Frame>,
    sockets: Vec<PacketSocket>,
    radius: UdpSocket,
    unix_secs: u32,
    /// What priming sent (template exports: no records).
    pub primed: Sent,
    /// More `[radius]` keys for flowtally.
    pub radius_toml: String,
    expected_templates: u32,
}

pub struct TrialResult {
    pub kind: Kind,
    pub offered: Option<f64>,
    pub sent: Sent,
    pub accounted: u64,
    pub collector_cpu: Duration,
    pub softirq: Duration,
    pub sender_cpu: Duration,
    pub veth_drops: u64,
    pub rcvbuf_errors: u64,
    pub churn: Option<ChurnReport>,
}

impl Bench {
    pub fn new(args: &StreamArgs, aggregate_entries: u32) -> Result<Self> {
        let flowtally = match &args.flowtally {
            Some(path) => path.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("no directory")?
                .join("flowtally"),
        };
        let lab = Lab::new()?;
        let unix_secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)?
            .as_secs() as u32
            - 1;
        let spec = Spec {
            exporters: args.exporters,
            subscribers: args.subscribers,
            formats: args.formats.clone(),
            templates: args.templates,
            exports_per_exporter: args.exports_per_exporter,
            unix_secs,
        };
        let sflow = args.formats.iter().filter(|f| **f == Format::Sflow).count();
        anyhow::ensure!(
            sflow == 0 || sflow == args.formats.len(),
            "a stream is sFlow or NetFlow, not both (the peer collectors take one)"
        );
        let stream = Stream::generate(&spec);
        let link = Link {
            src_mac: lab.tx_mac,
            dst_mac: lab.rx_mac,
            dst_ip: COLLECTOR_IP,
            dst_port: if sflow > 0 {
                collectors::SFLOW_PORT
            } else {
                collectors::NETFLOW_PORT
            },
        };
        let threads = args.threads.max(1);
        let mut lanes: Vec<Vec<Frame>> = (0..threads).map(|_| Vec::new()).collect();
        for round in 0..args.exports_per_exporter as usize {
            for (e, exports) in stream.data.iter().enumerate() {
                lanes[e % threads].push(Frame::new(&link, &exports[round]));
            }
        }
        let templates = stream
            .templates
            .iter()
            .map(|t| Frame::new(&link, t))
            .collect();
        let expected_templates = (0..args.exporters)
            .filter(|e| {
                matches!(
                    args.formats[*e as usize % args.formats.len()],
                    Format::V9 | Format::Ipfix
                )
            })
            .count() as u32
            * u32::from(args.templates);
        let (sockets, radius) = lab.tx.enter(|| -> Result<_> {
            let sockets = (0..threads)
                .map(|_| PacketSocket::open(lab.tx_ifindex))
                .collect::<Result<Vec<_>, _>>()?;
            let radius = UdpSocket::bind(SocketAddr::from((NAS_IP, 0)))?;
            Ok((sockets, radius))
        })??;
        Ok(Self {
            lab,
            dir: TempDir::new()?,
            flowtally,
            aggregate_entries,
            socket_threads: args.socket_threads,
            lanes,
            templates,
            sockets,
            radius,
            unix_secs,
            primed: Sent::default(),
            radius_toml: String::new(),
            expected_templates,
        })
    }

    pub fn frames(&self) -> usize {
        self.lanes.iter().map(Vec::len).sum()
    }

    /// Records per data export of the stream, on average.
    pub fn records_per_export(&self) -> f64 {
        let records: u64 = self
            .lanes
            .iter()
            .flatten()
            .map(|f| u64::from(f.records))
            .sum();
        records as f64 / self.frames().max(1) as f64
    }

    /// Starts a collector and teaches it the templates.
    pub fn start(&mut self, kind: Kind) -> Result<Collector> {
        let setup = Setup {
            flowtally: &self.flowtally,
            dir: &self.dir.0,
            aggregate_entries: self.aggregate_entries,
            socket_threads: self.socket_threads,
            radius_toml: &self.radius_toml,
        };
        let collector = Collector::start(kind, &self.lab, &setup)?;
        let primed = sender::once(&self.sockets[0], &self.templates, PRIME_RATE)?;
        self.primed.add(&primed);
        match kind {
            Kind::Nfacctd | Kind::Nfcapd | Kind::Sfacctd | Kind::Sfcapd => {
                // They report nothing about templates; they read their
                // socket in order, so data sent after this waits behind them.
                thread::sleep(Duration::from_millis(500));
            }
            Kind::Xdp | Kind::Socket => {
                let deadline = Instant::now() + Duration::from_secs(10);
                while compiled(&self.lab)? < f64::from(self.expected_templates) {
                    if Instant::now() > deadline {
                        eprintln!("warning: not every template was compiled for the kernel");
                        break;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            }
        }
        Ok(collector)
    }

    pub fn trial(
        &self,
        collector: &Collector,
        rate: Option<f64>,
        duration: Duration,
        churn: Option<&Churn>,
    ) -> Result<TrialResult> {
        let pids = collector.processes();
        let accounted0 = collector.accounted(&self.lab)?;
        let cpu0 = procfs::cpu(&pids);
        let softirq0 = procfs::softirq();
        let self0 = procfs::cpu(&[std::process::id() as i32]);
        let drops0 = self.lab.veth_drops()?;
        let rcvbuf0 = procfs::udp_rcvbuf_errors(collector.pid());
        let server = SocketAddr::from((COLLECTOR_IP, RADIUS_PORT));
        let (sent, churn) = thread::scope(|scope| -> Result<_> {
            let churn = churn.map(|c| {
                scope.spawn(move || c.run(&self.radius, server, self.unix_secs, duration))
            });
            let sent = sender::blast(&self.sockets, &self.lanes, rate, duration)?;
            let churn = match churn {
                Some(handle) => Some(handle.join().expect("churn thread panicked")?),
                None => None,
            };
            Ok((sent, churn))
        })?;
        let expected = expected_bytes(collector.kind, &sent);
        let accounted = settle(collector, &self.lab, accounted0 + expected)? - accounted0;
        Ok(TrialResult {
            kind: collector.kind,
            offered: rate,
            sent,
            accounted,
            collector_cpu: procfs::cpu(&pids) - cpu0,
            softirq: procfs::softirq() - softirq0,
            sender_cpu: procfs::cpu(&[std::process::id() as i32]) - self0,
            veth_drops: self.lab.veth_drops()? - drops0,
            rcvbuf_errors: procfs::udp_rcvbuf_errors(collector.pid()) - rcvbuf0,
            churn,
        })
    }
}

/// Waits until the collector has accounted `target` bytes, or has accounted
/// nothing new for its quiet time; returns what it accounted.
fn settle(collector: &Collector, lab: &Lab, target: u64) -> Result<u64> {
    let started = Instant::now();
    let mut last = collector.accounted(lab)?;
    let mut changed = Instant::now();
    while last < target && changed.elapsed() < collector.quiet() && started.elapsed() < SETTLE_LIMIT
    {
        thread::sleep(Duration::from_millis(50));
        let now = collector.accounted(lab)?;
        if now != last {
            last = now;
            changed = Instant::now();
        }
    }
    Ok(last)
}

fn compiled(lab: &Lab) -> Result<f64> {
    Ok(collectors::scrape(lab)?
        .get("flowtally_templates_compiled")
        .copied()
        .unwrap_or(0.0))
}

/// The bytes a collector of `kind` should account for what was sent: IP
/// bytes, or for sfacctd and sfcapd, sFlow's frame lengths.
fn expected_bytes(kind: Kind, sent: &Sent) -> u64 {
    if kind.counts_frames() {
        sent.frame_bytes
    } else {
        sent.bytes
    }
}

impl TrialResult {
    /// What the collector should have accounted (see [`expected_bytes`]).
    pub fn expected(&self) -> u64 {
        expected_bytes(self.kind, &self.sent)
    }

    pub fn lost_bytes(&self) -> u64 {
        self.expected().saturating_sub(self.accounted)
    }

    /// Loss-free, at the rate asked for (the sender kept up within 3 %).
    pub fn passed(&self) -> bool {
        self.lost_bytes() == 0
            && self.accounted == self.expected()
            && self.offered.is_none_or(|r| self.sent.rate() >= 0.97 * r)
    }

    pub fn describe(&self) -> String {
        let secs = self.sent.elapsed.as_secs_f64();
        let mut s = format!(
            "{}: offered {}, sent {} exports ({:.0}/s, {:.0} records/s), {} records, {} bytes; \
             accounted {} bytes, lost {} ({:.3} %); frames refused by a full veth ring (resent) {}, \
             socket buffer drops {}; \
             CPU: collector {:.2} s ({:.0} %), softirq {:.2} s, sender {:.2} s",
            self.kind,
            self.offered.map_or("max".into(), |r| format!("{r:.0}/s")),
            self.sent.frames,
            self.sent.rate(),
            self.sent.records as f64 / secs,
            self.sent.records,
            self.expected(),
            self.accounted,
            self.lost_bytes(),
            100.0 * self.lost_bytes() as f64 / self.expected().max(1) as f64,
            self.veth_drops,
            self.rcvbuf_errors,
            self.collector_cpu.as_secs_f64(),
            100.0 * self.collector_cpu.as_secs_f64() / secs,
            self.softirq.as_secs_f64(),
            self.sender_cpu.as_secs_f64(),
        );
        if let Some(c) = self.churn {
            s += &format!("; RADIUS {} sent, {} answered", c.sent, c.answered);
        }
        s
    }
}

pub struct UsageTotals {
    pub bytes: u64,
    pub flows: u64,
    pub attributed_bytes: u64,
    pub sessions: u64,
}

pub fn usage_totals(db: &Path) -> Result<UsageTotals> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let (bytes, flows, attributed_bytes) = conn.query_row(
        "SELECT COALESCE(SUM(bytes), 0), COALESCE(SUM(flows), 0), \
         COALESCE(SUM(CASE WHEN user_name IS NOT NULL THEN bytes ELSE 0 END), 0) FROM usage",
        [],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        },
    )?;
    let sessions: i64 = conn.query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get(0))?;
    Ok(UsageTotals {
        bytes: bytes as u64,
        flows: flows as u64,
        attributed_bytes: attributed_bytes as u64,
        sessions: sessions as u64,
    })
}

/// The collectors' working directory, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("flowtally-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
