//! The real binary attaches its XDP program, counts exactly the flow exports
//! sent to it, and leaves nothing attached however it exits.

mod support;

use std::{collections::BTreeMap, net::UdpSocket};

use support::{
    BIN, Flowtally, NetNs, TempDir, VethLab, eventually, path_str, require_root, scrape,
    send_raw_frame,
};

const EXPORTS: u64 = 100;
const OTHER_DATAGRAMS: u64 = 7;
const FLOW_EXPORT_FRAMES: &str =
    r#"flowtally_xdp_frames_total{verdict="pass",class="unknown_version"}"#;
const SOCKET_PACKETS: &str = r#"flowtally_packets_total{path="socket"}"#;

fn value(metrics: &BTreeMap<String, f64>, name: &str) -> u64 {
    metrics.get(name).copied().unwrap_or(0.0) as u64
}

/// Sends `EXPORTS` datagrams (NetFlow v7 headers, which XDP passes up) to
/// the collector and `OTHER_DATAGRAMS` to a port it does not listen on, then
/// checks both counters moved by exactly `EXPORTS` — neither more (other
/// traffic) nor less.
fn sends_are_counted_exactly(ns: &NetNs, sender: &NetNs, flowtally: &Flowtally) {
    let target = flowtally.ready.netflow[0];
    let metrics = flowtally.metrics_addr();
    let before = ns.enter(|| scrape(metrics));
    sender.enter(|| {
        let socket = UdpSocket::bind((target.ip(), 0)).or_else(|_| UdpSocket::bind("0.0.0.0:0"));
        let socket = socket.unwrap();
        let mut other = target;
        other.set_port(target.port() ^ 1);
        for i in 0..EXPORTS + OTHER_DATAGRAMS {
            let to = if i < EXPORTS { target } else { other };
            socket.send_to(&[0, 7, 0, 1, 0, 0, 0, i as u8], to).unwrap();
        }
    });
    eventually("the socket path to receive every export", || {
        let now = ns.enter(|| scrape(metrics));
        value(&now, SOCKET_PACKETS) - value(&before, SOCKET_PACKETS) >= EXPORTS
    });
    let after = ns.enter(|| scrape(metrics));
    assert_eq!(
        value(&after, SOCKET_PACKETS) - value(&before, SOCKET_PACKETS),
        EXPORTS
    );
    assert_eq!(
        value(&after, FLOW_EXPORT_FRAMES) - value(&before, FLOW_EXPORT_FRAMES),
        EXPORTS,
        "XDP counted flow exports: {after:#?}"
    );
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn native_xdp_on_a_veth_counts_every_export_and_detaches_on_sigterm() {
    require_root();
    let lab = VethLab::new();
    let tmp = TempDir::new();
    let mut flowtally = lab.start("xdp", &tmp.path("ft.db"), &[]);
    assert_eq!(
        flowtally.ready.xdp,
        [(lab.iface.clone(), "native".to_owned())]
    );
    assert!(
        lab.collector.xdp_prog(&lab.iface).is_some(),
        "attached per `ip link`"
    );

    sends_are_counted_exactly(&lab.collector, &lab.sender, &flowtally);

    flowtally.signal(libc::SIGTERM);
    assert!(flowtally.wait().success(), "{}", flowtally.stderr());
    assert_eq!(
        lab.collector.xdp_prog(&lab.iface),
        None,
        "detached after SIGTERM"
    );
}

/// flowtally with XDP on the loopback of `ns`.
fn on_loopback(ns: &NetNs, tmp: &TempDir) -> Flowtally {
    let db = tmp.path("ft.db");
    Flowtally::start(
        Some(ns),
        &[
            "--iface",
            "lo",
            "--mode",
            "xdp",
            "--netflow",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--db",
            path_str(&db),
        ],
    )
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn generic_xdp_on_loopback_counts_every_export_and_detaches_on_sigint() {
    require_root();
    let (ns, tmp) = (NetNs::new(), TempDir::new());
    let mut flowtally = on_loopback(&ns, &tmp);
    assert_eq!(
        flowtally.ready.xdp,
        [("lo".to_owned(), "generic".to_owned())]
    );

    sends_are_counted_exactly(&ns, &ns, &flowtally);

    flowtally.signal(libc::SIGINT);
    assert!(flowtally.wait().success(), "{}", flowtally.stderr());
    assert_eq!(ns.xdp_prog("lo"), None, "detached after SIGINT");
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn a_killed_flowtally_leaves_nothing_attached() {
    require_root();
    let (ns, tmp) = (NetNs::new(), TempDir::new());
    let mut flowtally = on_loopback(&ns, &tmp);
    assert!(ns.xdp_prog("lo").is_some());
    flowtally.signal(libc::SIGKILL);
    flowtally.wait();
    eventually("the kernel to release the link", || {
        ns.xdp_prog("lo").is_none()
    });
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn auto_mode_without_privileges_falls_back_to_sockets_with_one_warning() {
    require_root();
    let tmp = TempDir::new();
    std::fs::set_permissions(&tmp.0, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let config = tmp.path("ft.toml");
    std::fs::write(&config, "socket_receive_buffer = 65536\n").unwrap();
    let db = tmp.path("ft.db");
    let flowtally = Flowtally::spawn(
        std::process::Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .args([
                "--inh-caps=-all",
                "--bounding-set=-all",
                support::BIN,
                "run",
            ])
            .args([
                "--iface",
                "lo",
                "--mode",
                "auto",
                "--netflow",
                "127.0.0.1:0",
                "--sflow",
                "127.0.0.1:0",
            ])
            .args(["--metrics", "127.0.0.1:0", "--db", path_str(&db)])
            // A buffer within net.core.rmem_max: nobody may not go past it,
            // and that warning is not the one this test is about.
            .args(["--config", path_str(&config)]),
    );
    assert!(flowtally.ready.xdp.is_empty());
    // stderr is read by another thread: wait for the line, then count.
    eventually("the warning on stderr", || {
        flowtally.stderr().contains("WARN")
    });
    let stderr = flowtally.stderr();
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("falling back to sockets"), "{stderr}");
    assert!(warnings[0].contains("needs root"), "says why: {stderr}");

    let target = flowtally.ready.netflow[0];
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(b"x", target)
        .unwrap();
    eventually("the socket path to receive it", || {
        value(&scrape(flowtally.metrics_addr()), SOCKET_PACKETS) == 1
    });
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn xdp_mode_without_privileges_fails_with_exit_code_1() {
    require_root();
    let tmp = TempDir::new();
    std::fs::set_permissions(&tmp.0, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .args([
            "--inh-caps=-all",
            "--bounding-set=-all",
            support::BIN,
            "run",
        ])
        .args(["--iface", "lo", "--mode", "xdp", "--netflow", "127.0.0.1:0"])
        .args([
            "--metrics",
            "127.0.0.1:0",
            "--db",
            path_str(&tmp.path("ft.db")),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("needs root"), "{stderr}");
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn a_malformed_frame_is_counted_and_the_kernel_log_reaches_stderr() {
    require_root();
    let ns = NetNs::new();
    let tmp = TempDir::new();
    let flowtally = Flowtally::spawn(
        std::process::Command::new("ip")
            .args([
                "netns", "exec", &ns.name, BIN, "run", "--iface", "lo", "--mode", "xdp",
            ])
            .args(["--netflow", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
            .args(["--db", path_str(&tmp.path("ft.db"))])
            .env("RUST_LOG", "debug"),
    );
    // An IPv4 ethertype followed by 3 bytes of a 20-byte header.
    let frame = [&[0; 12][..], &[0x08, 0x00, 0x45, 0x00, 0x00]].concat();
    ns.enter(|| send_raw_frame("lo", &frame));
    let malformed = r#"flowtally_xdp_frames_total{verdict="pass",class="malformed"}"#;
    eventually("the malformed counter to move", || {
        ns.enter(|| value(&scrape(flowtally.metrics_addr()), malformed)) == 1
    });
    let line = format!("malformed frame of {} bytes", frame.len());
    eventually("the kernel's log line on stderr", || {
        flowtally.stderr().contains(&line)
    });
}

/// Runs flowtally as `nobody` with exactly `caps` (ambient), `--mode xdp`.
fn run_with_caps(caps: &str) -> (Option<i32>, String) {
    let tmp = TempDir::new();
    std::fs::set_permissions(&tmp.0, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let ns = NetNs::new();
    let mut child = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
        ])
        .args(["--clear-groups", &format!("--inh-caps=-all,{caps}")])
        .args([
            &format!("--ambient-caps={caps}"),
            BIN,
            "run",
            "--mode",
            "xdp",
        ])
        .args([
            "--iface",
            "lo",
            "--netflow",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ])
        .args(["--db", path_str(&tmp.path("ft.db"))])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let ready = stdout.map_while(Result::ok).any(|line| line == "ready");
    if ready {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let code = if ready { Some(0) } else { out.status.code() };
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn cap_bpf_net_admin_and_perfmon_suffice_and_perfmon_is_needed() {
    require_root();
    let (code, stderr) = run_with_caps("+bpf,+net_admin,+perfmon");
    assert_eq!(
        code,
        Some(0),
        "attaches with the three capabilities: {stderr}"
    );
    let (code, stderr) = run_with_caps("+bpf,+net_admin");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("prohibited for !root"), "{stderr}");
}
