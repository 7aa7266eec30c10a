//! The NAT binding history at 1 M bindings: bytes per binding (counted by
//! this binary's allocator, allocator overhead aside) in session mode (one
//! public port each) and port-block mode (64-port blocks), and lookups per
//! second (the association's question: who held this public port then),
//! hits and misses. `cargo bench -p flowtally --bench nat`; a table row per
//! figure for BENCHMARKS.md.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    hint::black_box,
    net::{IpAddr, Ipv4Addr},
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

use flowtally::{
    nat::{Bindings, Limits},
    netflow::nat::{NatEvent, PortRange, event},
    rng::Rng,
};

/// Counts the bytes live on the heap.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's layout, as GlobalAlloc::alloc requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `dealloc` and `alloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const BINDINGS: u32 = 1_000_000;
/// Public addresses of the pool: 1000 ports (or blocks) each.
const ADDRESSES: u32 = 1_000;
const LOOKUPS: u32 = 5_000_000;
const T0: u64 = 1_800_000_000_000;
const BLOCK: u16 = 64;

fn public(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xc633_0000 + i % ADDRESSES))
}

/// Binding `i`: its public address, ports and start.
fn binding(i: u32, blocks: bool) -> (IpAddr, PortRange, u64) {
    let slot = (i / ADDRESSES) as u16;
    let ports = if blocks {
        PortRange {
            start: 1024 + slot * BLOCK,
            end: 1024 + slot * BLOCK + BLOCK - 1,
            step: 1,
        }
    } else {
        PortRange::one(1024 + slot)
    };
    (public(i), ports, T0 + u64::from(i))
}

fn build(blocks: bool) -> (Bindings, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    let mut bindings = Bindings::new(Limits {
        max_lifetime_ms: 86_400_000,
        memory_retention_ms: 86_400_000,
        max_bindings: BINDINGS as usize,
    });
    for i in 0..BINDINGS {
        let (ip, ports, at) = binding(i, blocks);
        let e = NatEvent {
            event: if blocks {
                event::PORT_BLOCK_ALLOCATION
            } else {
                event::NAT44_SESSION_CREATE
            },
            time_ms: at,
            started_ms: None,
            protocol: if blocks { 0 } else { 6 },
            inside: Some(IpAddr::V4(Ipv4Addr::from(0x6440_0000 + i))),
            inside_port: (!blocks).then_some(40_000),
            inside_vrf: 0,
            outside: Some(ip),
            outside_ports: ports,
            outside_vrf: 0,
        };
        bindings.apply(IpAddr::V4(Ipv4Addr::LOCALHOST), &e);
        // Persisting is the flush's business: not held here.
        if i % 65_536 == 0 {
            bindings.take_changes();
        }
    }
    bindings.take_changes();
    assert_eq!(bindings.len(), BINDINGS as usize);
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    (bindings, bytes)
}

/// Lookups per second, over random addresses: `hits` asks ports bound at
/// the time asked, else ports of the pool nobody holds.
fn lookups(bindings: &Bindings, blocks: bool, hits: bool) -> f64 {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let queries: Vec<(IpAddr, u16, u64)> = (0..LOOKUPS)
        .map(|_| {
            let i = rng.below(u64::from(BINDINGS)) as u32;
            let (ip, ports, at) = binding(i, blocks);
            let offset = rng.below(u64::from(ports.end - ports.start) + 1) as u16;
            // Every binding's ports are below 1024 + 1000 × 64; above them
            // nobody holds a port.
            let unbound = 1024 + 1000 * BLOCK + rng.below(400) as u16;
            let port = if hits { ports.start + offset } else { unbound };
            (ip, port, at + 1)
        })
        .collect();
    let started = Instant::now();
    let mut found = 0usize;
    for &(ip, port, at) in &queries {
        found += usize::from(black_box(bindings.lookup(0, ip, 6, port, at)).is_some());
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(found, if hits { queries.len() } else { 0 });
    f64::from(LOOKUPS) / elapsed
}

fn main() {
    for blocks in [false, true] {
        let mode = if blocks {
            "port-block mode (64-port blocks)"
        } else {
            "session mode"
        };
        let started = Instant::now();
        let (bindings, bytes) = build(blocks);
        let built = started.elapsed().as_secs_f64();
        println!(
            "| {mode}, {BINDINGS} bindings on {ADDRESSES} addresses | {:.0} bytes per binding \
             ({} MiB); built at {:.2} M events/s |",
            bytes as f64 / f64::from(BINDINGS),
            bytes >> 20,
            f64::from(BINDINGS) / built / 1e6
        );
        for hits in [true, false] {
            let rate = lookups(&bindings, blocks, hits);
            println!(
                "| {mode}, lookups ({}) | {:.2} M lookups/s ({:.0} ns each) |",
                if hits { "bound ports" } else { "unbound ports" },
                rate / 1e6,
                1e9 / rate
            );
        }
    }
}
