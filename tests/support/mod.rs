//! Shared by the integration tests: the real `flowtally` binary as a child
//! process, network namespaces, a `/metrics` scraper, temporary dirs.
#![allow(dead_code)] // each test binary uses a different part

pub mod clickhouse;
pub mod frames;
pub mod http_capture;
pub mod v5gen;

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

pub const BIN: &str = env!("CARGO_BIN_EXE_flowtally");

/// XDP return codes (`enum xdp_action`).
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// The return code a verdict stands for.
pub fn xdp_action(verdict: flowtally_common::Verdict) -> u32 {
    match verdict {
        flowtally_common::Verdict::Drop => XDP_DROP,
        flowtally_common::Verdict::Pass => XDP_PASS,
    }
}

/// How long any polled condition may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Fails loudly when a privileged test runs without root, so that it can
/// never pass by doing nothing. `cargo xtask test` runs these (they are
/// `#[ignore]`d otherwise) only as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test attaches XDP and creates network namespaces: it needs root"
    );
}

/// A kernel configuration for programs loaded without attaching, as the
/// fixture tests do: the `detail` profile, 1-minute buckets, sampling scaled.
pub fn kernel_config(ports: &[u16], subscriber_nets: &[&str]) -> flowtally::xdp::KernelConfig {
    use flowtally_common::agg::{FLAG_SCALE_SAMPLING, KEEP_ALL, Profile};
    flowtally::xdp::KernelConfig {
        collector_ports: ports.iter().copied().collect(),
        subscriber_networks: subscriber_nets.iter().map(|n| n.parse().unwrap()).collect(),
        classes: Vec::new(),
        exporters: Vec::new(),
        billing_scope: Vec::new(),
        profile: Profile {
            keep: KEEP_ALL,
            bucket_ms: 60_000,
        },
        flags: FLAG_SCALE_SAMPLING,
        aggregate_entries: flowtally_common::DEFAULT_AGGREGATE_ENTRIES,
        aggregate_entries_v6: flowtally_common::DEFAULT_AGGREGATE_ENTRIES_V6,
        overflow_ring_bytes: flowtally_common::DEFAULT_OVERFLOW_RING_BYTES,
        interfaces: Vec::new(),
        log_level: 0,
    }
}

/// Sends one accounting request with radclient (freeradius-utils, a real
/// RADIUS client), one try of 2 s; true if it was answered.
pub fn radclient(server: SocketAddr, secret: &str, attributes: &str) -> bool {
    let mut child = Command::new("radclient")
        .args(["-r", "1", "-t", "2", &server.to_string(), "acct", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("radclient (freeradius-utils) is installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(attributes.as_bytes())
        .unwrap();
    child.wait().unwrap().success()
}

/// Sends one accounting request with radclient from namespace `ns` (a
/// NAS), one try of 2 s; it must be answered (flowtally answers once the
/// record is on disk).
pub fn radclient_in(ns: &NetNs, server: &str, secret: &str, attributes: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "radclient"])
        .args(["-r", "1", "-t", "2", server, "acct", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("radclient runs (Debian package freeradius-utils)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(attributes.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "answered: {attributes}");
}

/// A unique, short name for per-test kernel objects.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command and panics with its output if it fails.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted (with its interfaces) on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new() -> Self {
        let name = unique("ft");
        sh("ip", &["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    /// Runs `f` on a thread that lives in this namespace: sockets it opens
    /// belong to the namespace.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.name, f)
    }

    /// Runs `nft ARGS` in this namespace (Debian package nftables), with
    /// `stdin` fed to it; its output.
    pub fn nft(&self, args: &[&str], stdin: Option<&str>) -> String {
        use std::io::Write as _;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nft runs (Debian package nftables)");
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Packets and bytes of the one counter in nftables table `family
    /// name`.
    pub fn nft_counter(&self, family: &str, table: &str) -> (u64, u64) {
        let out = self.nft(&["list", "table", family, table], None);
        let words: Vec<&str> = out.split_whitespace().collect();
        let after = |name| {
            let i = words
                .iter()
                .position(|w| *w == name)
                .unwrap_or_else(|| panic!("no counter in {out}"));
            words[i + 1].parse::<u64>().unwrap()
        };
        (after("packets"), after("bytes"))
    }

    /// Runs `f` on a thread of its own that lives in this namespace, and
    /// returns at once.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        let file = fs::File::open(format!("/run/netns/{}", self.name)).expect("netns file");
        thread::spawn(move || {
            // SAFETY: setns on this thread only; the fd is valid.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }

    /// The XDP program id attached to `iface`, if any.
    pub fn xdp_prog(&self, iface: &str) -> Option<String> {
        let out = self.ip(&["-d", "link", "show", "dev", iface]);
        out.split_whitespace()
            .skip_while(|word| *word != "prog/xdp")
            .nth(2)
            .map(str::to_owned)
    }
}

/// Runs `f` on a thread inside the namespace called `name`.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    let file = fs::File::open(format!("/run/netns/{name}")).expect("netns file");
    thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns on this thread only; the fd is valid.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("netns thread panicked")
    })
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Sends one raw Ethernet frame out of `iface` (AF_PACKET), whatever it
/// contains: the way to put malformed frames in front of the XDP program.
pub fn send_raw_frame(iface: &str, frame: &[u8]) {
    let name = std::ffi::CString::new(iface).unwrap();
    // SAFETY: plain socket calls on a socket we own; `addr` outlives sendto.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
        addr.sll_halen = 6;
        let sent = libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        libc::close(fd);
        assert_eq!(
            sent,
            frame.len() as isize,
            "{}",
            std::io::Error::last_os_error()
        );
    }
}

/// A veth pair with one end in each namespace, addressed from 198.18.0.0/15.
pub fn veth_pair(a: &NetNs, a_addr: &str, b: &NetNs, b_addr: &str) -> (String, String) {
    veth_named(a, "fta", a_addr, b, "ftb", b_addr)
}

/// [`veth_pair`] with chosen interface names, for several links per namespace.
pub fn veth_named(
    a: &NetNs,
    a_if: &str,
    a_addr: &str,
    b: &NetNs,
    b_if: &str,
    b_addr: &str,
) -> (String, String) {
    sh(
        "ip",
        &[
            "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
            &b.name,
        ],
    );
    for (ns, iface, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
        ns.ip(&["addr", "add", addr, "dev", iface]);
        ns.ip(&["link", "set", iface, "up"]);
    }
    (a_if.into(), b_if.into())
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("flowtally-test-"));
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// What a running `flowtally run` printed before `ready`.
#[derive(Debug, Default)]
pub struct Ready {
    pub netflow: Vec<SocketAddr>,
    pub sflow: Vec<SocketAddr>,
    pub radius: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    /// The HTTP listener (the same address as `metrics`).
    pub http: Option<SocketAddr>,
    /// `(iface, mode)` per XDP attachment.
    pub xdp: Vec<(String, String)>,
}

/// The real binary, killed on drop if still running.
pub struct Flowtally {
    child: Child,
    stderr: Arc<Mutex<String>>,
    pub ready: Ready,
}

impl Flowtally {
    /// Starts `flowtally run <args>` (inside `netns` if given) and waits for
    /// its `ready` line. Without `--sflow` in `args`, sFlow listens on a free
    /// loopback port rather than the default 6343, which tests running side
    /// by side would contend for.
    pub fn start(netns: Option<&NetNs>, args: &[&str]) -> Self {
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.name, BIN]);
                c
            }
            None => Command::new(BIN),
        };
        command.arg("run").args(args);
        if !args.contains(&"--sflow") {
            command.args(["--sflow", "127.0.0.1:0"]);
        }
        Self::spawn(&mut command)
    }

    pub fn spawn(command: &mut Command) -> Self {
        if !command.get_envs().any(|(key, _)| key == "RUST_LOG") {
            command.env("RUST_LOG", "info");
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("flowtally starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let (tx, rx) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut this = Self {
            child,
            stderr,
            ready: Ready::default(),
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!("flowtally never became ready; stderr:\n{}", this.stderr())
            });
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["ready"] => break,
                ["listen", "netflow", "udp", addr] => {
                    this.ready.netflow.push(addr.parse().unwrap())
                }
                ["listen", "sflow", "udp", addr] => this.ready.sflow.push(addr.parse().unwrap()),
                ["listen", "radius", "udp", addr] => {
                    this.ready.radius = Some(addr.parse().unwrap())
                }
                ["listen", "metrics", url] => {
                    let addr = url
                        .trim_start_matches("http://")
                        .trim_end_matches("/metrics");
                    this.ready.metrics = Some(addr.parse().unwrap());
                }
                ["listen", "http", url] => {
                    let addr = url.trim_start_matches("http://").trim_end_matches('/');
                    this.ready.http = Some(addr.parse().unwrap());
                }
                ["xdp", iface, mode] => this.ready.xdp.push((iface.to_string(), mode.to_string())),
                _ => {}
            }
        }
        this
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    /// Waits for the process to exit after a signal.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "flowtally did not exit");
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.ready.metrics.expect("metrics address announced")
    }
}

impl Drop for Flowtally {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Scrapes `/metrics` into `name{labels}` → value.
pub fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let mut stream = TcpStream::connect_timeout(&addr, PATIENCE).expect("connect to /metrics");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').expect("sample line");
            (name.to_owned(), value.parse().expect("numeric sample"))
        })
        .collect()
}

/// Polls `condition` until it holds or `PATIENCE` runs out.
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `value` until it equals `expected` or `PATIENCE` runs out; the
/// failure names the last value seen.
pub fn eventually_equal<T: PartialEq + std::fmt::Debug>(
    what: &str,
    expected: T,
    mut value: impl FnMut() -> T,
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let seen = value();
        if seen == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {seen:?}, expected {expected:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The RADIUS secret of [`start_on_loopback`]'s daemons.
pub const RADIUS_SECRET: &str = "testing123";

/// `flowtally run` in socket mode with flows, metrics and RADIUS (secret
/// [`RADIUS_SECRET`]) on free loopback ports and database `db`, then `extra`.
pub fn start_on_loopback(db: &Path, extra: &[&str]) -> Flowtally {
    let mut args = vec![
        "--mode",
        "socket",
        "--netflow",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--radius",
        "127.0.0.1:0",
        "--radius-secret",
        RADIUS_SECRET,
        "--db",
        path_str(db),
    ];
    args.extend_from_slice(extra);
    Flowtally::start(None, &args)
}

/// Two namespaces joined by a veth pair: a sender (198.18.0.1) and a
/// collector (198.18.0.2) whose veth end takes the XDP program natively.
pub struct VethLab {
    pub sender: NetNs,
    pub collector: NetNs,
    /// The collector's end of the pair.
    pub iface: String,
}

impl VethLab {
    /// Where the collector's daemon receives flow exports.
    pub const NETFLOW: &str = "198.18.0.2:2055";

    pub fn new() -> Self {
        let (sender, collector) = (NetNs::new(), NetNs::new());
        let (_, iface) = veth_pair(&sender, "198.18.0.1/30", &collector, "198.18.0.2/30");
        Self {
            sender,
            collector,
            iface,
        }
    }

    /// `flowtally run` in the collector namespace, `mode` (xdp, socket,
    /// auto) on its veth end, flows on [`Self::NETFLOW`], metrics on a free
    /// port, database `db`, then `extra`.
    pub fn start(&self, mode: &str, db: &Path, extra: &[&str]) -> Flowtally {
        let mut args = vec![
            "--iface",
            &self.iface,
            "--mode",
            mode,
            "--netflow",
            Self::NETFLOW,
            "--metrics",
            "127.0.0.1:0",
            "--db",
            path_str(db),
        ];
        args.extend_from_slice(extra);
        Flowtally::start(Some(&self.collector), &args)
    }

    /// Sends each payload from the sender to the collector.
    pub fn send<'a>(&self, payloads: impl IntoIterator<Item = &'a [u8]> + Send) {
        self.sender.enter(|| {
            let socket = std::net::UdpSocket::bind("198.18.0.1:0").unwrap();
            for payload in payloads {
                socket.send_to(payload, Self::NETFLOW).unwrap();
            }
        });
    }

    /// `/metrics` of a daemon running in the collector namespace.
    pub fn scrape(&self, metrics: SocketAddr) -> BTreeMap<String, f64> {
        self.collector.enter(|| scrape(metrics))
    }
}

/// Bytes per user in `db`'s `usage` table; `None` for unattributed rows.
pub fn usage_by_user(db: &Path) -> BTreeMap<Option<String>, u64> {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.prepare("SELECT user_name, SUM(bytes) FROM usage GROUP BY user_name")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as u64)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// An HTTP response as [`http_get`] read it.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// The head after the status line, as sent.
    pub head: String,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {}", self.body))
    }
}

/// One `GET path` with `headers`, on a connection of its own (closed by
/// the server after the answer).
pub fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut stream = TcpStream::connect_timeout(&addr, PATIENCE).expect("connect to the listener");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let (status_line, head) = head.split_once("\r\n").unwrap_or((head, ""));
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    HttpResponse {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}
