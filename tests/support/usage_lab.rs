//! A running daemon with usage whose figures are known, for the HTTP API
//! and console tests: radclient opens sessions for alice and bob, NetFlow
//! v5 exports from the test (exporter 127.0.0.1) carry their traffic and
//! some nobody's, and once it is all in the database radclient stops both
//! sessions (so that time online no longer moves with the clock).
//!
//! | subscriber | user | down | up |
//! |---|---|---|---|
//! | 198.18.100.1 | alice | 3 000 000 (3 records) | 250 000 |
//! | 198.18.100.2 | bob | 40 000 | 1 200 |
//! | 198.18.100.9 | nobody | 5 000 | 0 |
//!
//! Every flow is at `t` (Unix seconds when the lab starts); the sessions
//! start at `t - 120` and stop at or after `t`.
#![allow(dead_code)] // each test binary uses a different part

use std::{
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    time::{SystemTime, UNIX_EPOCH},
};

use flowtally::netflow::v5::{Record, encode};
use flowtally_common::v5::Header;

use crate::support::{
    Flowtally, HttpResponse, RADIUS_SECRET, TempDir, eventually, http_get, path_str, radclient,
    start_on_loopback,
};

pub const SUBSCRIBERS: &str = "198.18.100.0/24";
const PEER: [u8; 4] = [198, 51, 100, 7];

/// One subscriber's traffic: the bytes of each record down and up.
pub struct Subscriber {
    pub user: Option<&'static str>,
    pub ip: [u8; 4],
    pub down: &'static [u32],
    pub up: &'static [u32],
}

pub const TRAFFIC: [Subscriber; 3] = [
    Subscriber {
        user: Some("alice"),
        ip: [198, 18, 100, 1],
        down: &[1_000_000, 1_000_000, 1_000_000],
        up: &[250_000],
    },
    Subscriber {
        user: Some("bob"),
        ip: [198, 18, 100, 2],
        down: &[40_000],
        up: &[1_200],
    },
    Subscriber {
        user: None,
        ip: [198, 18, 100, 9],
        down: &[5_000],
        up: &[],
    },
];

pub struct UsageLab {
    pub dir: TempDir,
    pub db: PathBuf,
    pub flowtally: Flowtally,
    /// Unix seconds of every flow.
    pub t: u64,
    /// Exports sent, and records in them.
    pub exports: u64,
    pub records: u64,
}

pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Bytes down and up of `user` in [`TRAFFIC`].
pub fn expected(user: Option<&str>) -> (u64, u64) {
    TRAFFIC
        .iter()
        .filter(|s| s.user == user)
        .map(|s| {
            (
                s.down.iter().map(|&b| u64::from(b)).sum::<u64>(),
                s.up.iter().map(|&b| u64::from(b)).sum::<u64>(),
            )
        })
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

impl UsageLab {
    /// Starts the daemon (with `extra` flags) and fills it.
    pub fn start(extra: &[&str]) -> Self {
        let dir = TempDir::new();
        let db = dir.path("lab.db");
        let mut args = vec![
            "--subscriber-net",
            SUBSCRIBERS,
            "--flush-interval",
            "200ms",
            // Nobody's rows wait this long for a late session.
            "--late-window",
            "1s",
        ];
        args.extend_from_slice(extra);
        let flowtally = start_on_loopback(&db, &args);
        let t = unix_secs();
        let mut lab = Self {
            dir,
            db,
            flowtally,
            t,
            exports: 0,
            records: 0,
        };
        for s in &TRAFFIC {
            if let Some(user) = s.user {
                lab.account("Start", user, s.ip, t - 120);
            }
        }
        lab.send_exports();
        eventually("all usage attributed in the database", || {
            let by_user = crate::support::usage_by_user(&lab.db);
            TRAFFIC.iter().all(|s| {
                let (down, up) = expected(s.user);
                by_user.get(&s.user.map(str::to_owned)) == Some(&(down + up))
            })
        });
        let stop = unix_secs();
        for s in &TRAFFIC {
            if let Some(user) = s.user {
                lab.account("Stop", user, s.ip, stop);
            }
        }
        eventually("both sessions stopped in the database", || {
            let conn = rusqlite::Connection::open(&lab.db).unwrap();
            conn.query_row(
                "SELECT count(*) FROM sessions WHERE stop_ms IS NOT NULL",
                [],
                |row| row.get::<_, i64>(0),
            )
            .unwrap()
                == 2
        });
        lab
    }

    fn account(&self, status: &str, user: &str, ip: [u8; 4], at: u64) {
        let ip = std::net::Ipv4Addr::from(ip);
        let mut attributes = format!(
            "Acct-Status-Type = {status}, User-Name = {user}, Acct-Session-Id = {user}-1, \
             Framed-IP-Address = {ip}, NAS-IP-Address = 127.0.0.1, Event-Timestamp = {at}"
        );
        if status == "Stop" {
            attributes.push_str(&format!(
                ", Acct-Session-Time = {}, Acct-Terminate-Cause = User-Request",
                at - (self.t - 120)
            ));
        }
        let radius = self.flowtally.ready.radius.expect("RADIUS on");
        assert!(
            radclient(radius, RADIUS_SECRET, &attributes),
            "no answer to {attributes}"
        );
    }

    fn send_exports(&mut self) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let uptime = 1_000_000;
        for s in &TRAFFIC {
            let records: Vec<Record> = s
                .down
                .iter()
                .map(|&octets| (PEER, s.ip, octets))
                .chain(s.up.iter().map(|&octets| (s.ip, PEER, octets)))
                .map(|(src, dst, octets)| Record {
                    src,
                    dst,
                    packets: octets.div_ceil(1000),
                    octets,
                    first: uptime - 1000,
                    last: uptime,
                    src_port: 443,
                    dst_port: 50_000,
                    protocol: 6,
                    ..Record::default()
                })
                .collect();
            let header = Header {
                version: 5,
                sys_uptime: uptime,
                unix_secs: self.t as u32,
                flow_sequence: self.records as u32,
                ..Header::default()
            };
            socket
                .send_to(&encode(&header, &records), self.flowtally.ready.netflow[0])
                .unwrap();
            self.exports += 1;
            self.records += records.len() as u64;
        }
    }

    pub fn http(&self) -> SocketAddr {
        self.flowtally
            .ready
            .http
            .expect("the HTTP listener announced")
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        http_get(self.http(), path, &[])
    }

    /// `flowtally report --db <db> <args>`'s standard output; it must succeed.
    pub fn report(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(crate::support::BIN)
            .args(["report", "--db", path_str(&self.db)])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "report {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}
