//! NetFlow v9 and IPFIX in the kernel, for exports whose every data set has
//! a template userspace compiled into `TEMPLATES`. The whole export is
//! checked first — header, set structure, a compiled template for every
//! set — and only then aggregated; anything else (template sets, unknown
//! templates, malformed or oversized exports) goes up to the socket path
//! untouched, which learns from it and decodes it fully.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    cty::c_void,
    helpers::generated::{bpf_loop, bpf_xdp_load_bytes},
    macros::map,
    maps::{HashMap, PerCpuArray},
    programs::XdpContext,
};
use flowtally_common::{
    XdpStat,
    agg::Ip,
    sequence::ExportKey,
    template::{
        CompiledTemplate, ExportTime, MAX_COMPILED_TEMPLATES, MAX_EXPORT_LEN, MAX_EXPORT_RECORDS,
        MAX_RECORD_LEN, MAX_SETS, MAX_TEMPLATE_DOMAINS, MIN_RECORD_LEN, TemplateKey,
    },
    templated::{FIRST_DATA_SET_ID, V9, header_len},
};

use crate::{exports, flow};

#[map(name = "TEMPLATES")]
static TEMPLATES: HashMap<TemplateKey, CompiledTemplate> =
    HashMap::with_max_entries(MAX_COMPILED_TEMPLATES, 0);

#[map(name = "TEMPLATE_SETS_SEEN")]
static SEEN: HashMap<TemplateKey, u64> = HashMap::with_max_entries(MAX_TEMPLATE_DOMAINS, 0);

#[map(name = "TEMPLATE_SETS_DONE")]
static DONE: HashMap<TemplateKey, u64> = HashMap::with_max_entries(MAX_TEMPLATE_DOMAINS, 0);

/// What the set walk concluded.
const OK: u32 = 0;
const TO_USER: u32 = 1;
const INVALID: u32 = 2;
/// Up to userspace because it carries a template set.
const TEMPLATES_TO_USER: u32 = 3;

/// One data set: where its records are and how to read them.
#[repr(C)]
struct Set {
    start: u32,
    end: u32,
    template: CompiledTemplate,
}

/// The export, copied out of the packet (see `v5.rs` for why), and the
/// state of the two walks over it.
#[repr(C)]
struct Export {
    /// Slack after the export so that a record window (see `walk_record`)
    /// at any masked offset stays inside the buffer as far as the verifier
    /// can tell.
    buf: [u8; MAX_EXPORT_LEN + 2 * MAX_RECORD_LEN],
    len: u32,
    verdict: u32,
    time: ExportTime,
    key: TemplateKey,
    cursor: u32,
    records: u32,
    set_count: u32,
    set_index: u32,
    /// Header sequence number and domain, for sequence tracking.
    sequence: u32,
    export_key: ExportKey,
    /// Steps for the reverse directions of biflow records, and whether
    /// the next step is the reverse of the record at `cursor`.
    reverse_steps: u32,
    reverse: u32,
    sets: [Set; MAX_SETS],
}

#[map(name = "TEMPLATED_SCRATCH")]
static SCRATCH: PerCpuArray<Export> = PerCpuArray::with_max_entries(1, 0);

fn scratch() -> Option<&'static mut Export> {
    // SAFETY: this CPU's slot; XDP runs do not nest on a CPU.
    SCRATCH.get_ptr_mut(0).map(|export| unsafe { &mut *export })
}

// A function of its own (a BPF subprogram): the stack of the record
// callbacks and of the frame walk then need not fit the verifier's 512
// bytes together.
#[inline(never)]
pub fn aggregate(
    ctx: &XdpContext,
    payload: usize,
    len: usize,
    exporter: &Ip,
    version: u16,
) -> XdpStat {
    let header_len = header_len(version);
    if len < header_len || len > MAX_EXPORT_LEN {
        return XdpStat::PassTemplatedInvalid;
    }
    let Some(e) = scratch() else {
        return XdpStat::PassTemplatedInvalid;
    };
    // `len` is 1..=MAX_EXPORT_LEN here; the form restates that to the verifier.
    let n = ((len as u32).wrapping_sub(1) & (MAX_EXPORT_LEN as u32 - 1)) + 1;
    // SAFETY: `buf` has room for MAX_EXPORT_LEN bytes, and n <= MAX_EXPORT_LEN.
    let copied =
        unsafe { bpf_xdp_load_bytes(ctx.ctx, payload as u32, e.buf.as_mut_ptr().cast(), n) };
    if copied != 0 {
        return XdpStat::PassTemplatedInvalid;
    }
    e.len = n;
    e.key.exporter = *exporter;
    e.key.version = version;
    if version == V9 {
        e.time = ExportTime {
            unix_secs: be32(&e.buf, 8),
            sys_uptime_ms: be32(&e.buf, 4),
            version,
        };
        e.key.domain = be32(&e.buf, 16);
        e.sequence = be32(&e.buf, 12);
    } else {
        if usize::from(be16(&e.buf, 2)) != len {
            return XdpStat::PassTemplatedInvalid;
        }
        e.time = ExportTime {
            unix_secs: be32(&e.buf, 4),
            sys_uptime_ms: 0,
            version,
        };
        e.key.domain = be32(&e.buf, 12);
        e.sequence = be32(&e.buf, 8);
    }
    e.key.template_id = 0;
    if held(&e.key) {
        return XdpStat::PassTemplatedToUser;
    }
    e.cursor = header_len as u32;
    e.verdict = OK;
    e.records = 0;
    e.reverse_steps = 0;
    e.set_count = 0;
    // SAFETY (both loops): static callbacks with the signature bpf_loop expects.
    unsafe {
        bpf_loop(
            MAX_SETS as u32 + 1,
            walk_set as *mut c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    match e.verdict {
        OK if e.cursor == e.len && e.set_count > 0 => {}
        TO_USER => return XdpStat::PassTemplatedToUser,
        TEMPLATES_TO_USER => {
            e.key.template_id = 0;
            hold(&e.key);
            return XdpStat::PassTemplatedToUser;
        }
        _ => return XdpStat::PassTemplatedInvalid,
    }
    let Some(flow) = flow::begin(exporter) else {
        return XdpStat::PassTemplatedInvalid;
    };
    // v9 restarts show in its uptime, IPFIX ones in its export time.
    let clock = if version == V9 {
        e.time.sys_uptime_ms
    } else {
        e.time.unix_secs
    };
    e.export_key = ExportKey {
        exporter: *exporter,
        domain: e.key.domain,
        version,
        _pad: 0,
    };
    if !exports::note(&e.export_key, e.sequence, clock, e.records) {
        return XdpStat::PassExportRingFull;
    }
    e.set_index = 0;
    e.cursor = e.sets[0].start;
    // A step per record, another per biflow record, one per set.
    let steps = e.records + e.reverse_steps + e.set_count;
    e.reverse = 0;
    flow::for_each(steps, walk_record as *mut c_void, e, flow);
    let bytes = flow.finish();
    exports::add_bytes(&e.export_key, bytes);
    XdpStat::DropTemplatedAggregated
}

/// Checks the set at `cursor` and notes it, or concludes the walk.
extern "C" fn walk_set(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(e) = scratch() else {
        return 1;
    };
    let (cursor, len) = (e.cursor as usize, e.len as usize);
    if cursor >= len {
        return 1;
    }
    let conclude = |e: &mut Export, verdict| {
        e.verdict = verdict;
        1
    };
    if e.set_count as usize >= MAX_SETS || cursor + 4 > len {
        return conclude(e, INVALID);
    }
    let (id, set_len) = (be16(&e.buf, cursor), usize::from(be16(&e.buf, cursor + 2)));
    if set_len < 4 || cursor + set_len > len {
        return conclude(e, INVALID);
    }
    if id < FIRST_DATA_SET_ID {
        return conclude(e, TEMPLATES_TO_USER);
    }
    e.key.template_id = id;
    // SAFETY: the value is copied out at once; a concurrent update from
    // userspace replaces it whole for later packets.
    let Some(template) = (unsafe { TEMPLATES.get(&e.key) }) else {
        return conclude(e, TO_USER);
    };
    let record_len = usize::from(template.record_len);
    if record_len < usize::from(MIN_RECORD_LEN) || record_len > MAX_RECORD_LEN {
        return conclude(e, TO_USER);
    }
    // Trailing bytes shorter than a record are padding (RFC 3954 §5.3).
    let records = (set_len - 4) / record_len;
    e.records += records as u32;
    if template.rev_octets.present() {
        e.reverse_steps += records as u32;
    }
    if e.records > MAX_EXPORT_RECORDS {
        return conclude(e, INVALID);
    }
    let Some(set) = e.sets.get_mut(e.set_count as usize) else {
        return conclude(e, INVALID);
    };
    set.start = (cursor + 4) as u32;
    set.end = (cursor + 4 + records * record_len) as u32;
    set.template = *template;
    e.set_count += 1;
    e.cursor = (cursor + set_len) as u32;
    0
}

/// Aggregates the record at `cursor`, or moves on to the next set.
extern "C" fn walk_record(_index: u64, slots: *mut c_void) -> i64 {
    // SAFETY: `aggregate` runs this through `flow::for_each` with its `Export`.
    let (e, flow) = unsafe { flow::slots::<Export>(slots) };
    let Some(set) = e.sets.get(e.set_index as usize) else {
        return 1;
    };
    let cursor = e.cursor as usize & (MAX_EXPORT_LEN - 1);
    if cursor >= set.end as usize {
        e.set_index += 1;
        if let Some(next) = e.sets.get(e.set_index as usize) {
            e.cursor = next.start;
        }
        return 0;
    }
    let record_len = usize::from(set.template.record_len).min(MAX_RECORD_LEN);
    // A window of a constant power-of-two length: `record_into` masks field
    // offsets with it. Bytes past `record_len` are never read: compiled
    // templates keep every field inside the record.
    let Some(record) = e.buf.get(cursor..cursor + MAX_RECORD_LEN) else {
        return 1;
    };
    // RFC 5103 biflows: the reverse direction is a record of its own, in
    // a step of its own (after the forward one, whose record it turns
    // around). Both directions reach the one aggregation below: each call
    // site of it is another walk for the verifier, and two made the program
    // take 99% of the verifier's 1M-instruction budget (tests/xdp_verifier.rs).
    let counts = if e.reverse != 0 {
        e.reverse = 0;
        e.cursor = (cursor + record_len) as u32;
        set.template
            .reverse_into(record, flow.flags, &mut flow.record)
    } else {
        set.template
            .record_into(record, &e.time, flow.flags, &mut flow.record);
        if set.template.rev_octets.present() {
            e.reverse = 1;
        } else {
            e.cursor = (cursor + record_len) as u32;
        }
        true
    };
    if counts {
        flow.aggregate();
    }
    0
}

/// Whether template sets from this exporter's domain are still on their way
/// through userspace.
#[inline(always)]
fn held(domain: &TemplateKey) -> bool {
    // SAFETY (both): plain counters, copied out at once.
    let seen = unsafe { SEEN.get(domain) }.copied().unwrap_or(0);
    let done = unsafe { DONE.get(domain) }.copied().unwrap_or(0);
    seen > done
}

/// Counts an export with template sets passed up for `domain`.
#[inline(always)]
fn hold(domain: &TemplateKey) {
    // SAFETY (both adds): a live map value; other CPUs add to it too, hence
    // an atomic add (core's atomics lack RMW on the BPF target).
    if let Some(seen) = SEEN.get_ptr_mut(domain) {
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(seen, 1) };
    } else if SEEN.insert(domain, 1, u64::from(BPF_NOEXIST)).is_err() {
        // Another CPU created it meanwhile (or the map is full, and then
        // the data of this domain is parsed without the hold, as before it).
        if let Some(seen) = SEEN.get_ptr_mut(domain) {
            unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(seen, 1) };
        }
    }
}

/// Big-endian reads at an offset masked into the buffer (callers check
/// offsets against the export's length first).
#[inline(always)]
fn be16(buf: &[u8], at: usize) -> u16 {
    let at = at & (MAX_EXPORT_LEN - 1);
    match (buf.get(at), buf.get(at + 1)) {
        (Some(&a), Some(&b)) => u16::from_be_bytes([a, b]),
        _ => 0,
    }
}

#[inline(always)]
fn be32(buf: &[u8], at: usize) -> u32 {
    (u32::from(be16(buf, at)) << 16) | u32::from(be16(buf, at + 2))
}
