//! The command-line contract: exit codes 0/1/2, errors that name the key or
//! flag, flags over file, and a socket-mode daemon that needs no privileges.

mod support;

use std::{net::UdpSocket, process::Command};

use support::{BIN, Flowtally, TempDir, eventually, path_str, scrape};

fn flowtally(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unknown_config_key_exits_2_naming_it() {
    let tmp = TempDir::new();
    let file = tmp.path("flowtally.toml");
    std::fs::write(&file, "mode = \"socket\"\n[radius]\nsecrett = \"x\"\n").unwrap();
    let (code, _, stderr) = flowtally(&["check-config", "--config", path_str(&file)]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("secrett"), "{stderr}");
}

#[test]
fn a_missing_config_file_exits_2_naming_it() {
    let (code, _, stderr) = flowtally(&["run", "--config", "/nonexistent/flowtally.toml"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("/nonexistent/flowtally.toml"), "{stderr}");
}

#[test]
fn a_bad_flag_value_exits_2_naming_the_flag() {
    let (code, _, stderr) = flowtally(&["run", "--netflow", "2055"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--netflow"), "{stderr}");
}

#[test]
fn xdp_mode_without_an_interface_exits_2_naming_iface() {
    let (code, _, stderr) = flowtally(&["check-config", "--mode", "xdp"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--iface"), "{stderr}");
}

#[test]
fn check_config_prints_the_file_with_flags_applied() {
    let tmp = TempDir::new();
    let file = tmp.path("flowtally.toml");
    std::fs::write(
        &file,
        "interfaces = [\"eth0\"]\nflush_interval = \"1m\"\nlate_window = \"10s\"\n",
    )
    .unwrap();
    let (code, stdout, stderr) = flowtally(&[
        "check-config",
        "--config",
        path_str(&file),
        "--flush-interval",
        "500ms",
        "--iface",
        "eth1",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("flush_interval = \"500ms\""), "{stdout}");
    assert!(stdout.contains("late_window = \"10s\""), "{stdout}");
    assert!(stdout.contains("interfaces = [\"eth1\"]"), "{stdout}");
}

#[test]
fn check_config_warns_that_a_portless_profile_cannot_attribute_through_nat() {
    let tmp = TempDir::new();
    let file = tmp.path("flowtally.toml");
    let pools = "[cgnat]\npools = [\"198.51.100.0/24\"]\n";
    std::fs::write(&file, pools).unwrap();
    let (code, stdout, stderr) = flowtally(&["check-config", "--config", path_str(&file)]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("pools = [\"198.51.100.0/24\"]"), "{stdout}");
    assert!(
        !stderr.contains("warning"),
        "the detail profile keeps ports: {stderr}"
    );
    std::fs::write(
        &file,
        format!("{pools}[aggregation]\nprofile = [\"peer_ip\", \"protocol\"]\n"),
    )
    .unwrap();
    let (code, _, stderr) = flowtally(&["check-config", "--config", path_str(&file)]);
    assert_eq!(code, Some(0), "a warning, not an error: {stderr}");
    assert!(
        stderr.contains("warning: `cgnat.pools`") && stderr.contains("cannot be attributed"),
        "{stderr}"
    );
}

#[test]
fn an_unopenable_database_is_a_runtime_failure_exit_1() {
    let (code, _, stderr) = flowtally(&[
        "run",
        "--mode",
        "socket",
        "--db",
        "/nonexistent/dir/flowtally.db",
        "--netflow",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("/nonexistent/dir/flowtally.db"), "{stderr}");
}

#[test]
fn socket_mode_counts_datagrams_and_stops_cleanly_on_sigterm() {
    let tmp = TempDir::new();
    let db = tmp.path("flowtally.db");
    let mut flowtally = Flowtally::start(
        None,
        &[
            "--mode",
            "socket",
            "--netflow",
            "127.0.0.1:0",
            "--netflow",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--db",
            path_str(&db),
        ],
    );
    assert_eq!(flowtally.ready.netflow.len(), 2);
    assert!(flowtally.ready.xdp.is_empty());
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    for target in &flowtally.ready.netflow {
        for _ in 0..5 {
            sender.send_to(&[0; 24], target).unwrap();
        }
    }
    let packets = r#"flowtally_packets_total{path="socket"}"#;
    eventually("10 datagrams on the socket path", || {
        scrape(flowtally.metrics_addr()).get(packets) == Some(&10.0)
    });
    let metrics = scrape(flowtally.metrics_addr());
    let rejected = r#"flowtally_rejected_packets_total{reason="unsupported_version"}"#;
    assert_eq!(
        metrics[rejected], 10.0,
        "24 zero bytes are no export we decode"
    );
    assert!(db.exists(), "the SQLite database is created");

    flowtally.signal(libc::SIGTERM);
    assert!(flowtally.wait().success(), "{}", flowtally.stderr());
}

/// `socket_receive_buffer` sizes every NetFlow socket, past
/// `net.core.rmem_max` when privileged (the kernel books, and `ss` shows,
/// twice the size asked).
#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn netflow_sockets_get_the_receive_buffer_asked_for() {
    support::require_root();
    let tmp = TempDir::new();
    let config = tmp.path("ft.toml");
    let asked = 3 << 20;
    std::fs::write(&config, format!("socket_receive_buffer = {asked}\n")).unwrap();
    let db = tmp.path("flowtally.db");
    let flowtally = Flowtally::start(
        None,
        &[
            "--config",
            path_str(&config),
            "--mode",
            "socket",
            "--netflow",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--db",
            path_str(&db),
        ],
    );
    let port = flowtally.ready.netflow[0].port();
    let ss = support::sh(
        "ss",
        &["-u", "-a", "-n", "-m", "-H", &format!("sport = :{port}")],
    );
    let rb: u64 = ss
        .split([',', '('])
        .find_map(|field| field.strip_prefix("rb"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no receive buffer in {ss:?}"));
    assert_eq!(rb, 2 * asked, "{ss}");
    assert!(
        !flowtally.stderr().contains("receive buffer"),
        "{}",
        flowtally.stderr()
    );
}

/// An idle daemon logs no line per flush at INFO (17 280 a day at 5 s):
/// one `idle:` summary per `log_summary` period, and the first flush that
/// writes usage at once.
#[test]
fn an_idle_daemon_logs_a_summary_per_period_not_a_line_per_flush() {
    let tmp = TempDir::new();
    let config = tmp.path("ft.toml");
    std::fs::write(&config, "log_summary = \"1s\"\n").unwrap();
    let db = tmp.path("flowtally.db");
    let flowtally = Flowtally::start(
        None,
        &[
            "--config",
            path_str(&config),
            "--mode",
            "socket",
            "--netflow",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--flush-interval",
            "100ms",
            "--db",
            path_str(&db),
        ],
    );
    let flushes = |n: f64| {
        scrape(flowtally.metrics_addr())
            .get("flowtally_drain_duration_seconds_count")
            .is_some_and(|&count| count >= n)
    };
    eventually("30 idle flushes", || flushes(30.0));
    let stderr = flowtally.stderr();
    let idle = stderr.lines().filter(|l| l.contains(" idle: ")).count();
    assert!(idle >= 2, "an idle line per second of 3: {stderr}");
    assert!(idle <= 4, "{stderr}");
    assert!(!stderr.contains("flush:"), "no per-flush line: {stderr}");

    let export = support::v5gen::exports(1, 7).remove(0).bytes();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(&export, flowtally.ready.netflow[0]).unwrap();
    eventually(
        &format!("the first usage logged: {}", flowtally.stderr()),
        || {
            flowtally
                .stderr()
                .contains("flows arriving: first flush with usage")
        },
    );
}
