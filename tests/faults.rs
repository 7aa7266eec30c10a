//! Faults of the machine under the daemon: a full disk. Each ends in a clear
//! signal and no lost or wrongly acknowledged record.

mod support;

use std::{
    fs,
    io::{ErrorKind, Write as _},
    net::{Ipv4Addr, UdpSocket},
    path::{Path, PathBuf},
    time::Duration,
};

use flowtally::radius::{AccountingRequest, Code, Packet, StatusType};
use support::{
    BIN, PATIENCE, RADIUS_SECRET, TempDir, eventually, path_str, require_root, scrape, sh,
    start_on_loopback,
};

/// A small tmpfs mounted for one test, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: PathBuf, size: &str) -> Self {
        fs::create_dir_all(&at).unwrap();
        sh(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                path_str(&at),
            ],
        );
        Self(at)
    }

    /// Fills what is left with `filler`, until the disk refuses a byte.
    fn fill(&self, filler: &Path) {
        let mut file = fs::File::create(filler).unwrap();
        let chunk = vec![0xa5; 64 << 10];
        for chunk in [&chunk[..], &chunk[..4096], &chunk[..1]] {
            loop {
                match file.write_all(chunk).and_then(|()| file.sync_all()) {
                    Ok(()) => continue,
                    Err(err) if err.raw_os_error() == Some(libc::ENOSPC) => break,
                    Err(err) => panic!("filling {}: {err}", filler.display()),
                }
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-l", path_str(&self.0)])
            .status();
    }
}

/// Found by a user: a Start not answered while the disk was full was
/// answered when the NAS retransmitted it after space returned, yet never
/// stored, because the failed attempt had already changed the in-memory
/// history. The retransmission must be answered only once the session is
/// durable, and then the session must be in SQLite.
#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn a_start_refused_on_a_full_disk_is_stored_when_its_retransmission_is_answered() {
    require_root();
    let tmp = TempDir::new();
    let disk = SmallDisk::mount(tmp.path("disk"), "6m");
    let db = disk.0.join("ft.db");
    let flowtally = start_on_loopback(&db, &[]);
    let radius = flowtally.ready.radius.expect("RADIUS listens");
    let metrics = flowtally.metrics_addr();

    let filler = disk.0.join("filler");
    disk.fill(&filler);
    let start = AccountingRequest {
        user_name: Some("dana".into()),
        session_id: Some("full-1".into()),
        framed_ip: Some(Ipv4Addr::new(100, 64, 9, 9)),
        event_timestamp: Some(1_800_000_000),
        ..AccountingRequest::new(StatusType::Start)
    }
    .encode(42, RADIUS_SECRET.as_bytes())
    .unwrap();
    let nas = UdpSocket::bind("127.0.0.1:0").unwrap();
    nas.send_to(&start, radius).unwrap();
    let failed = r#"flowtally_radius_requests_total{status="unknown",result="store_failed"}"#;
    eventually("the commit to fail on the full disk", || {
        scrape(metrics).get(failed).is_some_and(|&n| n >= 1.0)
    });
    nas.set_nonblocking(true).unwrap();
    let mut buf = [0; 4096];
    assert_eq!(
        nas.recv(&mut buf).unwrap_err().kind(),
        ErrorKind::WouldBlock,
        "nothing is answered that is not stored"
    );

    fs::remove_file(&filler).unwrap();
    nas.set_nonblocking(false).unwrap();
    nas.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    // The NAS retransmits the very same packet until it is answered.
    let deadline = std::time::Instant::now() + PATIENCE;
    let len = loop {
        assert!(std::time::Instant::now() < deadline, "never answered");
        nas.send_to(&start, radius).unwrap();
        if let Ok(len) = nas.recv(&mut buf) {
            break len;
        }
    };
    let answer = Packet::decode(&buf[..len]).unwrap();
    assert_eq!(
        (answer.code, answer.identifier),
        (Code::AccountingResponse, 42)
    );

    let conn = rusqlite::Connection::open(&db).unwrap();
    let stored: (String, String) = conn
        .query_row(
            "SELECT user_name, framed_ip FROM sessions WHERE session_id = 'full-1'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("the answered session is in SQLite");
    assert_eq!(stored, ("dana".to_owned(), "100.64.9.9".to_owned()));
    let whois = std::process::Command::new(BIN)
        .args(["whois", "100.64.9.9", "--at", "1800000001", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&whois.stdout).contains("dana"),
        "{whois:?}"
    );
}
