//! Scaling curves (`cargo xtask bench`): what a record, a lookup or a drain
//! costs, and what memory holds, as the work grows — aggregate map keys,
//! open sessions, exporters, templates per exporter. Prints a Markdown table
//! per curve and writes each as a data file (`$FLOWTALLY_BENCH_OUT/*.dat`)
//! that `cargo xtask bench` plots; BENCHMARKS.md explains them.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    fs,
    hint::black_box,
    net::Ipv4Addr,
    path::PathBuf,
    sync::atomic::{AtomicIsize, Ordering},
    time::Instant,
};

use flowtally::{
    aggregate::Aggregator,
    ip::to_ip,
    netflow::{
        Limits, TemplateCache, TemplateChange,
        encode::{Set, Template, export},
        layouts,
        sets::{FieldSpec, Header as SetsHeader, IPFIX},
        v5::{Record, encode},
    },
    rng::Rng,
    sessions::{Event, History},
    subscribers::SubscriberNets,
    xdp::{DataPlane, KernelConfig, KernelTemplates},
};
use flowtally_common::{
    DEFAULT_AGGREGATE_ENTRIES_V6, DEFAULT_OVERFLOW_RING_BYTES,
    agg::{FLAG_SCALE_SAMPLING, KEEP_ALL, Profile},
    table,
    v5::Header,
};

const SUBSCRIBERS: &str = "198.18.0.0/16";
const UNIX_SECS: u32 = 1_700_000_000;
/// Frames timed per point (each run once: a fresh frame, cold keys).
const SAMPLES: usize = 4000;

/// Heap in use, counted by the global allocator below.
static HEAP: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: forwards to the system allocator, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HEAP.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout, caller's contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HEAP.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: allocated above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("scaling bench: the XDP figures need root (BPF_PROG_TEST_RUN)");
        std::process::exit(1);
    }
    map_keys();
    sessions();
    templated("exporters", "exporters", &[1, 10, 100, 1000], |n| (n, 1));
    templated(
        "templates",
        "templates per exporter",
        &[1, 16, 128, 1024],
        |n| (1, n),
    );
}

/// XDP cost per record and drain cost per key as the IPv4 aggregate table
/// fills, and the kernel memory of maps sized for that many keys.
fn map_keys() {
    // One CPU: BPF_PROG_TEST_RUN runs the program where this thread runs,
    // so every key lands in one partition and is drained once.
    pin_to_cpu(0);
    let mut curve = Curve::new(
        "keys",
        "aggregate keys: XDP cost and kernel map memory",
        "keys in the aggregate table",
        "XDP ns per record (cold keys)",
        Some("kernel map memory, MiB (all maps)"),
    );
    let mut drain = Curve::new(
        "drain",
        "draining the aggregate table",
        "keys in the aggregate table",
        "drain CPU ns per key (through mmap)",
        None,
    );
    println!(
        "| keys | XDP ns/record | drain CPU ns/key | keys without a slot | kernel maps | \
         IPv4 table bytes per key |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for keys in [10_000u32, 30_000, 100_000, 300_000, 1_000_000] {
        // Sized from the configuration, with room to spare, as in the daemon.
        let entries = keys + keys / 4;
        let mut plane = DataPlane::start(&[], &config(entries)).expect("the XDP program loads");
        let frames: Vec<Vec<u8>> = (0..keys.div_ceil(30))
            .map(|f| udp_frame(EXPORTER, &v5_export(f * 30)))
            .collect();
        for frame in &frames {
            plane.run_frame(frame).unwrap();
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut total = 0u128;
        for _ in 0..SAMPLES {
            let frame = &frames[(rng.next_u64() % frames.len() as u64) as usize];
            total += plane.time_frame(frame, 1).unwrap().1.as_nanos();
        }
        let per_record = total as f64 / SAMPLES as f64 / 30.0;
        let maps = bpf_maps();
        let map_bytes: u64 = maps.iter().map(|m| m.memlock).sum();
        let cpus = aya::util::nr_cpus().unwrap() as u32;
        let table_entries = table::entries(table::shift_for(entries), cpus);
        let table_bytes: u64 = maps
            .iter()
            .filter(|m| m.max_entries == table_entries && m.value_size == 64)
            .map(|m| m.memlock)
            .sum();
        let expected = u64::from(keys.div_ceil(30) * 30);
        // CPU time, user and system, of this thread: the drain's work, not
        // the RCU grace period the swap waits for (a fixed ~10 ms per drain,
        // sleeping), nor other processes of a busy machine.
        let mut drainer = plane.take_drainer().unwrap();
        let started = thread_cpu();
        let mut drained = 0u64;
        let report = drainer.drain(|_, _| drained += 1).unwrap();
        let per_key = (thread_cpu() - started).as_nanos() as f64 / drained as f64;
        assert_eq!(report.map_entries + report.overflow_records, drained);
        // One partition: a key has at most one slot, and the rest came
        // through the overflow ring (once per run of their export).
        assert!(report.map_entries <= expected, "no key twice: {report:?}");
        let without_slot = expected - report.map_entries;
        assert!(
            without_slot * 100 < expected,
            "{without_slot} keys without a slot"
        );
        let mib = map_bytes as f64 / 1048576.0;
        let per_table_key = table_bytes as f64 / f64::from(keys);
        println!(
            "| {keys} | {per_record:.0} ns | {per_key:.0} ns | {without_slot} | {mib:.1} MiB | \
             {per_table_key:.0} B |"
        );
        curve.point(f64::from(keys), per_record, Some(mib));
        drain.point(f64::from(keys), per_key, None);
    }
    curve.write();
    drain.write();
}

/// Keeps this thread on `cpu`.
fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and
    // sched_setaffinity only touch the set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(
            rc,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Heap per open session and `whois` cost as the session history grows.
fn sessions() {
    let mut curve = Curve::new(
        "sessions",
        "open sessions: whois cost",
        "open sessions",
        "whois ns per lookup",
        None,
    );
    let mut memory = Curve::new(
        "session_memory",
        "open sessions: heap per open session (IPv4, one address each)",
        "open sessions",
        "bytes per session, whole history",
        Some("bytes per session, address index (at most)"),
    );
    println!(
        "\n| open sessions | whois ns | heap per session | of which the address index, at most |"
    );
    println!("|---:|---:|---:|---:|");
    for sessions in [10_000u32, 30_000, 100_000, 300_000, 1_000_000] {
        // The same sessions without an address keep everything but their
        // index entries and their one-address list: the difference bounds
        // the index from above.
        let without = {
            let before = HEAP.load(Ordering::Relaxed);
            let mut history = History::new();
            for n in 0..sessions {
                let mut event = start(n);
                event.framed_ip = None;
                history.apply(&event);
            }
            HEAP.load(Ordering::Relaxed) - before
        };
        let before = HEAP.load(Ordering::Relaxed);
        let mut history = History::new();
        for n in 0..sessions {
            history.apply(&start(n));
        }
        let with = HEAP.load(Ordering::Relaxed) - before;
        let per_session = with as f64 / f64::from(sessions);
        let index = (with - without) as f64 / f64::from(sessions);
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let lookups = 200_000;
        let started = Instant::now();
        let mut found = 0;
        for _ in 0..lookups {
            let x = rng.next_u64();
            let ip = Ipv4Addr::from(0x6440_0000 + (x % u64::from(sessions)) as u32);
            found += usize::from(black_box(history.whois(ip.into(), 1_800_000_000_000)).is_some());
        }
        let per_lookup = started.elapsed().as_nanos() as f64 / f64::from(lookups);
        assert_eq!(found, lookups as usize, "every address is held");
        println!("| {sessions} | {per_lookup:.0} ns | {per_session:.0} B | {index:.0} B |");
        curve.point(f64::from(sessions), per_lookup, None);
        memory.point(f64::from(sessions), per_session, Some(index));
    }
    curve.write();
    memory.write();
}

/// IPFIX cost per record, in XDP and on the socket path, with `(exporters,
/// templates per exporter)` compiled templates in use, every export of a
/// different exporter or template than the last.
fn templated(name: &str, x_label: &str, points: &[u32], shape: impl Fn(u32) -> (u32, u32)) {
    let mut curve = Curve::new(
        name,
        &format!("{x_label}: IPFIX cost per record"),
        x_label,
        "XDP ns per record",
        Some("socket path ns per record (decode + aggregate)"),
    );
    println!("\n| {x_label} | XDP ns/record | socket path ns/record |");
    println!("|---:|---:|---:|");
    for &n in points {
        let (exporters, templates) = shape(n);
        let config = config(1 << 20);
        let mut plane = DataPlane::start(&[], &config).expect("the XDP program loads");
        let mut kernel = plane.take_templates().unwrap();
        let mut cache = TemplateCache::new(Limits::default());
        let now_ms = u64::from(UNIX_SECS) * 1000;
        let mut exports = Vec::new();
        for e in 0..exporters {
            let ip = Ipv4Addr::from(u32::from(EXPORTER) + e);
            let exporter = to_ip(ip.into());
            for t in 0..templates {
                let id = 256 + t as u16;
                let mut out = Vec::new();
                cache
                    .decode(
                        &exporter,
                        &ipfix_template(id),
                        now_ms,
                        config.flags,
                        &mut out,
                    )
                    .unwrap();
                install(&mut cache, &mut kernel);
                let payload = ipfix_data(id, e * templates + t);
                exports.push((exporter, udp_frame(ip, &payload), payload));
            }
        }
        // Interleaved: consecutive exports come from different templates.
        let order: Vec<usize> = (0..SAMPLES).map(|i| i * 7919 % exports.len()).collect();
        let mut total = 0u128;
        for &i in &order {
            let (verdict, mean) = plane.time_frame(&exports[i].1, 1).unwrap();
            assert_eq!(verdict, 1, "aggregated in the kernel (XDP_DROP)");
            total += mean.as_nanos();
        }
        let xdp = total as f64 / order.len() as f64 / 20.0;
        let mut aggregator = Aggregator::new(
            config.profile,
            config.flags,
            SubscriberNets::new(&config.subscriber_networks),
        );
        let mut out = Vec::new();
        let started = Instant::now();
        for &i in &order {
            out.clear();
            let (exporter, _, payload) = &exports[i];
            cache
                .decode(exporter, black_box(payload), now_ms, config.flags, &mut out)
                .unwrap();
            for record in &out {
                aggregator.add(exporter, record);
            }
        }
        let socket = started.elapsed().as_nanos() as f64 / order.len() as f64 / 20.0;
        println!("| {n} | {xdp:.0} ns | {socket:.0} ns |");
        curve.point(f64::from(n), xdp, Some(socket));
    }
    curve.write();
}

fn install(cache: &mut TemplateCache, kernel: &mut KernelTemplates) {
    for change in cache.take_changes() {
        if let TemplateChange::Install(key, template) = change {
            kernel.install(&key, &template).unwrap();
        }
    }
}

const EXPORTER: Ipv4Addr = Ipv4Addr::new(198, 19, 64, 0);

fn config(aggregate_entries: u32) -> KernelConfig {
    KernelConfig {
        collector_ports: [2055].into(),
        subscriber_networks: vec![SUBSCRIBERS.parse().unwrap()],
        classes: Vec::new(),
        exporters: Vec::new(),
        billing_scope: Vec::new(),
        profile: Profile {
            keep: KEEP_ALL,
            bucket_ms: 60_000,
        },
        flags: FLAG_SCALE_SAMPLING,
        aggregate_entries,
        aggregate_entries_v6: DEFAULT_AGGREGATE_ENTRIES_V6,
        overflow_ring_bytes: DEFAULT_OVERFLOW_RING_BYTES,
        interfaces: Vec::new(),
        log_level: 0,
    }
}

/// 30 records, keys `first .. first + 30`: subscriber `i % 65536`, peer
/// `i / 65536`, so every key is distinct.
fn v5_export(first: u32) -> Vec<u8> {
    let header = Header {
        version: 5,
        sys_uptime: 100_000,
        unix_secs: UNIX_SECS,
        ..Header::default()
    };
    let records: Vec<Record> = (first..first + 30)
        .map(|i| Record {
            src: Ipv4Addr::from(0xc612_0000 + (i & 0xffff)).octets(),
            dst: Ipv4Addr::from(0xc613_8000 + (i >> 16)).octets(),
            packets: 10,
            octets: 15_000,
            first: 90_000,
            last: 99_000,
            src_port: 40_000,
            dst_port: 443,
            protocol: 6,
            ..Record::default()
        })
        .collect();
    encode(&header, &records)
}

fn ipfix_header() -> SetsHeader {
    SetsHeader {
        version: IPFIX,
        unix_secs: UNIX_SECS,
        sys_uptime_ms: 0,
        sequence: 0,
        domain: 1,
    }
}

fn ipfix_template(id: u16) -> Vec<u8> {
    let fields = layouts::V4_MILLISECONDS
        .iter()
        .map(|&(ie, len)| FieldSpec::iana(ie, len))
        .collect();
    export(
        &ipfix_header(),
        &[Set::Templates(vec![Template { id, fields }])],
        false,
    )
}

/// 20 records of template `id` from subscribers numbered from `seed`.
fn ipfix_data(id: u16, seed: u32) -> Vec<u8> {
    let records = (0..20u32)
        .map(|i| {
            let sub = Ipv4Addr::from(0xc612_0000 + (seed * 20 + i) % 65_536);
            let mut r = sub.octets().to_vec();
            r.extend_from_slice(&[198, 19, 128, i as u8]);
            r.extend_from_slice(&40_000u16.to_be_bytes());
            r.extend_from_slice(&443u16.to_be_bytes());
            r.push(6);
            r.extend_from_slice(&15_000u64.to_be_bytes());
            r.extend_from_slice(&10u64.to_be_bytes());
            let end = u64::from(UNIX_SECS) * 1000 - 1_000;
            r.extend_from_slice(&(end - 9_000).to_be_bytes());
            r.extend_from_slice(&end.to_be_bytes());
            r
        })
        .collect();
    export(&ipfix_header(), &[Set::Data { id, records }], false)
}

/// `payload` in UDP to port 2055 from `src`, in IPv4 in Ethernet.
fn udp_frame(src: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    let total = (20 + 8 + payload.len()) as u16;
    frame.extend_from_slice(&[0x45, 0]);
    frame.extend_from_slice(&total.to_be_bytes());
    frame.extend_from_slice(&[0, 1, 0, 0, 64, 17, 0, 0]);
    frame.extend_from_slice(&src.octets());
    frame.extend_from_slice(&[198, 19, 0, 1]);
    frame.extend_from_slice(&[0x30, 0x39, 0x08, 0x07]);
    frame.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(payload);
    frame
}

fn start(n: u32) -> Event {
    Event::start_v4(
        format!("198.18.0.{}", n % 200),
        format!("s{n}"),
        format!("user{n}"),
        Ipv4Addr::from(0x6440_0000 + n),
        1_700_000_000_000 + u64::from(n),
    )
}

/// A BPF map of this process, from its fdinfo.
struct MapInfo {
    value_size: u64,
    max_entries: u64,
    /// Memory charged to it.
    memlock: u64,
}

/// This process's BPF maps.
fn bpf_maps() -> Vec<MapInfo> {
    let mut maps = Vec::new();
    for fd in fs::read_dir("/proc/self/fdinfo").unwrap().flatten() {
        let info = fs::read_to_string(fd.path()).unwrap_or_default();
        if info.contains("map_id:") {
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            maps.push(MapInfo {
                value_size: field("value_size:"),
                max_entries: field("max_entries:"),
                memlock: field("memlock:"),
            });
        }
    }
    maps
}

/// CPU time of this thread (user and system).
fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One curve, written as `# title|x|y[|y2]` then `x y [y2]` lines.
struct Curve {
    name: String,
    text: String,
}

impl Curve {
    fn new(name: &str, title: &str, x: &str, y: &str, y2: Option<&str>) -> Self {
        let mut text = format!("# {title}|{x}|{y}");
        if let Some(y2) = y2 {
            text += &format!("|{y2}");
        }
        text.push('\n');
        Self {
            name: name.into(),
            text,
        }
    }

    fn point(&mut self, x: f64, y: f64, y2: Option<f64>) {
        self.text += &format!("{x} {y:.1}");
        if let Some(y2) = y2 {
            self.text += &format!(" {y2:.1}");
        }
        self.text.push('\n');
    }

    fn write(&self) {
        let dir = std::env::var_os("FLOWTALLY_BENCH_OUT").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench"),
            PathBuf::from,
        );
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("{}.dat", self.name)), &self.text).unwrap();
    }
}
