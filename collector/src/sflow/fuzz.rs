//! The `sflow_decode` fuzz target (`collector/fuzz`, `cargo xtask fuzz`):
//! the sFlow decoder on arbitrary bytes, panicking when an invariant does
//! not hold. Its committed seeds are the datagrams of every shape
//! (`fixtures::every_shape`), written and checked by the tests below.

use flowtally_common::{
    agg::{FLAG_SCALE_SAMPLING, scale},
    sflow::SampleStat,
};

use super::{
    decode::{Decoded, decode},
    wire::{Datagram, Sample},
};

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

#[cfg(test)]
mod tests {
    use std::{env, fs, path::PathBuf};

    use super::*;
    use crate::sflow::fixtures::every_shape;

    fn seed_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/sflow_decode")
    }

    /// `FLOWTALLY_WRITE_SEEDS=1 cargo test -p flowtally seeds` rewrites them.
    #[test]
    fn committed_sflow_seeds_are_the_ones_built_here() {
        let write = env::var_os("FLOWTALLY_WRITE_SEEDS").is_some();
        for (i, (_, seed)) in every_shape().iter().enumerate() {
            let path = seed_dir().join(format!("seed-{i:02}"));
            if write {
                fs::create_dir_all(seed_dir()).unwrap();
                fs::write(&path, seed).unwrap();
            }
            let committed = fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (FLOWTALLY_WRITE_SEEDS=1)", path.display()));
            assert_eq!(&committed, seed, "{} is stale", path.display());
        }
    }

    #[test]
    fn committed_sflow_inputs_hold_every_invariant() {
        let mut n = 0;
        for entry in fs::read_dir(seed_dir()).unwrap() {
            let input = fs::read(entry.unwrap().path()).unwrap();
            decode_round_trip(&input);
            for cut in [input.len() / 2, input.len().saturating_sub(4)] {
                decode_round_trip(&input[..cut]);
            }
            n += 1;
        }
        assert!(n >= 16, "{n} inputs");
    }
}
