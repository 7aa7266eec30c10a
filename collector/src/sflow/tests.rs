//! The decoder against datagrams of every shape, and against hostile ones.

use std::net::IpAddr;

use flowtally_common::{
    agg::{FLAG_SCALE_SAMPLING, FLAG_SFLOW_RENORMALIZE, ip_from_v4},
    sflow::SampleStat,
};

use super::{
    fixtures::{self, Packet, datagram, every_shape, flow_sample},
    wire::{Datagram, FlowData, Invalid, Sample},
    *,
};
use crate::ip::to_ip;

const NOW_MS: u64 = 1_700_000_000_123;

fn decoded(bytes: &[u8], flags: u32) -> Result<Decoded, Invalid> {
    let mut out = Decoded::default();
    decode(bytes, flags, NOW_MS, |_| None, &mut out).map(|()| out)
}

#[test]
fn every_shape_encodes_parses_and_encodes_again_byte_for_byte() {
    let shapes = every_shape();
    assert!(shapes.len() >= 16);
    for (name, bytes) in shapes {
        let parsed = Datagram::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(parsed.encode(), bytes, "{name}");
    }
}

#[test]
fn each_flow_sample_becomes_one_record_of_its_ip_length_times_the_rate() {
    for (name, bytes) in every_shape() {
        let d = decoded(&bytes, FLAG_SCALE_SAMPLING).unwrap();
        let parsed = Datagram::parse(&bytes).unwrap();
        let flow_samples = parsed
            .samples
            .iter()
            .filter(|s| matches!(s, Sample::Flow { .. }))
            .count();
        assert_eq!(d.records.len(), flow_samples, "{name}");
        assert_eq!(d.flow_samples.len(), flow_samples, "{name}");
        assert_eq!(d.samples[SampleStat::Flow as usize], flow_samples as u64);
        assert_eq!(d.agent, to_ip(parsed.agent));
        for r in &d.records {
            assert_eq!(r.time_ms, NOW_MS);
            assert!(r.packets == 1 || r.packets == 512, "{name}: {r:?}");
            assert!(
                [1500, 28, 1280, 60].contains(&(r.bytes / r.packets)),
                "{name}: {r:?}"
            );
        }
    }
}

#[test]
fn an_ethernet_sample_reads_like_the_packet_it_holds() {
    let p = Packet::v4(false, 17, 28);
    let mut header = Vec::new();
    let record = p.raw_ethernet(&[fixtures::TPID_8021AD, fixtures::TPID_8021Q], &mut header);
    let bytes = datagram(
        fixtures::AGENT_V4.into(),
        1,
        vec![flow_sample(true, 9, 3, 100, vec![record])],
    )
    .encode();
    let d = decoded(&bytes, FLAG_SCALE_SAMPLING).unwrap();
    let r = d.records[0];
    assert_eq!(r.src, ip_from_v4(fixtures::PEER_V4.octets()));
    assert_eq!(r.dst, ip_from_v4(fixtures::SUBSCRIBER_V4.octets()));
    assert_eq!((r.src_port, r.dst_port, r.protocol), (443, 40_000, 17));
    assert_eq!(
        (r.bytes, r.packets, r.input_if, r.output_if),
        (2800, 100, 3, 2)
    );
    let unscaled = decoded(&bytes, 0).unwrap().records[0];
    assert_eq!((unscaled.bytes, unscaled.packets), (28, 1));
    let (key, sample) = d.flow_samples[0];
    assert_eq!(
        (key.agent, key.source_id, sample.sequence),
        (to_ip(fixtures::AGENT_V4.into()), 3, 9)
    );
}

#[test]
fn renormalised_rates_replace_the_samples_own_only_when_switched_on() {
    let bytes = datagram(
        fixtures::AGENT_V4.into(),
        1,
        vec![flow_sample(
            false,
            9,
            3,
            100,
            vec![Packet::v4(true, 6, 1000).sampled()],
        )],
    )
    .encode();
    let rate = |_: &_| Some(125);
    let mut out = Decoded::default();
    decode(&bytes, FLAG_SCALE_SAMPLING, NOW_MS, rate, &mut out).unwrap();
    assert_eq!(out.records[0].bytes, 100_000);
    decode(
        &bytes,
        FLAG_SCALE_SAMPLING | FLAG_SFLOW_RENORMALIZE,
        NOW_MS,
        rate,
        &mut out,
    )
    .unwrap();
    assert_eq!(out.records[0].bytes, 125_000);
}

#[test]
fn samples_without_an_ip_packet_and_other_formats_are_counted_not_billed() {
    let arp = FlowData::RawHeader {
        protocol: 1,
        frame_length: 64,
        stripped: 4,
        header: &[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06, 0, 1,
        ],
    };
    let token_ring = FlowData::RawHeader {
        protocol: 9,
        frame_length: 64,
        stripped: 0,
        header: &[0; 40],
    };
    // The first packet record decides, even when a later one is IP.
    let samples = vec![
        flow_sample(
            false,
            1,
            3,
            1,
            vec![arp, Packet::v4(true, 6, 100).sampled()],
        ),
        flow_sample(false, 2, 3, 1, vec![token_ring]),
        flow_sample(false, 3, 3, 1, vec![fixtures::EXTENDED_SWITCH]),
        Sample::Other {
            format: 5,
            data: &[],
        },
        fixtures::counter_sample(false, 1, 3, 10, 20),
    ];
    let bytes = datagram(fixtures::AGENT_V6.into(), 1, samples).encode();
    let d = decoded(&bytes, 0).unwrap();
    assert!(d.records.is_empty());
    assert_eq!(d.flow_samples.len(), 3);
    assert_eq!(d.samples, [0, 3, 1, 1]);
    assert_eq!(
        (
            d.counters[0].if_index,
            d.counters[0].in_octets,
            d.counters[0].out_octets
        ),
        (3, 10, 20)
    );
}

fn sample_bytes() -> Vec<u8> {
    datagram(
        IpAddr::from(fixtures::AGENT_V4),
        1,
        vec![
            flow_sample(false, 1, 3, 1, vec![Packet::v4(true, 6, 100).sampled()]),
            fixtures::counter_sample(true, 1, 3, 10, 20),
        ],
    )
    .encode()
}

#[test]
fn every_truncation_is_rejected_whole() {
    let bytes = sample_bytes();
    for len in 0..bytes.len() {
        let err = decoded(&bytes[..len], FLAG_SCALE_SAMPLING).unwrap_err();
        assert!(
            matches!(err, Invalid::Truncated | Invalid::LengthBeyond),
            "{len}: {err:?}"
        );
    }
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0; 4]);
    assert_eq!(
        decoded(&longer, 0),
        Err(Invalid::LengthMismatch),
        "trailing bytes"
    );
}

#[test]
fn lying_lengths_and_counts_are_rejected_by_cause() {
    let bytes = sample_bytes();
    let set = |at: usize, value: u32| {
        let mut b = bytes.clone();
        b[at..at + 4].copy_from_slice(&value.to_be_bytes());
        decoded(&b, 0)
    };
    // Header: version 0..4, agent type 4..8, agent 8..12, sub-agent,
    // sequence, uptime, sample count at 24; first sample at 28.
    assert_eq!(set(0, 4), Err(Invalid::BadVersion));
    assert_eq!(set(4, 3), Err(Invalid::BadAgentType));
    assert_eq!(set(24, 3), Err(Invalid::Truncated), "a sample too many");
    assert_eq!(
        set(24, u32::MAX),
        Err(Invalid::Truncated),
        "an absurd count"
    );
    assert_eq!(set(24, 1), Err(Invalid::LengthMismatch), "a sample too few");
    assert_eq!(set(32, 2), Err(Invalid::Misaligned));
    assert_eq!(set(32, 4000), Err(Invalid::LengthBeyond));
    // The flow sample's record count (after 7 words) and its record's length.
    assert_eq!(set(36 + 28, 2), Err(Invalid::Truncated));
    assert_eq!(set(36 + 28, 0), Err(Invalid::LengthMismatch));
    assert_eq!(set(36 + 36, 36), Err(Invalid::LengthBeyond));
    assert_eq!(
        set(36 + 36, 28),
        Err(Invalid::LengthMismatch),
        "a short IPv4 record"
    );
    // A raw header whose header length runs past its record.
    let mut header = Vec::new();
    let p = Packet::v4(true, 6, 100);
    let raw = datagram(
        fixtures::AGENT_V4.into(),
        1,
        vec![flow_sample(false, 1, 3, 1, vec![p.raw_ip(&mut header)])],
    )
    .encode();
    let mut lying = raw.clone();
    // The header length word: sample at 28, its fixed part 8 + 28 + 4, the
    // record's format and length 8, then protocol, frame length, stripped.
    let at = 28 + 8 + 32 + 8 + 12;
    lying[at..at + 4].copy_from_slice(&200u32.to_be_bytes());
    assert_eq!(decoded(&lying, 0), Err(Invalid::LengthMismatch));
    assert!(decoded(&raw, 0).is_ok());
}

#[test]
fn rejection_labels_are_distinct_and_prefixed() {
    let labels: std::collections::BTreeSet<_> = Invalid::ALL.iter().map(|e| e.as_str()).collect();
    assert_eq!(labels.len(), Invalid::ALL.len());
    assert!(labels.iter().all(|l| l.starts_with("sflow_")));
}
