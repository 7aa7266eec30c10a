//! The XDP program: finds flow exports (UDP to a collector port) among the
//! frames of an interface, parses NetFlow v5 exports and the v9/IPFIX
//! exports whose templates userspace compiled for it, aggregates their
//! records in the kernel, and passes everything else up unchanged. Every
//! frame is counted by verdict and class.
#![no_std]
#![no_main]
// An atomic add on map values: core's atomic types have no RMW on bpfel.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod aggregate;
mod exports;
mod flow;
mod headers;
mod interfaces;
mod sflow;
mod templated;
mod v5;
mod wakeup;

use aya_ebpf::{
    Global,
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{HashMap, LpmTrie, PerCpuArray, ProgramArray},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use flowtally_common::{
    Counter, MAX_CLASS_NETS, MAX_COLLECTOR_PORTS, MAX_EXPORTERS, MAX_SUBSCRIBER_NETS, RecordStat,
    Verdict, XdpStat,
    agg::{FLAG_EXPORTER_ALLOWLIST, Ip, KEEP_ALL},
    sflow::{PROGRAM as SFLOW_PROGRAM, VERSION as SFLOW},
    templated::{IPFIX, V9},
    v5::VERSION as V5,
};

/// The first bytes of an sFlow v5 datagram: a 32-bit version (NetFlow's
/// version is 16 bits, followed by a non-zero count).
const SFLOW_V5: [u8; 4] = SFLOW.to_be_bytes();

use crate::headers::{Frame, Transport};

/// Time bucket width in ms; set by userspace at load.
#[unsafe(no_mangle)]
static BUCKET_MS: Global<u64> = Global::new(60_000);
/// `agg::KEEP_*` bits of the aggregation profile.
#[unsafe(no_mangle)]
static KEEP_FIELDS: Global<u32> = Global::new(KEEP_ALL);
/// `agg::FLAG_*` bits.
#[unsafe(no_mangle)]
static FLAGS: Global<u32> = Global::new(0);

#[map(name = "STATS")]
static STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(XdpStat::COUNT, 0);

#[map(name = "RECORD_STATS")]
static RECORD_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(RecordStat::COUNT, 0);

#[map(name = "COLLECTOR_PORTS")]
static COLLECTOR_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(MAX_COLLECTOR_PORTS, 0);

#[map(name = "EXPORTERS")]
static EXPORTERS: HashMap<Ip, u8> = HashMap::with_max_entries(MAX_EXPORTERS, 0);

/// LPM tries must not be preallocated.
const BPF_F_NO_PREALLOC: u32 = 1;

#[map(name = "SUBSCRIBER_NETS")]
static SUBSCRIBER_NETS: LpmTrie<Ip, u8> =
    LpmTrie::with_max_entries(MAX_SUBSCRIBER_NETS, BPF_F_NO_PREALLOC);

/// Destination class networks (see `flowtally_common::CLASS_NETS_MAP`).
#[map(name = "CLASS_NETS")]
static CLASS_NETS: LpmTrie<Ip, u8> = LpmTrie::with_max_entries(MAX_CLASS_NETS, BPF_F_NO_PREALLOC);

/// Programs the main one tail-calls: [`SFLOW_PROGRAM`] at its index.
#[map(name = "PROGRAMS")]
static PROGRAMS: ProgramArray = ProgramArray::with_max_entries(1, 0);

#[xdp]
pub fn flowtally(ctx: XdpContext) -> u32 {
    let frame = Frame::new(&ctx);
    let stat = classify(&ctx, &frame);
    finish(&frame, stat)
}

/// sFlow datagrams, tail-called from `flowtally` (see `sflow.rs` for why).
#[xdp]
pub fn flowtally_sflow(ctx: XdpContext) -> u32 {
    let frame = Frame::new(&ctx);
    let stat = match frame.transport() {
        Transport::Udp { payload, len, .. } => sflow::aggregate(&ctx, payload, len),
        _ => XdpStat::PassMalformed,
    };
    finish(&frame, stat)
}

/// Counts the frame and returns its verdict.
#[inline(always)]
fn finish(frame: &Frame, stat: XdpStat) -> u32 {
    count(&STATS, stat as u32, 1, frame.len() as u64);
    match stat.verdict() {
        Verdict::Drop => xdp_action::XDP_DROP,
        Verdict::Pass => xdp_action::XDP_PASS,
    }
}

fn classify(ctx: &XdpContext, frame: &Frame) -> XdpStat {
    match frame.transport() {
        Transport::Udp {
            src,
            dst_port,
            payload,
            len,
        } => {
            // SAFETY (both lookups): only tested for presence, never dereferenced.
            if unsafe { COLLECTOR_PORTS.get(dst_port) }.is_none() {
                return XdpStat::PassOther;
            }
            // sFlow's exporter is its agent, in the datagram: checked there.
            if frame.array::<4>(payload) == Some(SFLOW_V5) {
                // SAFETY: a tail call does not return when it succeeds; it
                // fails only without the program, which userspace installs
                // before attaching.
                unsafe { PROGRAMS.tail_call(ctx, SFLOW_PROGRAM) };
                return XdpStat::PassSflowToUser;
            }
            if FLAGS.load() & FLAG_EXPORTER_ALLOWLIST != 0
                && unsafe { EXPORTERS.get(src) }.is_none()
            {
                return XdpStat::DropUnknownExporter;
            }
            match frame.array::<2>(payload).map(u16::from_be_bytes) {
                Some(V5) => v5::aggregate(ctx, payload, len, &src),
                Some(version @ (V9 | IPFIX)) => {
                    templated::aggregate(ctx, payload, len, &src, version)
                }
                _ => XdpStat::PassUnknownVersion,
            }
        }
        Transport::Fragment => XdpStat::PassFragment,
        Transport::Truncated => {
            debug!(ctx, "malformed frame of {} bytes", frame.len());
            XdpStat::PassMalformed
        }
        Transport::Other => XdpStat::PassOther,
    }
}

#[inline(always)]
fn count(counters: &PerCpuArray<Counter>, index: u32, count: u64, bytes: u64) {
    if let Some(counter) = counters.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, so nothing else writes it while we run.
        unsafe {
            (*counter).count += count;
            (*counter).bytes += bytes;
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
