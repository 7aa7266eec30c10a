//! The committed inputs (seeds, and cases fuzzing found) of the fuzz
//! targets that model the kernel, `template_compiler` (v9/IPFIX) and
//! `sflow_kernel`, through the real XDP program (BPF_PROG_TEST_RUN): the
//! kernel's verdict is the one the target's model of it gives, and what
//! the kernel aggregates is what the socket path aggregates from the same
//! export. This ties the models the fuzzer runs to the kernel.

mod support;

use std::{
    collections::BTreeMap,
    fs,
    path::PathBuf,
    time::{SystemTime, UNIX_EPOCH},
};

use flowtally::{
    aggregate::{Aggregator, Table, merge},
    netflow::{
        TemplateCache,
        fuzz::{EXPORTER, KernelVerdict, LIMITS, NOW_MS, datagrams, kernel_walk, parity_flags},
    },
    sflow::{self, Decoded, kernel_model},
    subscribers::SubscriberNets,
    xdp::DataPlane,
};
use flowtally_common::{
    RecordStat, XdpStat,
    agg::ip_from_v4,
    sflow::{PORT as SFLOW_PORT, SampleStat},
};
use support::{XDP_DROP, XDP_PASS, frames::udp_v4_frame, kernel_config, require_root};

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut inputs: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(path).unwrap())
        })
        .collect();
    inputs.sort();
    inputs
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn the_kernel_does_what_the_fuzzed_model_of_it_does() {
    require_root();
    let exporter = ip_from_v4(EXPORTER);
    let inputs = inputs("template_compiler");
    assert!(inputs.len() >= 6, "{} inputs", inputs.len());
    let mut aggregated = 0;
    for (name, input) in inputs {
        let Some((&selector, rest)) = input.split_first() else {
            continue;
        };
        let flags = parity_flags(selector);
        let parts = datagrams(rest);
        let Some((export, teach)) = parts.split_last() else {
            continue;
        };
        let mut config = kernel_config(&[2055], &["198.18.100.0/24", "2001:db8::/32"]);
        config.flags = flags;
        let mut plane = DataPlane::start(&[], &config).expect("the program loads");
        let mut cache = TemplateCache::new(LIMITS);
        for datagram in teach {
            let _ = cache.decode(&exporter, datagram, NOW_MS, flags, &mut Vec::new());
        }
        let mut kernel = plane.take_templates().unwrap();
        for (key, template) in cache.compiled() {
            kernel.install(&key, &template).unwrap();
        }
        let compiled: Vec<_> = cache.compiled().collect();
        let lookup = |key: &_| compiled.iter().find(|(k, _)| k == key).map(|(_, t)| *t);
        let Some(model) = kernel_walk(lookup, &exporter, export, flags, selector) else {
            continue; // neither v9 nor IPFIX
        };
        let stats = plane.take_stats().unwrap();
        let frame = udp_v4_frame(EXPORTER, 2055, export);
        let verdict = plane
            .run_frame(&frame)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = match &model {
            KernelVerdict::Aggregated(_) => XdpStat::DropTemplatedAggregated,
            KernelVerdict::ToUser | KernelVerdict::TemplatesToUser => XdpStat::PassTemplatedToUser,
            KernelVerdict::Invalid => XdpStat::PassTemplatedInvalid,
        };
        assert_eq!(stats.frames(expected).count, 1, "{name}: {model:?}");
        let KernelVerdict::Aggregated(records) = model else {
            assert_eq!(verdict, XDP_PASS, "{name}");
            continue;
        };
        assert_eq!(verdict, XDP_DROP, "{name}");
        assert_eq!(
            stats.records(RecordStat::Parsed).count,
            records.len() as u64
        );

        let mut in_kernel = Table::new();
        plane
            .take_drainer()
            .unwrap()
            .drain(|key, value| merge(&mut in_kernel, key, value))
            .unwrap();
        let mut socket = Vec::new();
        cache
            .decode(&exporter, export, NOW_MS, flags, &mut socket)
            .unwrap();
        assert_eq!(
            socket, records,
            "{name}: the model reads what the socket path reads"
        );
        let mut aggregator = Aggregator::new(
            config.profile,
            flags,
            SubscriberNets::new(&config.subscriber_networks),
        );
        for record in &socket {
            aggregator.add(&exporter, record);
        }
        assert!(in_kernel == aggregator.take(), "{name}: tables differ");
        aggregated += 1;
    }
    assert!(
        aggregated >= 6,
        "{aggregated} inputs aggregated in the kernel"
    );
}

/// BPF_PROG_TEST_RUN's largest XDP frame: a page less the headroom and
/// `skb_shared_info` (x86_64).
const TEST_RUN_MAX_FRAME: usize = 4096 - 256 - 320;

/// The UDP source of the replayed sFlow datagrams: not the agent, which
/// the datagram names.
const SFLOW_SENDER: [u8; 4] = [198, 18, 9, 9];

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn the_kernel_walks_sflow_as_the_fuzzed_model_does() {
    require_root();
    use kernel_model::KernelVerdict as Sflow;
    use sflow::fuzz::{TIME_MS, parity_flags, renormalised_rate};
    let inputs = inputs("sflow_kernel");
    assert!(inputs.len() >= 30, "{} inputs", inputs.len());
    let mut verdicts = BTreeMap::new();
    // One program per set of flags the selectors pick.
    for flags_of in 0..4u8 {
        let flags = parity_flags(flags_of);
        let mut config = kernel_config(&[SFLOW_PORT], &["198.18.100.0/24", "2001:db8:100::/48"]);
        // One bucket a day: the kernel times records at arrival.
        config.profile.bucket_ms = 86_400_000;
        config.flags = flags;
        let mut plane = DataPlane::start(&[], &config).expect("the program loads");
        let stats = plane.take_stats().unwrap();
        let mut kernel_sflow = plane.take_sflow().unwrap();
        let mut drainer = plane.take_drainer().unwrap();
        let mut samples_by_source = BTreeMap::new();
        for (name, input) in inputs
            .iter()
            .filter(|(_, i)| i.first().map(|s| s & 3) == Some(flags_of))
        {
            let (&selector, datagram) = input.split_first().unwrap();
            let rate = |key: &_| renormalised_rate(selector, key);
            let Some(model) = kernel_model::kernel_walk(datagram, flags, TIME_MS, rate, selector)
            else {
                continue; // not sFlow v5 to the kernel
            };
            let frame = udp_v4_frame(SFLOW_SENDER, SFLOW_PORT, datagram);
            if frame.len() > TEST_RUN_MAX_FRAME {
                eprintln!("{name}: a {}-byte frame, too long to test-run", frame.len());
                continue;
            }
            if let Sflow::Aggregated(a) = &model {
                let rates: Vec<_> = a
                    .flow_samples
                    .iter()
                    .filter_map(|(key, _)| Some((*key, rate(key)?)))
                    .collect();
                kernel_sflow.set_rates(&rates).unwrap();
            }
            let frames = |s| stats.frames(s).count;
            let sample_counts = || SampleStat::ALL.map(|s| stats.sflow_samples(s).count);
            let before = (
                [
                    XdpStat::DropSflowAggregated,
                    XdpStat::PassSflowToUser,
                    XdpStat::PassSflowInvalid,
                ]
                .map(frames),
                sample_counts(),
                stats.records(RecordStat::Parsed).count,
            );
            let started = now_ms();
            let verdict = plane
                .run_frame(&frame)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let ended = now_ms();
            let (expected, index) = match &model {
                Sflow::Aggregated(_) => (XdpStat::DropSflowAggregated, 0),
                Sflow::ToUser => (XdpStat::PassSflowToUser, 1),
                Sflow::Invalid => (XdpStat::PassSflowInvalid, 2),
            };
            assert_eq!(
                frames(expected),
                before.0[index] + 1,
                "{name}: the model says {model:?}"
            );
            *verdicts.entry(format!("{expected:?}")).or_insert(0) += 1;
            let Sflow::Aggregated(aggregated) = model else {
                assert_eq!(verdict, XDP_PASS, "{name}");
                assert_eq!(stats.records(RecordStat::Parsed).count, before.2, "{name}");
                continue;
            };
            assert_eq!(verdict, XDP_DROP, "{name}");
            let counted: Vec<u64> = sample_counts()
                .iter()
                .zip(before.1)
                .map(|(after, before)| after - before)
                .collect();
            assert_eq!(counted, aggregated.samples, "{name}: samples by outcome");
            assert_eq!(
                stats.records(RecordStat::Parsed).count - before.2,
                aggregated.records.len() as u64,
                "{name}"
            );
            for (key, _) in &aggregated.flow_samples {
                *samples_by_source.entry(*key).or_insert(0u64) += 1;
            }

            let mut in_kernel = Table::new();
            drainer
                .drain(|key, value| merge(&mut in_kernel, key, value))
                .unwrap();
            let mut decoded = Decoded::default();
            sflow::decode(datagram, flags, started, rate, &mut decoded)
                .unwrap_or_else(|e| panic!("{name}: the socket path rejects it: {e}"));
            let mut aggregator = Aggregator::new(
                config.profile,
                flags,
                SubscriberNets::new(&config.subscriber_networks),
            );
            for record in &decoded.records {
                aggregator.add(&decoded.agent, record);
            }
            let on_socket = aggregator.take();
            assert_eq!(in_kernel.len(), on_socket.len(), "{name}: keys");
            for (key, value) in &in_kernel {
                let other = on_socket
                    .get(key)
                    .unwrap_or_else(|| panic!("{name}: {key:?} only in the kernel"));
                let figures = |v: &flowtally_common::agg::AggValue| (v.bytes, v.packets, v.flows);
                assert_eq!(figures(value), figures(other), "{name}: {key:?}");
                assert!(
                    (started..=ended).contains(&value.first_ms),
                    "{name}: timed at arrival: {value:?}"
                );
            }
        }
        let kernel_sources: BTreeMap<_, _> = kernel_sflow
            .sources()
            .into_iter()
            .map(|(key, state)| (key, state.samples))
            .collect();
        assert_eq!(kernel_sources, samples_by_source, "flags {flags}: sources");
    }
    eprintln!("sFlow verdicts: {verdicts:?}");
    for stat in ["DropSflowAggregated", "PassSflowToUser", "PassSflowInvalid"] {
        assert!(verdicts.get(stat) >= Some(&3), "{stat}: {verdicts:?}");
    }
}
