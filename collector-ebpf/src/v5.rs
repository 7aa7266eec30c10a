//! NetFlow v5 in the kernel: validate the whole export first, then
//! aggregate each record. An export that fails validation is never partly
//! aggregated: it goes up to the socket path, which rejects and counts it
//! by reason.

use aya_ebpf::{
    cty::c_void, helpers::generated::bpf_xdp_load_bytes, macros::map, maps::PerCpuArray,
    programs::XdpContext,
};
use flowtally_common::{
    XdpStat,
    agg::Ip,
    sequence::{ExportKey, v5_domain},
    v5::{HEADER_LEN, Header, MAX_RECORDS, RECORD_LEN, RawHeader, RawRecord, VERSION},
};

use crate::{exports, flow};

/// The export, copied out of the packet so that the per-record callback
/// reads map memory, whose bounds the verifier checks once, rather than
/// packet memory under every header path.
#[repr(C)]
struct Export {
    raw_header: RawHeader,
    header: Header,
    /// Room for 32 records: the count mask below can yield up to 32.
    records: [RawRecord; 32],
    /// Its domain.
    key: ExportKey,
}

#[map(name = "V5_SCRATCH")]
static SCRATCH: PerCpuArray<Export> = PerCpuArray::with_max_entries(1, 0);

// A function of its own (a BPF subprogram): the stack of the record
// callbacks and of the frame walk then need not fit the verifier's 512
// bytes together.
#[inline(never)]
pub fn aggregate(ctx: &XdpContext, payload: usize, len: usize, exporter: &Ip) -> XdpStat {
    let Some(export) = SCRATCH.get_ptr_mut(0) else {
        return XdpStat::PassV5Invalid;
    };
    // SAFETY: this CPU's scratch slot; XDP runs do not nest on a CPU.
    let export = unsafe { &mut *export };
    if !load(ctx, payload, &mut export.raw_header.0) {
        return XdpStat::PassV5Invalid;
    }
    export.header = Header::parse(&export.raw_header);
    if export.header.validate(len).is_err() {
        return XdpStat::PassV5Invalid;
    }
    // validate() bounds the count to 1..=30, so this is the count itself;
    // the form restates a non-zero, bounded length to the verifier.
    let count = (u32::from(export.header.count).wrapping_sub(1) & 0x1f) + 1;
    // SAFETY: `records` holds 32 records; `count * RECORD_LEN` bytes fit.
    let copied = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            (payload + HEADER_LEN) as u32,
            export.records.as_mut_ptr().cast(),
            count * RECORD_LEN as u32,
        )
    };
    let Some(flow) = flow::begin(exporter) else {
        return XdpStat::PassV5Invalid;
    };
    if copied != 0 {
        return XdpStat::PassV5Invalid;
    }
    export.key = ExportKey {
        exporter: *exporter,
        domain: v5_domain(export.header.engine_type, export.header.engine_id),
        version: VERSION,
        _pad: 0,
    };
    let (sequence, uptime) = (export.header.flow_sequence, export.header.sys_uptime);
    if !exports::note(&export.key, sequence, uptime, count) {
        return XdpStat::PassExportRingFull;
    }
    flow::for_each(count, aggregate_record as *mut c_void, export, flow);
    let bytes = flow.finish();
    exports::add_bytes(&export.key, bytes);
    XdpStat::DropV5Aggregated
}

/// Copies `to.len()` bytes of the frame at `offset` into `to`.
#[inline(always)]
pub fn load<const N: usize>(ctx: &XdpContext, offset: usize, to: &mut [u8; N]) -> bool {
    // SAFETY: `to` has room for exactly N bytes.
    unsafe { bpf_xdp_load_bytes(ctx.ctx, offset as u32, to.as_mut_ptr().cast(), N as u32) == 0 }
}

/// The bpf_loop callback for record `index` of the export in scratch;
/// verified once, not once per record.
extern "C" fn aggregate_record(index: u64, slots: *mut c_void) -> i64 {
    // SAFETY: `aggregate` runs this through `flow::for_each` with its `Export`.
    let (export, flow) = unsafe { flow::slots::<Export>(slots) };
    let i = index as usize;
    if i >= MAX_RECORDS {
        return 1;
    }
    flow.record_v4 = export.header.v4_record(&export.records[i], flow.flags);
    flow.aggregate_v4();
    0
}
