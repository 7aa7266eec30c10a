//! The XDP program: finds flow exports (UDP to a collector port) among the
//! frames of an interface and counts every frame by verdict. It never drops
//! or rewrites anything yet; flow exports continue to the socket path.
#![no_std]
#![no_main]

mod headers;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{HashMap, PerCpuArray},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use flowtally_common::{Counter, MAX_COLLECTOR_PORTS, XdpStat};

use crate::headers::{Frame, Transport};

#[map(name = "STATS")]
static STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(XdpStat::COUNT, 0);

#[map(name = "COLLECTOR_PORTS")]
static COLLECTOR_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(MAX_COLLECTOR_PORTS, 0);

#[xdp]
pub fn flowtally(ctx: XdpContext) -> u32 {
    let frame = Frame::new(&ctx);
    let stat = classify(&ctx, &frame);
    count(stat, frame.len());
    xdp_action::XDP_PASS
}

fn classify(ctx: &XdpContext, frame: &Frame) -> XdpStat {
    match frame.transport() {
        Transport::Udp { dst_port } => {
            // SAFETY: the map is only read here; a concurrent update replaces
            // a `u8` flag we do not dereference beyond `is_some`.
            if unsafe { COLLECTOR_PORTS.get(dst_port) }.is_some() {
                XdpStat::PassFlowExport
            } else {
                XdpStat::PassOther
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
fn count(stat: XdpStat, len: usize) {
    if let Some(counter) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, so nothing else writes it while we run.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += len as u64;
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
