//! NetFlow v5 in the kernel: validate the whole export first, then
//! aggregate each record. An export that fails validation is never partly
//! aggregated: it goes up to the socket path, which rejects and counts it
//! by reason.

use aya_ebpf::{
    cty::c_void,
    helpers::generated::{bpf_loop, bpf_xdp_load_bytes},
    macros::map,
    maps::{PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use flowtally_common::{
    RecordStat, XdpStat,
    agg::{AggKey, AggValue, FlowRecord, Ip, Profile, directions},
    v5::{HEADER_LEN, Header, MAX_RECORDS, RECORD_LEN, RawHeader, RawRecord},
};

use crate::{BUCKET_MS, FLAGS, KEEP_FIELDS, RECORD_STATS, SUBSCRIBER_NETS, aggregate, count};

/// Per-CPU scratch space. The export's records are copied here so that the
/// per-record callback reads map memory, whose bounds the verifier checks
/// once, rather than packet memory under every header path; the record
/// being aggregated lives here too rather than on the 512-byte BPF stack.
#[repr(C)]
struct Scratch {
    export: Export,
    header: RawHeader,
    /// Room for 32 records: the count mask below can yield up to 32.
    records: [RawRecord; 32],
    record: FlowRecord,
    key: AggKey,
    value: AggValue,
}

#[map(name = "V5_SCRATCH")]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// What every record of one export shares. No map pointer: the verifier
/// forbids storing pointers in map values, so the active map is an index.
#[repr(C)]
struct Export {
    header: Header,
    flags: u32,
    active: u32,
    profile: Profile,
    exporter: Ip,
}

pub fn aggregate(ctx: &XdpContext, payload: usize, len: usize, exporter: &Ip) -> XdpStat {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return XdpStat::PassV5Invalid;
    };
    // SAFETY: this CPU's scratch slot; XDP runs do not nest on a CPU.
    let scratch = unsafe { &mut *scratch };
    // SAFETY: `scratch.header` has room for exactly HEADER_LEN bytes.
    let loaded = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            payload as u32,
            scratch.header.0.as_mut_ptr().cast(),
            HEADER_LEN as u32,
        )
    };
    if loaded != 0 {
        return XdpStat::PassV5Invalid;
    }
    let header = Header::parse(&scratch.header);
    if header.validate(len).is_err() {
        return XdpStat::PassV5Invalid;
    }
    scratch.export = Export {
        header,
        flags: FLAGS.load(),
        active: aggregate::active_index(),
        profile: Profile {
            keep: KEEP_FIELDS.load(),
            bucket_ms: BUCKET_MS.load(),
        },
        exporter: *exporter,
    };
    // validate() bounds the count to 1..=30, so this is the count itself;
    // the form restates a non-zero, bounded length to the verifier.
    let count = (u32::from(header.count).wrapping_sub(1) & 0x1f) + 1;
    // SAFETY: `records` holds 32 records; `count * RECORD_LEN` bytes fit.
    let copied = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            (payload + HEADER_LEN) as u32,
            scratch.records.as_mut_ptr().cast(),
            count * RECORD_LEN as u32,
        )
    };
    if copied != 0 {
        return XdpStat::PassV5Invalid;
    }
    // SAFETY: a static callback with the signature bpf_loop expects.
    unsafe {
        bpf_loop(
            count,
            aggregate_record as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    XdpStat::DropV5Aggregated
}

/// The bpf_loop callback for record `index` of the export in scratch;
/// verified once, not once per record.
extern "C" fn aggregate_record(index: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's scratch slot, filled by `aggregate` above.
    let s = unsafe { &mut *s };
    let i = index as usize;
    if i >= MAX_RECORDS {
        return 1;
    }
    s.export
        .header
        .record_into(&s.records[i], s.export.flags, &mut s.record);
    s.value = s.record.value();
    count(&RECORD_STATS, RecordStat::Parsed as u32, 1, s.record.bytes);
    let [first, second] = directions(is_subscriber(&s.record.src), is_subscriber(&s.record.dst));
    for dir in [first, second].into_iter().flatten() {
        s.key = s.export.profile.key(&s.record, dir, &s.export.exporter);
        let outcome = aggregate::add(s.export.active, &s.key, &s.value);
        count(&RECORD_STATS, outcome as u32, 1, s.record.bytes);
    }
    0
}

#[inline(always)]
fn is_subscriber(ip: &Ip) -> bool {
    SUBSCRIBER_NETS.get(Key::new(128, *ip)).is_some()
}
