//! sFlow v5 in the kernel. Like v9/IPFIX (`templated.rs`), the whole
//! datagram is checked first — the header, every sample and every flow
//! record, by the socket path's rules (`collector/src/sflow/wire.rs`) —
//! and only then aggregated: one record per flow sample, read by the
//! shared `flowtally_common::sflow::packet_into`. What the kernel will not
//! take goes up whole to the socket path: counter samples (which feed the
//! interface-counter table), datagrams past the bounds of
//! `flowtally_common::sflow` (length, samples, records), and anything
//! malformed, which the socket path rejects and counts by cause.
//!
//! This runs as a program of its own (`flowtally_sflow`), which the main
//! program tail-calls for sFlow datagrams: each program is verified on its
//! own, and the sFlow walk with its callbacks would otherwise take the main
//! program past the verifier's million instructions (with the exporter
//! allow-list on, which adds paths to the NetFlow walks).
//!
//! Each aggregated flow sample also updates its source's per-CPU state
//! (`SFLOW_SOURCES`): sequence, sample pool and drops of the latest sample
//! and the count of samples, which userspace merges with the socket path's
//! at each flush for the integrity audit.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    cty::c_void,
    helpers::generated::{bpf_ktime_get_ns, bpf_loop, bpf_xdp_load_bytes},
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
    programs::XdpContext,
};
use flowtally_common::{
    Counter, XdpStat,
    agg::{FLAG_EXPORTER_ALLOWLIST, FLAG_SFLOW_RENORMALIZE, Ip, ip_from_v4},
    sflow::{
        ADDRESS_IPV4, ADDRESS_IPV6, FlowSample, HEADER_WINDOW, IPV4_RECORD_LEN, IPV6_RECORD_LEN,
        MAX_DATAGRAM_LEN, MAX_RECORDS, MAX_SAMPLES, MAX_SOURCES, RAW_HEADER_FIXED_LEN, RECORD_IPV4,
        RECORD_IPV6, RECORD_RAW_HEADER, SAMPLE_COUNTERS, SAMPLE_COUNTERS_EXPANDED, SAMPLE_FLOW,
        SAMPLE_FLOW_EXPANDED, SampleStat, SourceKey, SourceState, finish, interface,
        interface_expanded, packet_into,
    },
};

use crate::{EXPORTERS, FLAGS, count, flow};

#[map(name = "SFLOW_SOURCES")]
static SOURCES: PerCpuHashMap<SourceKey, SourceState> =
    PerCpuHashMap::with_max_entries(MAX_SOURCES, 0);

#[map(name = "SFLOW_RATES")]
static RATES: HashMap<SourceKey, u32> = HashMap::with_max_entries(MAX_SOURCES, 0);

#[map(name = "SFLOW_CLOCK")]
static CLOCK: Array<u64> = Array::with_max_entries(1, 0);

#[map(name = "SFLOW_SAMPLE_STATS")]
static SAMPLE_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(SampleStat::COUNT, 0);

/// What the walk concluded (see `templated.rs`).
const OK: u32 = 0;
const TO_USER: u32 = 1;
const INVALID: u32 = 2;

/// A flow sample the walk noted, and where its packet record is.
#[repr(C)]
struct Noted {
    sample: FlowSample,
    /// The first packet record's format, 0 if none.
    kind: u32,
    /// A raw header's `header_protocol`.
    protocol: u32,
    /// Where the record's bytes start (a raw header's: the header itself),
    /// and how many count (a raw header's capped at `HEADER_WINDOW`).
    at: u32,
    len: u32,
}

#[repr(C)]
struct Datagram {
    /// Slack after the datagram so that a header window at any masked
    /// offset stays inside the buffer as far as the verifier can tell.
    buf: [u8; MAX_DATAGRAM_LEN + HEADER_WINDOW],
    len: u32,
    verdict: u32,
    cursor: u32,
    samples_left: u32,
    /// Records of the current flow sample still to walk, and its end.
    records_left: u32,
    sample_end: u32,
    records: u32,
    /// Samples by outcome, counted once per datagram.
    skipped: u32,
    flows: u32,
    no_ip: u32,
    noted: u32,
    sub_agent: u32,
    agent: Ip,
    time_ms: u64,
    samples: [Noted; MAX_SAMPLES as usize],
}

#[map(name = "SFLOW_SCRATCH")]
static SCRATCH: PerCpuArray<Datagram> = PerCpuArray::with_max_entries(1, 0);

fn scratch() -> Option<&'static mut Datagram> {
    // SAFETY: this CPU's slot; XDP runs do not nest on a CPU.
    SCRATCH.get_ptr_mut(0).map(|d| unsafe { &mut *d })
}

pub fn aggregate(ctx: &XdpContext, payload: usize, len: usize) -> XdpStat {
    if len > MAX_DATAGRAM_LEN || len < 8 {
        return XdpStat::PassSflowToUser;
    }
    let Some(d) = scratch() else {
        return XdpStat::PassSflowToUser;
    };
    // `len` is 8..=MAX_DATAGRAM_LEN here; the form restates that to the verifier.
    let n = ((len as u32).wrapping_sub(1) & (MAX_DATAGRAM_LEN as u32 - 1)) + 1;
    // SAFETY: `buf` has room for MAX_DATAGRAM_LEN bytes, and n <= MAX_DATAGRAM_LEN.
    if unsafe { bpf_xdp_load_bytes(ctx.ctx, payload as u32, d.buf.as_mut_ptr().cast(), n) } != 0 {
        return XdpStat::PassSflowToUser;
    }
    d.len = n;
    let header_len = match be32(&d.buf, 4) {
        ADDRESS_IPV4 => {
            let b = &d.buf;
            d.agent = ip_from_v4([b[8], b[9], b[10], b[11]]);
            28
        }
        ADDRESS_IPV6 if len >= 40 => {
            d.agent.copy_from_slice(&d.buf[8..24]);
            40
        }
        _ => return XdpStat::PassSflowInvalid,
    };
    if len < header_len {
        return XdpStat::PassSflowInvalid;
    }
    // SAFETY: only tested for presence, never dereferenced.
    if FLAGS.load() & FLAG_EXPORTER_ALLOWLIST != 0 && unsafe { EXPORTERS.get(&d.agent) }.is_none() {
        return XdpStat::DropUnknownExporter;
    }
    d.sub_agent = be32(&d.buf, header_len - 16);
    d.samples_left = be32(&d.buf, header_len - 4);
    if d.samples_left > MAX_SAMPLES {
        return XdpStat::PassSflowToUser;
    }
    d.cursor = header_len as u32;
    d.verdict = OK;
    d.records_left = 0;
    d.records = 0;
    d.skipped = 0;
    d.noted = 0;
    // SAFETY (both loops): static callbacks with the signature bpf_loop expects.
    unsafe {
        bpf_loop(
            MAX_SAMPLES + MAX_RECORDS + 1,
            walk as *mut c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    match d.verdict {
        OK if d.samples_left == 0 && d.records_left == 0 && d.cursor == d.len => {}
        TO_USER => return XdpStat::PassSflowToUser,
        _ => return XdpStat::PassSflowInvalid,
    }
    let Some(flow) = flow::begin(&d.agent) else {
        return XdpStat::PassSflowToUser;
    };
    // SAFETY: a plain helper call.
    let mono_ns = unsafe { bpf_ktime_get_ns() };
    let offset = CLOCK.get(0).copied().unwrap_or(0);
    d.time_ms = mono_ns.wrapping_add(offset) / 1_000_000;
    d.flows = 0;
    d.no_ip = 0;
    flow::for_each(d.noted, aggregate_sample as *mut c_void, d, flow);
    flow.finish();
    for (stat, n) in [
        (SampleStat::Flow, d.flows),
        (SampleStat::NoIpPacket, d.no_ip),
        (SampleStat::Skipped, d.skipped),
    ] {
        if n != 0 {
            count(&SAMPLE_STATS, stat as u32, u64::from(n), 0);
        }
    }
    XdpStat::DropSflowAggregated
}

/// Walks one element: the next sample's header, or the current flow
/// sample's next record; concludes at the end or at the first fault.
extern "C" fn walk(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(d) = scratch() else {
        return 1;
    };
    let conclude = |d: &mut Datagram, verdict| {
        d.verdict = verdict;
        1
    };
    let cursor = d.cursor as usize;
    if d.records_left > 0 {
        return walk_record(d, cursor);
    }
    if d.samples_left == 0 {
        return 1;
    }
    let Some((format, body, end)) = element(d, cursor, d.len as usize) else {
        return conclude(d, INVALID);
    };
    d.samples_left -= 1;
    let (fixed, expanded) = match format {
        SAMPLE_FLOW => (32, false),
        SAMPLE_FLOW_EXPANDED => (44, true),
        SAMPLE_COUNTERS | SAMPLE_COUNTERS_EXPANDED => return conclude(d, TO_USER),
        _ => {
            d.skipped += 1;
            d.cursor = end as u32;
            return 0;
        }
    };
    if body + fixed > end {
        return conclude(d, INVALID);
    }
    let Some(noted) = d.samples.get_mut(d.noted as usize) else {
        return conclude(d, TO_USER);
    };
    let word = |i: usize| be32(&d.buf, body + 4 * i);
    noted.sample = if expanded {
        FlowSample {
            sequence: word(0),
            source_id: word(1) << 24 | (word(2) & 0x00ff_ffff),
            sampling_rate: word(3),
            sample_pool: word(4),
            drops: word(5),
            input_if: interface_expanded(word(6), word(7)),
            output_if: interface_expanded(word(8), word(9)),
        }
    } else {
        FlowSample {
            sequence: word(0),
            source_id: word(1),
            sampling_rate: word(2),
            sample_pool: word(3),
            drops: word(4),
            input_if: interface(word(5)),
            output_if: interface(word(6)),
        }
    };
    noted.kind = 0;
    d.records_left = word(fixed / 4 - 1);
    d.noted += 1;
    d.sample_end = end as u32;
    d.cursor = (body + fixed) as u32;
    if d.records_left == 0 && body + fixed != end {
        return conclude(d, INVALID);
    }
    0
}

fn walk_record(d: &mut Datagram, cursor: usize) -> i64 {
    let conclude = |d: &mut Datagram, verdict| {
        d.verdict = verdict;
        1
    };
    d.records += 1;
    if d.records > MAX_RECORDS {
        return conclude(d, TO_USER);
    }
    let sample_end = d.sample_end as usize;
    let Some((format, body, end)) = element(d, cursor, sample_end) else {
        return conclude(d, INVALID);
    };
    let len = end - body;
    let (at, counted, protocol) = match format {
        RECORD_RAW_HEADER => {
            if len < RAW_HEADER_FIXED_LEN {
                return conclude(d, INVALID);
            }
            let header_len = be32(&d.buf, body + 12) as usize;
            // The header, padded to 4, fills the rest of the record exactly.
            if header_len > len - RAW_HEADER_FIXED_LEN
                || (header_len + 3) & !3 != len - RAW_HEADER_FIXED_LEN
            {
                return conclude(d, INVALID);
            }
            let counted = if header_len < HEADER_WINDOW {
                header_len
            } else {
                HEADER_WINDOW
            };
            (body + RAW_HEADER_FIXED_LEN, counted, be32(&d.buf, body))
        }
        RECORD_IPV4 if len == IPV4_RECORD_LEN => (body, len, 0),
        RECORD_IPV6 if len == IPV6_RECORD_LEN => (body, len, 0),
        RECORD_IPV4 | RECORD_IPV6 => return conclude(d, INVALID),
        _ => (0, 0, 0),
    };
    let packet = format == RECORD_RAW_HEADER || format == RECORD_IPV4 || format == RECORD_IPV6;
    let index = (d.noted as usize).wrapping_sub(1);
    if packet
        && let Some(noted) = d.samples.get_mut(index)
        && noted.kind == 0
    {
        noted.kind = format;
        noted.protocol = protocol;
        noted.at = at as u32;
        noted.len = counted as u32;
    }
    d.records_left -= 1;
    d.cursor = end as u32;
    if d.records_left == 0 && end != sample_end {
        return conclude(d, INVALID);
    }
    0
}

/// The element (sample or record) at `at`, inside `limit`: its format, and
/// where its data starts and ends; `None` if it does not fit or its length
/// is not a multiple of 4.
#[inline(always)]
fn element(d: &Datagram, at: usize, limit: usize) -> Option<(u32, usize, usize)> {
    if at + 8 > limit {
        return None;
    }
    let (format, len) = (be32(&d.buf, at), be32(&d.buf, at + 4) as usize);
    if len % 4 != 0 || len > limit - at - 8 {
        return None;
    }
    Some((format, at + 8, at + 8 + len))
}

/// Aggregates noted flow sample `index` and updates its source's state.
extern "C" fn aggregate_sample(index: u64, slots: *mut c_void) -> i64 {
    // SAFETY: `aggregate` runs this through `flow::for_each` with its `Datagram`.
    let (d, flow) = unsafe { flow::slots::<Datagram>(slots) };
    let Some(noted) = d.samples.get(index as usize) else {
        return 1;
    };
    let key = SourceKey {
        agent: d.agent,
        sub_agent: d.sub_agent,
        source_id: noted.sample.source_id,
    };
    observe(&key, &noted.sample);
    let at = noted.at as usize & (MAX_DATAGRAM_LEN - 1);
    let Some(window) = d.buf.get(at..at + HEADER_WINDOW) else {
        return 1;
    };
    if !packet_into(
        noted.kind,
        noted.protocol,
        window,
        noted.len as usize,
        &mut flow.record,
    ) {
        d.no_ip += 1;
        return 0;
    }
    // SAFETY: copied out at once.
    let renormalised = match flow.flags & FLAG_SFLOW_RENORMALIZE {
        0 => None,
        _ => unsafe { RATES.get(&key) }.copied(),
    };
    let rate = match renormalised {
        Some(rate) => rate,
        None => noted.sample.sampling_rate,
    };
    finish(&mut flow.record, &noted.sample, rate, flow.flags, d.time_ms);
    flow.aggregate();
    d.flows += 1;
    0
}

/// Counts a flow sample in its source's state on this CPU.
#[inline(always)]
fn observe(key: &SourceKey, sample: &FlowSample) {
    if let Some(state) = SOURCES.get_ptr_mut(key) {
        // SAFETY: this CPU's slot of a per-CPU value: no concurrent writer.
        unsafe { (*state).observe(sample) };
        return;
    }
    let mut state = SourceState::default();
    state.observe(sample);
    if SOURCES.insert(key, &state, u64::from(BPF_NOEXIST)).is_err()
        && let Some(existing) = SOURCES.get_ptr_mut(key)
    {
        // Another CPU created it meanwhile: our slot is zero, start it.
        unsafe { (*existing).observe(sample) };
    }
}

/// A big-endian word at an offset masked into the buffer (callers check
/// offsets against the datagram's length first).
#[inline(always)]
fn be32(buf: &[u8], at: usize) -> u32 {
    let at = at & (MAX_DATAGRAM_LEN - 1);
    match buf.get(at..at + 4) {
        Some(b) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        None => 0,
    }
}
