//! sFlow v5 through the real XDP program (BPF_PROG_TEST_RUN) and through
//! the socket path's decoder: for datagrams of every supported shape the
//! kernel aggregates exactly what the socket path does, or passes the
//! datagram up whole; with a tiny map nothing is lost; hostile datagrams
//! never aggregate in the kernel what the socket path would reject.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use flowtally::{
    aggregate::{Aggregator, Table, merge},
    sflow::{
        self, Decoded,
        fixtures::{AGENT_V4, Packet, TPID_8021Q, datagram, every_shape, flow_sample},
        wire::Sample,
    },
    subscribers::SubscriberNets,
    xdp::{DataPlane, KernelConfig},
};
use flowtally_common::{
    RecordStat, XdpStat,
    agg::{AggValue, FLAG_SCALE_SAMPLING, FLAG_SFLOW_RENORMALIZE},
    sflow::{PORT, SampleStat},
};
use support::{frames::udp_v4_frame, kernel_config, require_root};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
/// The UDP source: not the agent, which the datagram names.
const SENDER: [u8; 4] = [198, 18, 9, 9];

fn config(flags: u32) -> KernelConfig {
    let mut config = kernel_config(&[PORT], &["198.18.100.0/24", "2001:db8:100::/48"]);
    // One bucket a day: arrival times differ between the paths by the
    // time between them, never (in a test run) by a day's boundary.
    config.profile.bucket_ms = 86_400_000;
    config.flags = flags;
    config
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// What the socket path aggregates from `datagrams`, and its samples.
fn socket_table(config: &KernelConfig, datagrams: &[Vec<u8>]) -> (Table, [u64; 4]) {
    let mut aggregator = Aggregator::new(
        config.profile,
        config.flags,
        SubscriberNets::new(&config.subscriber_networks),
    )
    .with_scope(&config.billing_scope);
    let mut samples = [0; 4];
    let mut decoded = Decoded::default();
    for d in datagrams {
        sflow::decode(d, config.flags, now_ms(), |_| None, &mut decoded).unwrap();
        for record in &decoded.records {
            aggregator.add(&decoded.agent, record);
        }
        for (sum, n) in samples.iter_mut().zip(decoded.samples) {
            *sum += n;
        }
    }
    (aggregator.take(), samples)
}

/// Two tables equal but for the record times, which are arrival times:
/// the kernel's must lie within `window`.
fn assert_same_but_times(
    kernel: &Table,
    socket: &Table,
    window: std::ops::RangeInclusive<u64>,
    what: &str,
) {
    let strip = |v: &AggValue| (v.bytes, v.packets, v.flows);
    assert_eq!(kernel.len(), socket.len(), "{what}: keys");
    for (key, value) in kernel {
        let other = socket
            .get(key)
            .unwrap_or_else(|| panic!("{what}: {key:?} only in the kernel"));
        assert_eq!(strip(value), strip(other), "{what}: {key:?}");
        assert!(
            window.contains(&value.first_ms) && window.contains(&value.last_ms),
            "{what}: {value:?}"
        );
    }
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn xdp_and_socket_paths_agree_for_every_sflow_shape() {
    require_root();
    for flags in [FLAG_SCALE_SAMPLING, 0] {
        let config = config(flags);
        let mut plane = DataPlane::start(&[], &config).expect("the program loads");
        let stats = plane.take_stats().unwrap();
        let mut kernel_sflow = plane.take_sflow().unwrap();
        let mut drainer = plane.take_drainer().unwrap();
        let mut aggregated = Vec::new();
        let started = now_ms();
        for (name, bytes) in every_shape() {
            let frame = udp_v4_frame(SENDER, PORT, &bytes);
            let verdict = plane
                .run_frame(&frame)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            if name.ends_with("counters") {
                assert_eq!(verdict, XDP_PASS, "{name}: counter samples go up");
            } else {
                assert_eq!(verdict, XDP_DROP, "{name}");
                aggregated.push(bytes);
            }
        }
        let ended = now_ms();
        assert_eq!(
            stats.frames(XdpStat::DropSflowAggregated).count,
            aggregated.len() as u64
        );
        assert_eq!(stats.frames(XdpStat::PassSflowToUser).count, 4);
        let mut in_kernel = Table::new();
        drainer
            .drain(|key, value| merge(&mut in_kernel, key, value))
            .unwrap();
        let (on_socket, samples) = socket_table(&config, &aggregated);
        assert!(!on_socket.is_empty());
        assert_same_but_times(
            &in_kernel,
            &on_socket,
            started..=ended,
            &format!("flags {flags}"),
        );
        for stat in SampleStat::ALL {
            assert_eq!(
                stats.sflow_samples(stat).count,
                samples[stat as usize],
                "{stat:?}"
            );
        }
        let records = stats.records(RecordStat::Parsed);
        assert_eq!(records.count, samples[SampleStat::Flow as usize]);
        // Every flow sample counted in its source's kernel state.
        let sources = kernel_sflow.sources();
        let kernel_samples: u64 = sources.iter().map(|(_, s)| s.samples).sum();
        assert_eq!(kernel_samples, samples[0] + samples[1]);
        kernel_sflow.set_clock().unwrap();
    }
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn renormalised_rates_apply_in_the_kernel_as_on_the_socket_path() {
    require_root();
    let config = config(FLAG_SCALE_SAMPLING | FLAG_SFLOW_RENORMALIZE);
    let mut plane = DataPlane::start(&[], &config).unwrap();
    let mut kernel_sflow = plane.take_sflow().unwrap();
    let mut drainer = plane.take_drainer().unwrap();
    let bytes = datagram(
        AGENT_V4.into(),
        1,
        vec![
            flow_sample(false, 1, 3, 100, vec![Packet::v4(true, 6, 1000).sampled()]),
            flow_sample(false, 1, 4, 100, vec![Packet::v4(false, 6, 500).sampled()]),
        ],
    )
    .encode();
    let mut decoded = Decoded::default();
    sflow::decode(&bytes, 0, 0, |_| None, &mut decoded).unwrap();
    let key = decoded.flow_samples[0].0;
    kernel_sflow.set_rates(&[(key, 150)]).unwrap();
    assert_eq!(
        plane
            .run_frame(&udp_v4_frame(SENDER, PORT, &bytes))
            .unwrap(),
        XDP_DROP
    );
    let mut in_kernel = Table::new();
    drainer
        .drain(|key, value| merge(&mut in_kernel, key, value))
        .unwrap();
    let bytes_by_dir: Vec<u64> = {
        let mut v: Vec<_> = in_kernel.values().map(|v| v.bytes).collect();
        v.sort();
        v
    };
    assert_eq!(
        bytes_by_dir,
        [50_000, 150_000],
        "source 3 renormalised, source 4 as sampled"
    );
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn a_tiny_map_loses_nothing_it_does_not_count() {
    require_root();
    let mut config = config(FLAG_SCALE_SAMPLING);
    config.aggregate_entries = 2;
    let mut plane = DataPlane::start(&[], &config).unwrap();
    let stats = plane.take_stats().unwrap();
    let mut drainer = plane.take_drainer().unwrap();
    // 24 samples from 24 subscribers: many more keys than the map holds
    // (and a frame BPF_PROG_TEST_RUN takes: it caps XDP frames near 3.5 KiB).
    let mut headers = vec![Vec::new(); 24];
    let samples: Vec<Sample<'_>> = headers
        .iter_mut()
        .enumerate()
        .map(|(i, h)| {
            let mut p = Packet::v4(true, 17, 100 + i as u16);
            p.src = std::net::Ipv4Addr::new(198, 18, 100, i as u8).into();
            flow_sample(
                true,
                i as u32,
                1,
                10,
                vec![p.raw_ethernet(&[TPID_8021Q], h)],
            )
        })
        .collect();
    let bytes = datagram(AGENT_V4.into(), 1, samples).encode();
    let verdict = plane
        .run_frame(&udp_v4_frame(SENDER, PORT, &bytes))
        .unwrap();
    let frames: Vec<_> = XdpStat::ALL
        .iter()
        .map(|&s| (s, stats.frames(s).count))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(verdict, XDP_DROP, "{} bytes: {frames:?}", bytes.len());
    let mut in_kernel = Table::new();
    drainer
        .drain(|key, value| merge(&mut in_kernel, key, value))
        .unwrap();
    let (on_socket, _) = socket_table(&config, &[bytes]);
    let sum = |t: &Table| t.values().map(|v| v.bytes).sum::<u64>();
    let parsed = stats.records(RecordStat::Parsed);
    let aggregated = stats.records(RecordStat::Aggregated);
    let overflowed = stats.records(RecordStat::Overflowed);
    let dropped = stats.records(RecordStat::Dropped);
    assert_eq!(parsed.count, 24);
    assert!(overflowed.count > 0, "the map filled");
    assert_eq!(aggregated.count + overflowed.count + dropped.count, 24);
    assert_eq!(sum(&in_kernel) + dropped.bytes, sum(&on_socket));
    assert_eq!(sum(&on_socket), parsed.bytes);
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn the_exporter_allow_list_checks_the_agent_not_the_sender() {
    require_root();
    let mut config = config(FLAG_SCALE_SAMPLING);
    config.exporters = vec![AGENT_V4.into()];
    let plane = DataPlane::start(&[], &config).unwrap();
    let shapes = every_shape();
    let (_, from_v4_agent) = &shapes[0];
    let (_, from_v6_agent) = shapes
        .iter()
        .find(|(n, _)| n.starts_with("agent1"))
        .unwrap();
    assert_eq!(
        plane
            .run_frame(&udp_v4_frame(SENDER, PORT, from_v4_agent))
            .unwrap(),
        XDP_DROP
    );
    assert_eq!(
        plane
            .run_frame(&udp_v4_frame(SENDER, PORT, from_v6_agent))
            .unwrap(),
        XDP_DROP
    );
    let mut plane = plane;
    let stats = plane.take_stats().unwrap();
    assert_eq!(stats.frames(XdpStat::DropUnknownExporter).count, 1);
    assert_eq!(stats.frames(XdpStat::DropSflowAggregated).count, 1);
}

/// Hostile datagrams: every 32-bit word of two datagrams (one IPv4 agent
/// with Ethernet headers under two VLAN tags, compact samples; one IPv6
/// agent with bare headers and sampled records, expanded samples) set to
/// values that make lengths, counts and header lengths lie. Whatever the
/// kernel aggregates, the socket path decodes to exactly the same; what it
/// passes up moves no record counter. Plus a third VLAN tag, which both
/// paths count as a sample without an IP packet.
#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn hostile_datagrams_never_aggregate_in_the_kernel_what_the_socket_path_would_not() {
    require_root();
    let config = config(FLAG_SCALE_SAMPLING);
    let mut plane = DataPlane::start(&[], &config).unwrap();
    let stats = plane.take_stats().unwrap();
    let mut drainer = plane.take_drainer().unwrap();
    let shapes = every_shape();
    let pick = |name: &str| shapes.iter().find(|(n, _)| n == name).unwrap().1.clone();
    let bases = [
        pick("agent0-expanded0-ethernet-2tags"),
        pick("agent1-expanded1-bare-and-sampled"),
    ];
    let mut hostile = Vec::new();
    for base in &bases {
        for at in (0..base.len()).step_by(4) {
            let word = u32::from_be_bytes(base[at..at + 4].try_into().unwrap());
            for value in [
                0,
                1,
                0xffff_ffff,
                word.wrapping_add(4),
                word.wrapping_sub(4),
                word + 1,
            ] {
                let mut d = base.clone();
                d[at..at + 4].copy_from_slice(&value.to_be_bytes());
                hostile.push(d);
            }
        }
        for cut in [8, base.len() / 2, base.len() - 4] {
            hostile.push(base[..cut].to_vec());
        }
    }
    let mut header = Vec::new();
    let three_tags = Packet::v4(true, 6, 1500).raw_ethernet(&[0x88a8, 0x8100, 0x8100], &mut header);
    let nested = datagram(
        AGENT_V4.into(),
        1,
        vec![flow_sample(false, 1, 3, 1, vec![three_tags])],
    )
    .encode();
    hostile.push(nested.clone());

    let (mut accepted, mut aggregated, mut passed) = (Vec::new(), 0, 0);
    let started = now_ms();
    for d in &hostile {
        let parsed_before = stats.records(RecordStat::Parsed).count;
        let verdict = plane.run_frame(&udp_v4_frame(SENDER, PORT, d)).unwrap();
        let mut decoded = Decoded::default();
        let socket_ok = sflow::decode(d, config.flags, 0, |_| None, &mut decoded).is_ok();
        if verdict == XDP_DROP {
            assert!(
                socket_ok,
                "the kernel aggregated what the socket path rejects: {d:02x?}"
            );
            accepted.push(d.clone());
            aggregated += 1;
        } else {
            assert_eq!(
                stats.records(RecordStat::Parsed).count,
                parsed_before,
                "{d:02x?}"
            );
            passed += 1;
        }
    }
    let ended = now_ms();
    eprintln!(
        "{} hostile datagrams: {aggregated} aggregated in the kernel, {passed} passed up",
        hostile.len()
    );
    assert!(
        aggregated > 50 && passed > 300,
        "both outcomes are exercised"
    );
    let mut in_kernel = Table::new();
    drainer
        .drain(|key, value| merge(&mut in_kernel, key, value))
        .unwrap();
    let (on_socket, samples) = socket_table(&config, &accepted);
    assert_same_but_times(&in_kernel, &on_socket, started..=ended, "hostile");
    assert_eq!(
        stats.sflow_samples(SampleStat::NoIpPacket).count,
        samples[SampleStat::NoIpPacket as usize]
    );
    assert!(
        accepted.contains(&nested),
        "three tags: aggregated as a sample without IP"
    );
    assert!(stats.frames(XdpStat::PassSflowInvalid).count > 0);
}
