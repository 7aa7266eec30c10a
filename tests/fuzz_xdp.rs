//! The `template_compiler` fuzz target's committed inputs (seeds, and
//! cases fuzzing found) through the real XDP program (BPF_PROG_TEST_RUN):
//! the kernel's verdict is the one the target's model of it gives, and
//! what the kernel aggregates is what the socket path aggregates from the
//! same export. This ties the model the fuzzer runs to the kernel.

mod support;

use std::{fs, path::PathBuf};

use flowtally::{
    aggregate::{Aggregator, Table, merge},
    netflow::{
        TemplateCache,
        fuzz::{EXPORTER, KernelVerdict, LIMITS, NOW_MS, datagrams, kernel_walk, parity_flags},
    },
    subscribers::SubscriberNets,
    xdp::DataPlane,
};
use flowtally_common::{RecordStat, XdpStat, agg::ip_from_v4};
use support::{XDP_DROP, XDP_PASS, frames::udp_v4_frame, kernel_config, require_root};

fn inputs() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/template_compiler");
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
    let inputs = inputs();
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
