//! The collectors under test, each run in the lab's `rx` namespace, and
//! what each says it accounted: flowtally (XDP or socket mode) through its
//! `/metrics`, pmacct's nfacctd and sfacctd through their in-memory table,
//! nfdump's nfcapd and sfcapd through their flow files.

use std::{
    collections::BTreeMap,
    fmt, fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{lab::Lab, procfs, stream::SUBSCRIBER_NET};

pub const NETFLOW_PORT: u16 = 2055;
pub const SFLOW_PORT: u16 = flowtally_common::sflow::PORT;
pub const RADIUS_PORT: u16 = 1813;
pub const RADIUS_SECRET: &str = "load-secret";
const METRICS: &str = "127.0.0.1:9725";
const STARTUP: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// flowtally, XDP native on the veth
    Xdp,
    /// flowtally, UDP sockets only
    Socket,
    /// pmacct's nfacctd, memory plugin
    Nfacctd,
    /// nfdump's nfcapd, writing flow files
    Nfcapd,
    /// pmacct's sfacctd (sFlow), memory plugin
    Sfacctd,
    /// nfdump's sfcapd (sFlow), writing flow files
    Sfcapd,
}

impl Kind {
    /// The UDP port a pmacct or nfdump daemon listens on (flowtally
    /// listens on both).
    fn port(self) -> u16 {
        match self {
            Kind::Sfacctd | Kind::Sfcapd => SFLOW_PORT,
            _ => NETFLOW_PORT,
        }
    }

    /// Whether it counts an sFlow sample's frame length (Ethernet header
    /// and FCS included) rather than the IP packet's length, as sfacctd and
    /// sfcapd do.
    pub fn counts_frames(self) -> bool {
        matches!(self, Kind::Sfacctd | Kind::Sfcapd)
    }

    /// pmacct's daemons (table queried with `pmacct -s`).
    fn pmacct(self) -> bool {
        matches!(self, Kind::Nfacctd | Kind::Sfacctd)
    }

    /// nfdump's daemons (flow files read with `nfdump`).
    fn nfdump(self) -> bool {
        matches!(self, Kind::Nfcapd | Kind::Sfcapd)
    }

    fn daemon(self) -> &'static str {
        match self {
            Kind::Xdp | Kind::Socket => "flowtally",
            Kind::Nfacctd => "nfacctd",
            Kind::Nfcapd => "nfcapd",
            Kind::Sfacctd => "sfacctd",
            Kind::Sfcapd => "sfcapd",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Xdp => "flowtally XDP",
            Kind::Socket => "flowtally socket",
            Kind::Nfacctd => "nfacctd",
            Kind::Nfcapd => "nfcapd",
            Kind::Sfacctd => "sfacctd",
            Kind::Sfcapd => "sfcapd",
        })
    }
}

/// Settings shared by every collector of a run.
pub struct Setup<'a> {
    pub flowtally: &'a Path,
    pub dir: &'a Path,
    pub aggregate_entries: u32,
    pub socket_threads: usize,
    /// More `[radius]` keys for flowtally.
    pub radius_toml: &'a str,
}

pub struct Collector {
    pub kind: Kind,
    child: Child,
    dir: PathBuf,
}

impl Collector {
    pub fn start(kind: Kind, lab: &Lab, setup: &Setup) -> Result<Self> {
        let dir = setup.dir.join(format!("{kind:?}").to_lowercase());
        fs::create_dir_all(&dir)?;
        let mut this = match kind {
            Kind::Xdp | Kind::Socket => Self::flowtally(kind, lab, setup, dir)?,
            Kind::Nfacctd | Kind::Sfacctd => Self::pmacct(kind, lab, dir)?,
            Kind::Nfcapd | Kind::Sfcapd => Self::nfdump(kind, lab, dir)?,
        };
        if kind.pmacct() || kind.nfdump() {
            this.await_socket()?;
        }
        Ok(this)
    }

    fn flowtally(kind: Kind, lab: &Lab, setup: &Setup, dir: PathBuf) -> Result<Self> {
        let config = dir.join("flowtally.toml");
        fs::write(
            &config,
            format!(
                "socket_receive_threads = {}\n[radius]\nrate_limit = 10000000\n{}\n[maps]\n\
                 aggregate_entries = {}\n",
                setup.socket_threads, setup.radius_toml, setup.aggregate_entries
            ),
        )?;
        let mut command = lab
            .rx
            .command(setup.flowtally.to_str().context("UTF-8 path")?);
        command.arg("run").arg("--config").arg(&config);
        match kind {
            Kind::Xdp => command.args(["--mode", "xdp", "--iface", crate::lab::RX_IF]),
            _ => command.args(["--mode", "socket"]),
        };
        let netflow = format!("{}:{NETFLOW_PORT}", crate::lab::COLLECTOR_IP);
        let sflow = format!("{}:{SFLOW_PORT}", crate::lab::COLLECTOR_IP);
        let radius = format!("{}:{RADIUS_PORT}", crate::lab::COLLECTOR_IP);
        command
            .args([
                "--netflow",
                &netflow,
                "--sflow",
                &sflow,
                "--radius",
                &radius,
            ])
            .args(["--radius-secret", RADIUS_SECRET, "--metrics", METRICS])
            .args(["--subscriber-net", SUBSCRIBER_NET, "--flush-interval", "1s"])
            .arg("--db")
            .arg(dir.join("flowtally.db"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(dir.join("stderr.log"))?);
        let mut child = command.spawn().context("starting flowtally")?;
        let out = BufReader::new(child.stdout.take().context("stdout")?);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let this = Self { kind, child, dir };
        loop {
            match rx.recv_timeout(STARTUP) {
                Ok(line) if line == "ready" => return Ok(this),
                Ok(_) => {}
                Err(_) => bail!(
                    "flowtally did not become ready: {}",
                    fs::read_to_string(this.dir.join("stderr.log")).unwrap_or_default()
                ),
            }
        }
    }

    /// nfacctd or sfacctd.
    fn pmacct(kind: Kind, lab: &Lab, dir: PathBuf) -> Result<Self> {
        let daemon = kind.daemon();
        let config = dir.join(format!("{daemon}.conf"));
        // The memory plugin keeps the table flowtally's "detail" profile
        // keeps (addresses, ports, protocol, exporter), in up to 256 MiB
        // (`imt_mem_pools_number: 0`, "unbounded", lost about a fifth of
        // 30 000 keys here); the core-to-plugin pipe is made generous so it
        // is not the limit. `plugin_buffer_size` stays at its default (no
        // batching): a partly filled batch waits for more traffic, which
        // would read as loss at the end of every trial. sfacctd scales
        // samples by their sampling rate only when told to (flowtally and
        // sfcapd do by default).
        let renormalize = if kind == Kind::Sfacctd {
            "sfacctd_renormalize: true\n"
        } else {
            ""
        };
        fs::write(
            &config,
            format!(
                "daemonize: false\n\
                 {daemon}_ip: {}\n\
                 {daemon}_port: {}\n\
                 {renormalize}\
                 plugins: memory\n\
                 aggregate: src_host, dst_host, src_port, dst_port, proto, peer_src_ip\n\
                 imt_path: {}\n\
                 imt_mem_pools_number: 256\n\
                 imt_mem_pools_size: 1048576\n\
                 imt_buckets: 65537\n\
                 plugin_pipe_size: 67108864\n\
                 logfile: {}\n",
                crate::lab::COLLECTOR_IP,
                kind.port(),
                dir.join("pmacct.pipe").display(),
                dir.join("pmacct.log").display(),
            ),
        )?;
        let child = lab
            .rx
            .command(daemon)
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("stderr.log"))?)
            .spawn()
            .with_context(|| format!("starting {daemon} (Debian package pmacct)"))?;
        Ok(Self { kind, child, dir })
    }

    /// nfcapd or sfcapd.
    fn nfdump(kind: Kind, lab: &Lab, dir: PathBuf) -> Result<Self> {
        let flows = dir.join("flows");
        fs::create_dir_all(&flows)?;
        // A new file every 2 s (the shortest period): only closed files
        // can be read, so that is how soon what it received shows.
        let child = lab
            .rx
            .command(kind.daemon())
            .arg("-w")
            .arg(&flows)
            .args(["-p", &kind.port().to_string(), "-t", "2"])
            .args(["-b", &crate::lab::COLLECTOR_IP.to_string()])
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("stdout.log"))?)
            .stderr(fs::File::create(dir.join("stderr.log"))?)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (Debian package nfdump, nfdump-sflow)",
                    kind.daemon()
                )
            })?;
        Ok(Self { kind, child, dir })
    }

    /// How long accounting may pause before the collector is taken to be
    /// done: nfcapd and sfcapd show data only when they close a file,
    /// every 2 s.
    pub fn quiet(&self) -> Duration {
        if self.kind.nfdump() {
            Duration::from_millis(4500)
        } else {
            Duration::from_millis(1500)
        }
    }

    /// pmacct's and nfdump's daemons say nothing when they are up: poll
    /// their socket (and pmacct's table).
    fn await_socket(&mut self) -> Result<()> {
        let deadline = Instant::now() + STARTUP;
        let port = format!(":{:04X} ", self.kind.port());
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}): {}",
                    self.kind,
                    fs::read_to_string(self.dir.join("pmacct.log")).unwrap_or_default()
                );
            }
            let udp = fs::read_to_string(format!("/proc/{}/net/udp", self.pid()))?;
            if udp.contains(&port) && self.accounted_offline().is_ok() {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "{} did not come up", self.kind);
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Bytes of flow records accounted so far.
    pub fn accounted(&self, lab: &Lab) -> Result<u64> {
        match self.kind {
            Kind::Xdp | Kind::Socket => {
                let m = scrape(lab)?;
                let sum = |name: &str| -> f64 {
                    m.iter()
                        .filter(|(k, _)| k.split('{').next() == Some(name))
                        .map(|(_, v)| v)
                        .sum()
                };
                // Parsed minus what could not be kept: what the tables hold.
                let kept = sum("flowtally_record_bytes_total")
                    - sum("flowtally_dropped_bytes_total")
                    - sum("flowtally_out_of_scope_bytes_total");
                Ok(kept as u64)
            }
            _ => self.accounted_offline(),
        }
    }

    /// What pmacct's or nfdump's daemons accounted, read with their own
    /// tools.
    fn accounted_offline(&self) -> Result<u64> {
        if self.kind.nfdump() {
            self.nfcapd_bytes()
        } else {
            self.nfacctd_bytes()
        }
    }

    /// `Bytes:` of `nfdump -I` over the closed files (none yet: 0).
    fn nfcapd_bytes(&self) -> Result<u64> {
        let flows = self.dir.join("flows");
        let closed = fs::read_dir(&flows)?
            .flatten()
            .any(|e| !e.file_name().to_string_lossy().contains("current"));
        if !closed {
            return Ok(0);
        }
        let out = Command::new("nfdump")
            .arg("-R")
            .arg(&flows)
            .arg("-I")
            .output()
            .context("running nfdump")?;
        ensure!(out.status.success(), "nfdump -I failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("Bytes: "))
            .context("no Bytes: in nfdump -I")?
            .trim()
            .parse()
            .context("Bytes: is not a number")
    }

    /// The sum of the BYTES column of nfacctd's table.
    fn nfacctd_bytes(&self) -> Result<u64> {
        let out = Command::new("pmacct")
            .args(["-s", "-O", "csv", "-p"])
            .arg(self.dir.join("pmacct.pipe"))
            .output()
            .context("running pmacct")?;
        ensure!(out.status.success(), "pmacct -s failed");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let header = lines.next().context("empty pmacct output")?;
        let column = header
            .split(',')
            .position(|c| c == "BYTES")
            .context("no BYTES column")?;
        let mut total = 0;
        for line in lines {
            if let Some(v) = line
                .split(',')
                .nth(column)
                .and_then(|v| v.parse::<u64>().ok())
            {
                total += v;
            }
        }
        Ok(total)
    }

    pub fn processes(&self) -> Vec<i32> {
        procfs::tree(self.pid())
    }

    /// Stops the collector the way an operator would (SIGTERM) and waits:
    /// flowtally flushes everything it holds before it exits.
    pub fn stop(mut self) -> Result<std::process::ExitStatus> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            ensure!(Instant::now() < deadline, "{} did not stop", self.kind);
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.join("flowtally.db")
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// flowtally's `/metrics` as `name{labels}` → value, read from inside `rx`.
pub fn scrape(lab: &Lab) -> Result<BTreeMap<String, f64>> {
    let response = lab.rx.enter(|| -> Result<String> {
        let addr: SocketAddr = METRICS.parse()?;
        let mut stream = TcpStream::connect_timeout(&addr, STARTUP)?;
        stream.set_read_timeout(Some(STARTUP))?;
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    })??;
    let (head, body) = response.split_once("\r\n\r\n").context("not HTTP")?;
    ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect())
}
