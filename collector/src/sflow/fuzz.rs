//! The sFlow fuzz targets (`collector/fuzz`, `cargo xtask fuzz`), each
//! panicking when an invariant does not hold: `sflow_decode`, the decoder
//! on arbitrary bytes, and `sflow_kernel`, the XDP program's model
//! (`kernel_model`) against the decoder. Their committed seeds are the
//! datagrams of every shape (`fixtures::every_shape`) and, for
//! `sflow_kernel`, hostile ones at the kernel's bounds, written and checked
//! by the tests below; `tests/fuzz_xdp.rs` runs `sflow_kernel`'s inputs
//! through the real XDP program.

use flowtally_common::{
    agg::{FLAG_SCALE_SAMPLING, FLAG_SFLOW_RENORMALIZE, scale},
    sflow::{MAX_DATAGRAM_LEN, MAX_RECORDS, MAX_SAMPLES, SampleStat, SourceKey},
};

use super::{
    decode::{Decoded, decode},
    kernel_model::{KernelVerdict, kernel_walk},
    wire::{Datagram, Sample},
};

/// Arrival time of every fuzzed datagram (the kernel's is its clock's).
pub const TIME_MS: u64 = 1_700_000_000_000;

/// Parsing accepts exactly what decoding accepts; what parses encodes to
/// bytes that parse back to the same datagram (and encode the same again);
/// decoding yields one record per flow sample with an IP packet, every
/// sample counted once, and scaling multiplies by the sample's rate.
pub fn decode_round_trip(data: &[u8]) {
    let parsed = Datagram::parse(data);
    let mut scaled = Decoded::default();
    let decoded = decode(data, FLAG_SCALE_SAMPLING, 7, |_| None, &mut scaled);
    assert_eq!(parsed.as_ref().err(), decoded.err().as_ref());
    let Ok(parsed) = parsed else {
        return;
    };
    let bytes = parsed.encode();
    assert_eq!(bytes.len(), data.len(), "XDR lengths are exact");
    let again = Datagram::parse(&bytes).expect("an encoded datagram parses");
    assert_eq!(again, parsed);
    assert_eq!(again.encode(), bytes);

    let flows = parsed
        .samples
        .iter()
        .filter(|s| matches!(s, Sample::Flow { .. }))
        .count() as u64;
    let counted: u64 = scaled.samples.iter().sum();
    assert_eq!(counted, parsed.samples.len() as u64);
    assert_eq!(scaled.flow_samples.len() as u64, flows);
    assert_eq!(
        scaled.samples[SampleStat::Flow as usize] + scaled.samples[SampleStat::NoIpPacket as usize],
        flows
    );
    assert_eq!(
        scaled.records.len() as u64,
        scaled.samples[SampleStat::Flow as usize]
    );
    let mut raw = Decoded::default();
    decode(data, 0, 7, |_| None, &mut raw).expect("decodes as before");
    // Scaled by the sample's rate: packets are the rate (1 when 0 or 1),
    // bytes the unscaled bytes times it.
    let rates: Vec<u64> = scaled
        .flow_samples
        .iter()
        .map(|(_, sample)| scale(1, sample.sampling_rate))
        .collect();
    assert_eq!(raw.records.len(), scaled.records.len());
    for (r, s) in raw.records.iter().zip(&scaled.records) {
        assert_eq!((r.src, r.dst, r.protocol), (s.src, s.dst, s.protocol));
        assert_eq!((r.time_ms, r.packets), (7, 1));
        assert!(
            rates.contains(&s.packets),
            "{s:?} scaled by no sample's rate"
        );
        assert_eq!(s.bytes, scale(r.bytes, s.packets as u32));
    }
}

/// The XDP program's model against the socket path: an input is a
/// selector byte (the flags, see [`parity_flags`], and renormalised rates,
/// see [`renormalised_rate`]) and a datagram. What the kernel aggregates,
/// the socket path decodes to exactly the same records, sample counts and
/// source states; what it calls invalid, the socket path rejects; what it
/// passes up as beyond its bounds, the socket path rejects or finds beyond
/// them (longer than `MAX_DATAGRAM_LEN`, more than `MAX_SAMPLES` samples or
/// `MAX_RECORDS` flow records, or counter samples): a datagram the kernel
/// could take never goes up.
pub fn kernel_parity(data: &[u8]) {
    let Some((&selector, datagram)) = data.split_first() else {
        return;
    };
    let flags = parity_flags(selector);
    let rate = |key: &SourceKey| renormalised_rate(selector, key);
    let model = kernel_walk(datagram, flags, TIME_MS, rate, selector);
    let mut decoded = Decoded::default();
    let socket = decode(datagram, flags, TIME_MS, rate, &mut decoded);
    let Some(model) = model else {
        assert!(socket.is_err(), "not sFlow v5 to the kernel, but decoded");
        return;
    };
    match model {
        KernelVerdict::Aggregated(kernel) => {
            socket.expect("what the kernel aggregates, the socket path decodes");
            assert_eq!(kernel.agent, decoded.agent);
            assert_eq!(kernel.records, decoded.records, "records differ");
            assert_eq!(kernel.samples, decoded.samples, "sample counts differ");
            assert_eq!(kernel.flow_samples, decoded.flow_samples);
        }
        KernelVerdict::Invalid => {
            assert!(
                socket.is_err(),
                "the kernel calls a decodable datagram invalid"
            );
        }
        KernelVerdict::ToUser => {
            if socket.is_ok() {
                let parsed = Datagram::parse(datagram).expect("decoded, so parses");
                assert!(
                    beyond_kernel_bounds(datagram.len(), &parsed),
                    "a datagram within the kernel's bounds went up"
                );
            }
        }
    }
}

/// Whether a well-formed datagram is one the kernel passes up by design.
fn beyond_kernel_bounds(len: usize, parsed: &Datagram<'_>) -> bool {
    let records: usize = parsed
        .samples
        .iter()
        .map(|s| match s {
            Sample::Flow { records, .. } => records.len(),
            _ => 0,
        })
        .sum();
    len > MAX_DATAGRAM_LEN
        || parsed.samples.len() > MAX_SAMPLES as usize
        || records > MAX_RECORDS as usize
        || parsed
            .samples
            .iter()
            .any(|s| matches!(s, Sample::Counters { .. }))
}

/// The record flags a [`kernel_parity`] input's first byte selects.
pub fn parity_flags(selector: u8) -> u32 {
    [
        0,
        FLAG_SCALE_SAMPLING,
        FLAG_SCALE_SAMPLING | FLAG_SFLOW_RENORMALIZE,
        FLAG_SFLOW_RENORMALIZE,
    ][usize::from(selector & 3)]
}

/// The renormalised sampling rate a [`kernel_parity`] input's selector
/// gives a source (the kernel's `SFLOW_RATES`): sources with an odd id
/// have one, from the selector's upper bits.
pub fn renormalised_rate(selector: u8, key: &SourceKey) -> Option<u32> {
    (key.source_id & 1 == 1).then_some(u32::from(selector >> 2) * 37 + 1)
}

#[cfg(test)]
mod tests {
    use std::{env, fs, path::PathBuf};

    use flowtally_common::sflow::{HEADER_ETHERNET, HEADER_IPV4, RECORD_IPV4};

    use super::*;
    use crate::sflow::{
        fixtures::{
            AGENT_V4, AGENT_V6, EXTENDED_SWITCH, Packet, TPID_8021AD, TPID_8021Q, datagram,
            every_shape, flow_sample,
        },
        wire::FlowData,
    };

    fn seed_dir(target: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds")
            .join(target)
    }

    /// `FLOWTALLY_WRITE_SEEDS=1 cargo test -p flowtally seeds` rewrites them.
    fn check_committed(target: &str, seeds: &[(String, Vec<u8>)]) {
        let write = env::var_os("FLOWTALLY_WRITE_SEEDS").is_some();
        let dir = seed_dir(target);
        for (i, (_, seed)) in seeds.iter().enumerate() {
            let path = dir.join(format!("seed-{i:02}"));
            if write {
                fs::create_dir_all(&dir).unwrap();
                fs::write(&path, seed).unwrap();
            }
            let committed = fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (FLOWTALLY_WRITE_SEEDS=1)", path.display()));
            assert_eq!(&committed, seed, "{} is stale", path.display());
        }
    }

    /// Every committed input (seeds and the cases fuzzing found), whole
    /// and cut short.
    fn committed_inputs(target: &str) -> Vec<Vec<u8>> {
        fs::read_dir(seed_dir(target))
            .unwrap()
            .map(|entry| fs::read(entry.unwrap().path()).unwrap())
            .collect()
    }

    #[test]
    fn committed_sflow_seeds_are_the_ones_built_here() {
        check_committed("sflow_decode", &every_shape());
    }

    #[test]
    fn committed_sflow_inputs_hold_every_invariant() {
        let inputs = committed_inputs("sflow_decode");
        for input in &inputs {
            decode_round_trip(input);
            for cut in [input.len() / 2, input.len().saturating_sub(4)] {
                decode_round_trip(&input[..cut]);
            }
        }
        assert!(inputs.len() >= 16, "{} inputs", inputs.len());
    }

    /// A raw IPv4 header record whose packet is a later fragment.
    fn fragment(header: &mut Vec<u8>) -> FlowData<'_> {
        let packet = Packet::v4(true, 17, 576);
        let mut bytes = packet.ip_header();
        bytes[6..8].copy_from_slice(&0x00b9u16.to_be_bytes());
        *header = bytes;
        FlowData::RawHeader {
            protocol: HEADER_IPV4,
            frame_length: 594,
            stripped: 4,
            header,
        }
    }

    /// Datagrams at the kernel's bounds and just past them, and malformed
    /// ones the socket path rejects, named.
    fn hostile() -> Vec<(&'static str, Vec<u8>)> {
        let agent = AGENT_V4.into();
        let up = Packet::v4(true, 6, 1500);
        let skip = |format| Sample::Other { format, data: &[] };
        let empty_record = FlowData::Other {
            format: 1001,
            data: &[],
        };
        let many_samples = |n: u32| {
            let samples = (0..n)
                .map(|i| flow_sample(false, i, 3, 10, vec![up.sampled()]))
                .collect();
            datagram(agent, 1, samples).encode()
        };
        let many_records = |n: usize| {
            let mut records = vec![empty_record.clone(); n - 1];
            records.push(up.sampled());
            datagram(agent, 1, vec![flow_sample(true, 1, 3, 10, records)]).encode()
        };
        let (mut eth, mut tags3, mut frag) = Default::default();
        let three_tags = up.raw_ethernet(&[TPID_8021AD, TPID_8021Q, TPID_8021Q], &mut tags3);
        let mut arp = up.frame(&[]);
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        let arp_frame = FlowData::RawHeader {
            protocol: HEADER_ETHERNET,
            frame_length: 60,
            stripped: 4,
            header: &arp,
        };
        // A header longer than the window the kernel reads (128 bytes).
        let mut long = up.frame(&[TPID_8021Q]);
        long.resize(202, 0xab);
        let long_header = FlowData::RawHeader {
            protocol: HEADER_ETHERNET,
            frame_length: 1518,
            stripped: 4,
            header: &long,
        };
        let one =
            |records| datagram(agent, 1, vec![flow_sample(false, 7, 3, 64, records)]).encode();
        let ethernet = up.raw_ethernet(&[TPID_8021Q], &mut eth);
        let base = one(vec![EXTENDED_SWITCH, ethernet.clone()]);
        let mut out = vec![
            ("32-samples", many_samples(MAX_SAMPLES)),
            ("33-samples", many_samples(MAX_SAMPLES + 1)),
            ("128-records", many_records(MAX_RECORDS as usize)),
            ("129-records", many_records(MAX_RECORDS as usize + 1)),
            ("three-tags", one(vec![three_tags])),
            ("arp", one(vec![arp_frame])),
            ("fragment", one(vec![fragment(&mut frag)])),
            ("header-past-window", one(vec![long_header])),
            (
                "sampled-ipv4-short",
                one(vec![FlowData::Other {
                    format: RECORD_IPV4,
                    data: &[0; 28],
                }]),
            ),
            (
                "enterprise-samples",
                datagram(agent, 1, vec![skip(4300 << 12 | 1), skip(2 << 12 | 3)]).encode(),
            ),
            ("no-samples", datagram(agent, 1, vec![]).encode()),
            ("tiny", vec![0, 0, 0, 5, 0, 0]),
            ("base", base.clone()),
        ];
        let v6 = datagram(AGENT_V6.into(), 1, vec![]).encode();
        out.push(("ipv6-agent-cut", v6[..36].to_vec()));
        let mut trailing = base.clone();
        trailing.extend_from_slice(&[0; 4]);
        out.push(("trailing-word", trailing));
        // Words of the base that lie: the sample's length, its record
        // count, the second record's length and the raw header's length.
        for (name, at, value) in [
            ("sample-length-beyond", 32, 0x1000),
            ("sample-length-misaligned", 32, 0x4e),
            ("record-count-high", 64, 3),
            ("record-count-zero", 64, 0),
            ("record-length-short", 96, 8),
            ("header-length-beyond", 112, 0xffff_fff0),
            ("header-length-short", 112, 20),
        ] {
            let mut lying = base.clone();
            lying[at..at + 4].copy_from_slice(&u32::to_be_bytes(value));
            out.push((name, lying));
        }
        out
    }

    /// Seeds of `sflow_kernel`: every shape under varied selectors, and the
    /// hostile datagrams above.
    fn kernel_seeds() -> Vec<(String, Vec<u8>)> {
        let shapes = every_shape().into_iter();
        let hostile = hostile().into_iter().map(|(n, d)| (n.to_owned(), d));
        shapes
            .chain(hostile)
            .enumerate()
            .map(|(i, (name, d))| (name, [&[(i * 5) as u8][..], &d].concat()))
            .collect()
    }

    #[test]
    fn committed_sflow_kernel_seeds_are_the_ones_built_here() {
        check_committed("sflow_kernel", &kernel_seeds());
    }

    #[test]
    fn hostile_seeds_reach_every_kernel_verdict() {
        let verdict = |name: &str| {
            let (_, d) = kernel_seeds().into_iter().find(|(n, _)| n == name).unwrap();
            match kernel_walk(&d[1..], 0, 0, |_| None, 0).unwrap() {
                KernelVerdict::Aggregated(a) => format!("aggregated {:?}", a.samples),
                other => format!("{other:?}"),
            }
        };
        for (name, want) in [
            ("32-samples", "aggregated [32, 0, 0, 0]"),
            ("33-samples", "ToUser"),
            ("128-records", "aggregated [1, 0, 0, 0]"),
            ("129-records", "ToUser"),
            ("three-tags", "aggregated [0, 1, 0, 0]"),
            ("arp", "aggregated [0, 1, 0, 0]"),
            ("fragment", "aggregated [1, 0, 0, 0]"),
            ("header-past-window", "aggregated [1, 0, 0, 0]"),
            ("enterprise-samples", "aggregated [0, 0, 2, 0]"),
            ("tiny", "ToUser"),
            ("sampled-ipv4-short", "Invalid"),
            ("trailing-word", "Invalid"),
            ("record-count-high", "Invalid"),
            ("header-length-beyond", "Invalid"),
        ] {
            assert_eq!(verdict(name), want, "{name}");
        }
    }

    #[test]
    fn committed_sflow_kernel_inputs_hold_every_invariant() {
        let inputs = committed_inputs("sflow_kernel");
        for input in &inputs {
            kernel_parity(input);
            for cut in [input.len() / 2, input.len().saturating_sub(4)] {
                kernel_parity(&input[..cut]);
            }
        }
        assert!(inputs.len() >= 30, "{} inputs", inputs.len());
    }
}
