//! Destination classes through the real XDP program (BPF_PROG_TEST_RUN)
//! and through the socket path: with class prefix lists loaded, the same
//! NetFlow v5 exports give identical aggregates, class byte included, and
//! the bytes of each class are what the records say under the documented
//! rule (the peer's longest prefix), computed here without flowtally. Then
//! the daemon, configured with classes from TOML and a CIDR file, writes
//! those bytes into `usage.class` by name, in XDP and in socket mode.

mod support;

use std::collections::BTreeMap;

use flowtally::{
    aggregate::{Aggregator, Table, merge},
    classes::{ClassConfig, Classes},
    ip::to_ip,
    subscribers::SubscriberNets,
    xdp::{DataPlane, KernelConfig},
};
use flowtally_common::agg::{Direction, KEEP_ALL};
use support::{
    TempDir, VethLab, XDP_DROP, eventually,
    frames::udp_v4_frame,
    kernel_config, path_str, require_root,
    v5gen::{Export, exports},
};

const SUBSCRIBERS: &str = support::v5gen::SUBSCRIBERS;

/// Generated peers are 198.19.0.1–10 and subscribers 198.18.100.1–20
/// (the peer of a `down` record between subscribers is a subscriber).
/// `ix` is a longer prefix inside `local`; 198.19.0.8–10 are in no class.
/// In the kernel, 198.19.0.0/24 is split by longer prefixes (the trie
/// answers) and 198.18.100.0/24 is whole in `national` (the /24 table
/// answers).
fn classes() -> Classes {
    let class = |name: &str, networks: &[&str]| ClassConfig {
        name: name.into(),
        networks: networks.iter().map(|n| n.parse().unwrap()).collect(),
        files: Vec::new(),
    };
    Classes::load(
        &[
            class("local", &["198.19.0.0/29"]),
            class("ix", &["198.19.0.4/30", "2001:db8:ffff::/48"]),
            class("national", &["198.18.0.0/16"]),
        ],
        |_| unreachable!("no files"),
    )
    .unwrap()
}

/// The class of a generated address by the rule, written out by hand.
fn expected_class(ip: [u8; 4]) -> u8 {
    match ip {
        [198, 19, 0, 4..=7] => 2,
        [198, 19, 0, 0..=7] => 1,
        [198, 18, _, _] => 3,
        _ => 0,
    }
}

fn through_xdp(config: &KernelConfig, exports: &[Export]) -> Table {
    let mut plane = DataPlane::start(&[], config).expect("the program loads");
    for export in exports {
        let frame = udp_v4_frame(export.exporter, 2055, &export.bytes());
        assert_eq!(plane.run_frame(&frame).unwrap(), XDP_DROP);
    }
    let mut drainer = plane.take_drainer().unwrap();
    let mut table = Table::new();
    drainer
        .drain(|key, value| merge(&mut table, key, value))
        .unwrap();
    table
}

fn through_socket(config: &KernelConfig, classes: &Classes, exports: &[Export]) -> Table {
    let mut aggregator = Aggregator::new(
        config.profile,
        config.flags,
        SubscriberNets::new(&config.subscriber_networks),
    )
    .with_classes(classes.lookup());
    for export in exports {
        aggregator
            .add_v5(&to_ip(export.exporter.into()), &export.bytes())
            .unwrap();
    }
    aggregator.take()
}

fn bytes_by_class(table: &Table) -> BTreeMap<(u8, u8), u64> {
    let mut bytes = BTreeMap::new();
    for (key, value) in table {
        *bytes.entry((key.direction, key.class)).or_default() += value.bytes;
    }
    bytes
}

/// Bytes per (direction, class) from the records alone.
fn expected(exports: &[Export]) -> BTreeMap<(u8, u8), u64> {
    let inside = |ip: [u8; 4]| ip[..3] == [198, 18, 100];
    let mut bytes = BTreeMap::new();
    for export in exports {
        for r in &export.records {
            let octets = u64::from(r.octets) * export.sampling();
            let mut add = |dir: Direction, peer| {
                *bytes.entry((dir as u8, expected_class(peer))).or_default() += octets;
            };
            match (inside(r.src), inside(r.dst)) {
                (true, true) => {
                    add(Direction::Up, r.dst);
                    add(Direction::Down, r.src);
                }
                (true, false) => add(Direction::Up, r.dst),
                (false, true) => add(Direction::Down, r.src),
                (false, false) => add(Direction::Transit, r.dst),
            }
        }
    }
    bytes
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn xdp_and_socket_paths_give_identical_classes_for_every_profile() {
    require_root();
    let exports = exports(200, 0xc1a5);
    let classes = classes();
    for keep in [KEEP_ALL, 0] {
        let mut config = kernel_config(&[2055], &[SUBSCRIBERS]);
        config.profile.keep = keep;
        config.classes = classes.networks().collect();
        let xdp = through_xdp(&config, &exports);
        let socket = through_socket(&config, &classes, &exports);
        assert!(xdp == socket, "keep {keep:#x}: tables differ");
        let by_class = bytes_by_class(&xdp);
        assert_eq!(by_class, expected(&exports), "keep {keep:#x}");
        let seen: std::collections::BTreeSet<u8> = by_class.keys().map(|&(_, c)| c).collect();
        assert_eq!(seen, [0, 1, 2, 3].into(), "every class and none occur");
    }
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn without_classes_every_key_is_unclassified_in_both_paths() {
    require_root();
    let exports = exports(50, 0xc1a6);
    let config = kernel_config(&[2055], &[SUBSCRIBERS]);
    let xdp = through_xdp(&config, &exports);
    let socket = through_socket(&config, &Classes::default(), &exports);
    assert!(xdp == socket, "tables differ");
    assert!(xdp.keys().all(|key| key.class == 0));
}

/// The classes of [`classes`] as a configuration file, `ix` from a file.
fn config_file(tmp: &TempDir) -> std::path::PathBuf {
    let ix = tmp.path("ix.txt");
    std::fs::write(
        &ix,
        "# the IX peering LAN\n198.19.0.4/30\n\n2001:db8:ffff::/48 # v6\n",
    )
    .unwrap();
    let config = tmp.path("flowtally.toml");
    std::fs::write(
        &config,
        format!(
            "[[classes]]\nname = \"local\"\nnetworks = [\"198.19.0.0/29\"]\n\
             [[classes]]\nname = \"ix\"\nfiles = [{:?}]\n\
             [[classes]]\nname = \"national\"\nnetworks = [\"198.18.0.0/16\"]\n",
            path_str(&ix)
        ),
    )
    .unwrap();
    config
}

/// SUM(bytes) per (direction, class) of the `usage` table, by class number.
fn usage_by_class(db: &std::path::Path) -> BTreeMap<(u8, u8), u64> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut query = conn
        .prepare("SELECT direction, class, SUM(bytes) FROM usage GROUP BY 1, 2")
        .unwrap();
    let rows = query
        .query_map([], |row| {
            let direction: String = row.get(0)?;
            let class: Option<String> = row.get(1)?;
            Ok((direction, class, row.get::<_, i64>(2)?))
        })
        .unwrap();
    rows.map(|row| {
        let (direction, class, bytes) = row.unwrap();
        let direction = match direction.as_str() {
            "up" => Direction::Up,
            "down" => Direction::Down,
            _ => Direction::Transit,
        };
        let class = match class.as_deref() {
            None => 0,
            Some("local") => 1,
            Some("ix") => 2,
            Some("national") => 3,
            Some(other) => panic!("class {other:?}"),
        };
        ((direction as u8, class), bytes as u64)
    })
    .collect()
}

fn the_daemon_writes_each_class_by_name(mode: &str) {
    require_root();
    let lab = VethLab::new();
    let tmp = TempDir::new();
    let db = tmp.path("ft.db");
    let config = config_file(&tmp);
    let mut flowtally = lab.start(
        mode,
        &db,
        &[
            "--config",
            path_str(&config),
            "--subscriber-net",
            SUBSCRIBERS,
            "--flush-interval",
            "100ms",
        ],
    );
    let metrics = flowtally.metrics_addr();
    let exports = exports(60, 0xc1a7);
    let records: usize = exports.iter().map(|e| e.records.len()).sum();
    let counted = format!("flowtally_records_total{{path=\"{mode}\"}}");
    let counted_now = || lab.scrape(metrics).get(&counted).copied().unwrap_or(0.0) as usize;
    // In batches, each waited for: a veth ring drops what floods it.
    let mut sent = 0;
    for chunk in exports.chunks(20) {
        let bytes: Vec<Vec<u8>> = chunk.iter().map(Export::bytes).collect();
        lab.send(bytes.iter().map(Vec::as_slice));
        sent += chunk.iter().map(|e| e.records.len()).sum::<usize>();
        eventually("a batch to be counted", || counted_now() >= sent);
    }
    assert_eq!(counted_now(), records);
    flowtally.signal(libc::SIGTERM);
    assert!(flowtally.wait().success(), "{}", flowtally.stderr());
    assert_eq!(usage_by_class(&db), expected(&exports));
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn in_xdp_mode_the_daemon_writes_each_class_by_name() {
    the_daemon_writes_each_class_by_name("xdp");
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn in_socket_mode_the_daemon_writes_each_class_by_name() {
    the_daemon_writes_each_class_by_name("socket");
}
