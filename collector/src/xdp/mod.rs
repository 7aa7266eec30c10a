//! Loading the embedded XDP program and attaching it to interfaces.
//!
//! Attachments are bpf_links held by this process only (never pinned), so
//! the kernel detaches them when the process exits, even after a crash.

mod batch;
mod drain;
mod integrity;
mod rcu_barrier;
mod stats;
mod table;

use std::{
    collections::BTreeSet,
    fmt, io,
    net::IpAddr,
    os::fd::{AsFd as _, OwnedFd},
    sync::{Arc, Mutex},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, LpmTrie, Map, MapData, PerCpuHashMap, PerCpuValues, ProgramArray,
        lpm_trie::Key,
    },
    programs::{ProgramError, TestRun as _, TestRunOptions, Xdp, XdpMode, links::FdLink},
};
use flowtally_common::{
    ACTIVE_MAP, AGGREGATE_MAPS, BILLING_SCOPE_MAP, CLASS_NETS_MAP, COLLECTOR_PORTS_MAP,
    EXPORTERS_MAP, GLOBAL_BUCKET_MS, GLOBAL_FLAGS, GLOBAL_KEEP_FIELDS, OVERFLOW_RING,
    RECORD_STATS_MAP, STATS_MAP, SUBSCRIBER_NETS_MAP,
    agg::{
        AggKey, AggValue, FLAG_BILLING_SCOPE, FLAG_CLASSES, FLAG_EXPORTER_ALLOWLIST,
        FLAG_INTERFACE_FLOWS, Ip, Profile, ScopeKey,
    },
    class_table::{self, CLASS_V4_MAP},
    interfaces::{INTERFACE_FLOWS_MAP, InterfaceFlows},
    members::{NetsV6, SUBSCRIBER_V4_MAP, SUBSCRIBER_V6_MAP},
    sequence::{EXPORT_BYTES_MAP, EXPORTS_RING},
    sflow::{self, SourceKey, SourceState},
    table::{
        self as agg_table, GLOBAL_TABLE_CPUS, GLOBAL_TABLE_SHIFT, GLOBAL_TABLE_V6_SHIFT,
        TABLE_V4_MAP, TABLE_V6_MAP, TableKey,
    },
    template::{
        CompiledTemplate, MAX_RECORD_LEN, MIN_RECORD_LEN, TEMPLATE_SETS_DONE_MAP,
        TEMPLATE_SETS_SEEN_MAP, TEMPLATES_MAP, TemplateKey,
    },
};
use ipnet::IpNet;
use tokio::{
    io::{Interest, unix::AsyncFd},
    time::MissedTickBehavior,
};

pub use self::{
    drain::{DrainError, Drained, Drainer, OverflowReader, Tables},
    integrity::{ExportRing, KernelIntegrity, read_exports},
    stats::KernelStats,
};
use self::{rcu_barrier::RcuBarrier, table::MappedTable};
use crate::{
    classes::class_table,
    ip::{to_ip, to_prefix},
    subscribers::{subscriber_list_v6, subscriber_table},
};

/// The object `collector/build.rs` compiled from `collector-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flowtally"));
const PROGRAM: &str = "flowtally";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (XDP_FLAGS_DRV_MODE).
    Native,
    /// In the generic receive path (XDP_FLAGS_SKB_MODE), for any interface.
    Generic,
}

impl AttachMode {
    fn xdp_mode(self) -> XdpMode {
        match self {
            Self::Native => XdpMode::Driver,
            Self::Generic => XdpMode::Skb,
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Generic => "generic",
        })
    }
}

/// Why the XDP data plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("loading the eBPF object failed: {}{}", error_chain(.0), privilege_hint(.0))]
    Load(aya::EbpfError),
    #[error("the kernel rejected the XDP program: {}{}", error_chain(.0), privilege_hint(.0))]
    Verify(aya::programs::ProgramError),
    #[error("the eBPF object lacks {0}")]
    Missing(&'static str),
    #[error("cannot configure map {map}: {error}")]
    Map {
        map: &'static str,
        error: aya::maps::MapError,
    },
    #[error("cannot attach to {iface}: native: {native}; generic: {generic}")]
    Attach {
        iface: String,
        native: String,
        generic: String,
    },
    #[error("cannot set up draining: {0}")]
    Barrier(io::Error),
    #[error("cannot map the aggregate table: {0}")]
    Table(io::Error),
    #[error("cannot set up draining: {0}")]
    Drain(DrainError),
    #[error(
        "{iface} was attached through netlink, not a bpf_link (kernel older than 5.9?); \
         refusing, since such an attachment outlives a crash"
    )]
    NotALink { iface: String },
}

/// Possible CPUs: what `bpf_get_smp_processor_id` stays below, so the
/// tables' partitions per generation.
fn possible_cpus() -> Result<u32, XdpError> {
    let cpus = aya::util::nr_cpus()
        .map_err(|(file, error)| XdpError::Table(io::Error::other(format!("{file}: {error}"))))?;
    u32::try_from(cpus).map_err(|_| XdpError::Table(io::Error::other("too many CPUs")))
}

/// Adds what to do when the cause is missing privileges.
fn privilege_hint(err: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut source = Some(err);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES))
        {
            return " (needs root, or CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON)";
        }
        source = err.source();
    }
    ""
}

/// One interface the program is attached to. Dropping it detaches.
#[derive(Debug)]
pub struct Attachment {
    pub iface: String,
    pub mode: AttachMode,
    _link: FdLink,
}

/// What the kernel side is told at load time.
#[derive(Clone, Debug)]
pub struct KernelConfig {
    pub collector_ports: BTreeSet<u16>,
    pub subscriber_networks: Vec<IpNet>,
    /// Destination class networks and their class numbers; empty: none
    /// (no lookup per record).
    pub classes: Vec<(IpNet, u8)>,
    /// Allowed exporters; empty means any.
    pub exporters: Vec<IpAddr>,
    /// The billing scope; empty means everything counts.
    pub billing_scope: Vec<ScopeKey>,
    pub profile: Profile,
    /// `agg::FLAG_*` bits except the allow-list, which `exporters` implies.
    pub flags: u32,
    /// Keys per CPU of the IPv4 table, and of the IPv6 map in all.
    pub aggregate_entries: u32,
    /// Keys per CPU of the IPv6 table.
    pub aggregate_entries_v6: u32,
    pub overflow_ring_bytes: u32,
    /// Interfaces to count flow bytes on (the billed ones); empty: none.
    pub interfaces: Vec<ScopeKey>,
    /// aya-log level below which kernel log statements emit nothing (0:
    /// none); see [`kernel_log_level`].
    pub log_level: u8,
}

/// The loaded program, its maps and its attachments.
pub struct DataPlane {
    ebpf: Ebpf,
    attachments: Vec<Attachment>,
    /// The tables' log2 slots per partition, and partitions.
    table_shift: u32,
    table_v6_shift: u32,
    table_cpus: u32,
}

impl DataPlane {
    /// Loads the program configured by `config` and attaches it to every
    /// interface, native mode first, then generic.
    pub fn start(interfaces: &[String], config: &KernelConfig) -> Result<Self, XdpError> {
        let log_level = config.log_level;
        let mut flags = config.flags;
        if !config.exporters.is_empty() {
            flags |= FLAG_EXPORTER_ALLOWLIST;
        }
        if !config.billing_scope.is_empty() {
            flags |= FLAG_BILLING_SCOPE;
        }
        if !config.interfaces.is_empty() {
            flags |= FLAG_INTERFACE_FLOWS;
        }
        if !config.classes.is_empty() {
            flags |= FLAG_CLASSES;
        }
        let table_cpus = possible_cpus()?;
        let table_shift = agg_table::shift_for(config.aggregate_entries);
        let table_v6_shift = agg_table::shift_for(config.aggregate_entries_v6);
        let slots = |setting: &str, entries: u32, shift: u32| {
            u32::try_from(agg_table::entries(shift, table_cpus)).map_err(|_| {
                XdpError::Table(io::Error::other(format!(
                    "{setting} = {entries} on {table_cpus} CPUs needs more than 2^32 slots"
                )))
            })
        };
        let table_entries = slots(
            "maps.aggregate_entries",
            config.aggregate_entries,
            table_shift,
        )?;
        let table_v6_entries = slots(
            "maps.aggregate_entries_v6",
            config.aggregate_entries_v6,
            table_v6_shift,
        )?;
        let mut loader = EbpfLoader::new();
        loader
            .override_global(aya_log::LEVEL, &log_level, true)
            .override_global(GLOBAL_TABLE_SHIFT, &table_shift, true)
            .override_global(GLOBAL_TABLE_V6_SHIFT, &table_v6_shift, true)
            .override_global(GLOBAL_TABLE_CPUS, &table_cpus, true)
            .map_max_entries(TABLE_V4_MAP, table_entries)
            .map_max_entries(TABLE_V6_MAP, table_v6_entries)
            .override_global(GLOBAL_BUCKET_MS, &config.profile.bucket_ms, true)
            .override_global(GLOBAL_KEEP_FIELDS, &config.profile.keep, true)
            .override_global(GLOBAL_FLAGS, &flags, true)
            .map_max_entries(OVERFLOW_RING, config.overflow_ring_bytes);
        for name in AGGREGATE_MAPS {
            loader.map_max_entries(name, config.aggregate_entries);
        }
        // 16 MiB only where classes are looked up.
        if config.classes.is_empty() {
            loader.map_max_entries(CLASS_V4_MAP, 1);
        } else {
            loader.map_max_entries(CLASS_V4_MAP, class_table::V4_TABLE_WORDS);
        }
        let mut ebpf = loader.load(OBJECT).map_err(XdpError::Load)?;
        fill_maps(&mut ebpf, config)?;

        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or(XdpError::Missing("the XDP program"))?
            .try_into()
            .map_err(XdpError::Verify)?;
        program.load().map_err(XdpError::Verify)?;
        load_sflow(&mut ebpf)?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or(XdpError::Missing("the XDP program"))?
            .try_into()
            .map_err(XdpError::Verify)?;

        let mut attachments = Vec::with_capacity(interfaces.len());
        for iface in interfaces {
            attachments.push(attach(program, iface)?);
        }
        Ok(Self {
            ebpf,
            attachments,
            table_shift,
            table_v6_shift,
            table_cpus,
        })
    }

    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// Each program's name and the instructions the verifier processed to
    /// accept it (its limit is 1 000 000; `None` before Linux 5.16).
    pub fn verified_instructions(&self) -> Vec<(&'static str, Option<u32>)> {
        [PROGRAM, sflow::SFLOW_PROGRAM_NAME]
            .into_iter()
            .map(|name| {
                let count = self
                    .ebpf
                    .program(name)
                    .and_then(|program| program.info().ok())
                    .and_then(|info| info.verified_instruction_count());
                (name, count)
            })
            .collect()
    }

    /// The main program's kernel id, for profiling it
    /// (`benches/datapath.rs`).
    pub fn program_id(&self) -> Option<u32> {
        let info = self.ebpf.program(PROGRAM)?.info().ok()?;
        Some(info.id())
    }

    /// Runs the program once on `frame` in the kernel (BPF_PROG_TEST_RUN),
    /// as if it had arrived on an interface; returns the XDP action. Used by
    /// the fixture tests and benchmarks.
    pub fn run_frame(&self, frame: &[u8]) -> Result<u32, ProgramError> {
        self.time_frame(frame, 1).map(|(verdict, _)| verdict)
    }

    /// Runs the program `repeat` times on `frame` in the kernel and returns
    /// its verdict and the kernel's mean time per run (BPF_PROG_TEST_RUN);
    /// for benchmarks.
    pub fn time_frame(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration), ProgramError> {
        let program: &Xdp = self
            .ebpf
            .program(PROGRAM)
            .expect("loaded in start()")
            .try_into()?;
        let result = program.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        })?;
        Ok((result.return_value, result.duration))
    }

    /// Takes the per-CPU counter maps, for `/metrics`.
    pub fn take_stats(&mut self) -> Result<KernelStats, XdpError> {
        let frames = self.take(STATS_MAP)?;
        let records = self.take(RECORD_STATS_MAP)?;
        let samples = self.take(sflow::SAMPLE_STATS_MAP)?;
        KernelStats::new(frames, records, samples).map_err(|error| XdpError::Map {
            map: STATS_MAP,
            error,
        })
    }

    /// Takes the aggregate table and maps, `ACTIVE` and the overflow ring,
    /// for draining.
    pub fn take_drainer(&mut self) -> Result<Drainer, XdpError> {
        let map_error = |map| move |error| XdpError::Map { map, error };
        let tables = Tables {
            v4: self.take_table(TABLE_V4_MAP, self.table_shift)?,
            v6: self.take_table(TABLE_V6_MAP, self.table_v6_shift)?,
        };
        let map = |plane: &mut Self, name| -> Result<_, XdpError> {
            plane.take(name)?.try_into().map_err(map_error(name))
        };
        let maps = [map(self, AGGREGATE_MAPS[0])?, map(self, AGGREGATE_MAPS[1])?];
        let Map::Array(active) = self.take(ACTIVE_MAP)? else {
            return Err(XdpError::Missing(ACTIVE_MAP));
        };
        let barrier = RcuBarrier::new(active.fd().as_fd()).map_err(XdpError::Barrier)?;
        let active = Map::Array(active)
            .try_into()
            .map_err(map_error(ACTIVE_MAP))?;
        let overflow = self
            .take(OVERFLOW_RING)?
            .try_into()
            .map_err(map_error(OVERFLOW_RING))?;
        Drainer::new(tables, maps, active, barrier, overflow).map_err(XdpError::Drain)
    }

    fn take_table<K: TableKey>(
        &mut self,
        name: &'static str,
        shift: u32,
    ) -> Result<MappedTable<K>, XdpError> {
        let Map::Array(table) = self.take(name)? else {
            return Err(XdpError::Missing(name));
        };
        MappedTable::new(table, shift, self.table_cpus).map_err(XdpError::Table)
    }

    /// Takes the `EXPORTS` ring and the per-interface flow counters.
    pub fn take_integrity(&mut self) -> Result<KernelIntegrity, XdpError> {
        let map_error = |map| move |error| XdpError::Map { map, error };
        let ring = self
            .take(EXPORTS_RING)?
            .try_into()
            .map_err(map_error(EXPORTS_RING))?;
        let export_bytes = self
            .take(EXPORT_BYTES_MAP)?
            .try_into()
            .map_err(map_error(EXPORT_BYTES_MAP))?;
        let interfaces = self
            .take(INTERFACE_FLOWS_MAP)?
            .try_into()
            .map_err(map_error(INTERFACE_FLOWS_MAP))?;
        Ok(KernelIntegrity::new(ring, export_bytes, interfaces))
    }

    /// Takes the compiled-template map, for installing what the socket path
    /// learns.
    pub fn take_templates(&mut self) -> Result<KernelTemplates, XdpError> {
        let mut take = |name: &'static str| -> Result<Map, XdpError> { self.take(name) };
        let map_error = |map| move |error| XdpError::Map { map, error };
        Ok(KernelTemplates {
            map: take(TEMPLATES_MAP)?
                .try_into()
                .map_err(map_error(TEMPLATES_MAP))?,
            seen: take(TEMPLATE_SETS_SEEN_MAP)?
                .try_into()
                .map_err(map_error(TEMPLATE_SETS_SEEN_MAP))?,
            done: take(TEMPLATE_SETS_DONE_MAP)?
                .try_into()
                .map_err(map_error(TEMPLATE_SETS_DONE_MAP))?,
            waiting_since: std::collections::HashMap::new(),
        })
    }

    /// Takes the sFlow maps: per-source states, renormalised rates, and
    /// the clock offset (set at start, and again at each flush).
    pub fn take_sflow(&mut self) -> Result<KernelSflow, XdpError> {
        let map_error = |map| move |error| XdpError::Map { map, error };
        let mut take = |name: &'static str| -> Result<Map, XdpError> { self.take(name) };
        Ok(KernelSflow {
            sources: take(sflow::SOURCES_MAP)?
                .try_into()
                .map_err(map_error(sflow::SOURCES_MAP))?,
            rates: take(sflow::RATES_MAP)?
                .try_into()
                .map_err(map_error(sflow::RATES_MAP))?,
            clock: take(sflow::CLOCK_MAP)?
                .try_into()
                .map_err(map_error(sflow::CLOCK_MAP))?,
        })
    }

    /// The reader of the kernel's aya-log records, if the object logs.
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        aya_log::EbpfLogger::init(&mut self.ebpf)
            .inspect_err(|err| tracing::warn!("kernel log forwarding unavailable: {err}"))
            .ok()
    }

    fn take(&mut self, name: &'static str) -> Result<Map, XdpError> {
        self.ebpf.take_map(name).ok_or(XdpError::Missing(name))
    }
}

/// The kernel's compiled templates, and the hold on data of exporters whose
/// template sets are still on their way through userspace (see
/// `TEMPLATE_SETS_SEEN_MAP`).
pub struct KernelTemplates {
    map: HashMap<MapData, TemplateKey, CompiledTemplate>,
    seen: HashMap<MapData, TemplateKey, u64>,
    done: HashMap<MapData, TemplateKey, u64>,
    /// Domains held since when (Unix ms), to lift holds whose export never
    /// reached userspace (a full socket buffer).
    waiting_since: std::collections::HashMap<TemplateKey, u64>,
}

/// How long a hold may wait for its export before it is lifted.
const STALE_HOLD_MS: u64 = 5_000;

impl KernelTemplates {
    /// Makes the kernel parse exports with `key` through `template`, or
    /// leave them to the socket path if the kernel cannot (record length
    /// outside its bounds).
    pub fn install(
        &mut self,
        key: &TemplateKey,
        template: &CompiledTemplate,
    ) -> Result<(), aya::maps::MapError> {
        let len = usize::from(template.record_len);
        if len < usize::from(MIN_RECORD_LEN) || len > MAX_RECORD_LEN {
            return self.remove(key);
        }
        self.map.insert(key, template, 0)
    }

    /// Leaves exports with `key` to the socket path.
    pub fn remove(&mut self, key: &TemplateKey) -> Result<(), aya::maps::MapError> {
        match self.map.remove(key) {
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            other => other,
        }
    }

    /// Userspace has processed (and applied) one export with template sets
    /// from `domain` (`template_id` 0). Never counts past what the kernel
    /// saw: exports that came another way must not lift a later hold.
    pub fn release(&mut self, domain: &TemplateKey) -> Result<(), aya::maps::MapError> {
        let seen = self.seen.get(domain, 0).unwrap_or(0);
        let done = self.done.get(domain, 0).unwrap_or(0);
        let done = (done + 1).min(seen);
        if done >= seen {
            self.waiting_since.remove(domain);
        }
        self.done.insert(domain, done, 0)
    }

    /// Lifts holds that have waited more than 5 s for their export: it was
    /// lost before userspace (and counted there as a socket drop), so the
    /// templates in the kernel are as current as they will get.
    pub fn release_stale(&mut self, now_ms: u64) -> Result<(), aya::maps::MapError> {
        let held: Vec<(TemplateKey, u64)> = self
            .seen
            .iter()
            .filter_map(Result::ok)
            .filter(|(key, seen)| self.done.get(key, 0).unwrap_or(0) < *seen)
            .collect();
        self.waiting_since
            .retain(|key, _| held.iter().any(|(held, _)| held == key));
        for (key, seen) in held {
            let since = *self.waiting_since.entry(key).or_insert(now_ms);
            if now_ms.saturating_sub(since) > STALE_HOLD_MS {
                self.done.insert(key, seen, 0)?;
                self.waiting_since.remove(&key);
            }
        }
        Ok(())
    }
}

/// The kernel's sFlow state (see `flowtally_common::sflow`).
pub struct KernelSflow {
    sources: PerCpuHashMap<MapData, SourceKey, SourceState>,
    rates: HashMap<MapData, SourceKey, u32>,
    clock: Array<MapData, u64>,
}

impl KernelSflow {
    /// Every source's state, its CPUs' partials merged.
    pub fn sources(&self) -> Vec<(SourceKey, SourceState)> {
        self.sources
            .iter()
            .filter_map(Result::ok)
            .map(|(key, per_cpu)| {
                let mut state = SourceState::default();
                for partial in per_cpu.iter() {
                    state.merge(partial);
                }
                (key, state)
            })
            .collect()
    }

    /// Installs renormalised sampling rates.
    pub fn set_rates(&mut self, rates: &[(SourceKey, u32)]) -> Result<(), aya::maps::MapError> {
        for (key, rate) in rates {
            self.rates.insert(key, rate, 0)?;
        }
        Ok(())
    }

    /// Tells the kernel the offset from its monotonic clock to Unix time
    /// (arrival times are wall-clock; NTP moves the offset, hence per flush).
    pub fn set_clock(&mut self) -> Result<(), aya::maps::MapError> {
        set_clock(&mut self.clock)
    }
}

/// Writes Unix time minus `CLOCK_MONOTONIC` (ns) into the kernel's clock map.
fn set_clock<T: std::borrow::BorrowMut<MapData>>(
    clock: &mut Array<T, u64>,
) -> Result<(), aya::maps::MapError> {
    let now = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime into a timespec we own.
        unsafe { libc::clock_gettime(clock, &raw mut ts) };
        ts.tv_sec as i128 * 1_000_000_000 + i128::from(ts.tv_nsec)
    };
    let offset = now(libc::CLOCK_REALTIME) - now(libc::CLOCK_MONOTONIC);
    clock.set(0, offset as u64, 0)
}

/// How often the rings are read without a wakeup: the kernel wakes their
/// readers only once a quarter of a ring waits (`collector-ebpf/src/wakeup.rs`).
const RING_READ_EVERY: Duration = Duration::from_millis(100);

/// Reads the overflow ring as the kernel adds to it, handing each aggregate
/// to `sink`, until dropped.
pub async fn read_overflow(
    reader: Arc<Mutex<OverflowReader>>,
    mut sink: impl FnMut(AggKey, &AggValue),
) {
    let fd = reader
        .lock()
        .expect("overflow lock poisoned")
        .as_fd()
        .try_clone_to_owned();
    read_ring(fd, "overflow ring", || {
        reader
            .lock()
            .expect("overflow lock poisoned")
            .read(&mut sink);
    })
    .await;
}

/// Calls `read` when the ring `fd` wakes its reader and every
/// [`RING_READ_EVERY`], until dropped.
pub(crate) async fn read_ring(fd: io::Result<OwnedFd>, what: &str, mut read: impl FnMut()) {
    // SAFETY: the fd is our own duplicate, open until the `AsyncFd` drops.
    let registered = fd.and_then(|fd| {
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|err| err.into_parts().1)
    });
    let ready = registered
        .inspect_err(|err| tracing::warn!("{what} read on a timer only: {err}"))
        .ok();
    let mut tick = tokio::time::interval(RING_READ_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        match &ready {
            Some(ready) => tokio::select! {
                woken = ready.readable() => match woken {
                    Ok(mut guard) => guard.clear_ready(),
                    Err(_) => return,
                },
                _ = tick.tick() => {}
            },
            None => {
                tick.tick().await;
            }
        }
        read();
    }
}

/// Forwards the kernel's aya-log records to `tracing` until dropped.
pub async fn forward_kernel_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the logger owns its ring buffer fd, open until the logger
    // (and so this `AsyncFd`) is dropped.
    let mut logger = match unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) } {
        Ok(logger) => logger,
        Err(err) => {
            tracing::warn!("kernel log forwarding unavailable: {err}");
            return;
        }
    };
    loop {
        let Ok(mut guard) = logger.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

fn fill_maps(ebpf: &mut Ebpf, config: &KernelConfig) -> Result<(), XdpError> {
    fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Map, XdpError> {
        ebpf.map_mut(name).ok_or(XdpError::Missing(name))
    }
    let map_error = |map| move |error| XdpError::Map { map, error };

    let mut ports: HashMap<_, u16, u8> = map_mut(ebpf, COLLECTOR_PORTS_MAP)?
        .try_into()
        .map_err(map_error(COLLECTOR_PORTS_MAP))?;
    for &port in &config.collector_ports {
        ports
            .insert(port, 1, 0)
            .map_err(map_error(COLLECTOR_PORTS_MAP))?;
    }

    let mut exporters: HashMap<_, Ip, u8> = map_mut(ebpf, EXPORTERS_MAP)?
        .try_into()
        .map_err(map_error(EXPORTERS_MAP))?;
    for &exporter in &config.exporters {
        exporters
            .insert(to_ip(exporter), 1, 0)
            .map_err(map_error(EXPORTERS_MAP))?;
    }

    let mut scope: HashMap<_, ScopeKey, u8> = map_mut(ebpf, BILLING_SCOPE_MAP)?
        .try_into()
        .map_err(map_error(BILLING_SCOPE_MAP))?;
    for key in &config.billing_scope {
        scope
            .insert(key, 1, 0)
            .map_err(map_error(BILLING_SCOPE_MAP))?;
    }

    let mut interfaces: PerCpuHashMap<_, ScopeKey, InterfaceFlows> =
        map_mut(ebpf, INTERFACE_FLOWS_MAP)?
            .try_into()
            .map_err(map_error(INTERFACE_FLOWS_MAP))?;
    let cpus = aya::util::nr_cpus().map_err(|(_, error)| XdpError::Map {
        map: INTERFACE_FLOWS_MAP,
        error: aya::maps::MapError::IoError(error),
    })?;
    for key in &config.interfaces {
        let zeros =
            PerCpuValues::try_from(vec![InterfaceFlows::default(); cpus]).map_err(|error| {
                XdpError::Map {
                    map: INTERFACE_FLOWS_MAP,
                    error: aya::maps::MapError::IoError(error),
                }
            })?;
        interfaces
            .insert(key, zeros, 0)
            .map_err(map_error(INTERFACE_FLOWS_MAP))?;
    }

    let mut table: Array<_, u64> = map_mut(ebpf, SUBSCRIBER_V4_MAP)?
        .try_into()
        .map_err(map_error(SUBSCRIBER_V4_MAP))?;
    for (index, word) in subscriber_table(&config.subscriber_networks) {
        table
            .set(index, word, 0)
            .map_err(map_error(SUBSCRIBER_V4_MAP))?;
    }

    let mut list: Array<_, NetsV6> = map_mut(ebpf, SUBSCRIBER_V6_MAP)?
        .try_into()
        .map_err(map_error(SUBSCRIBER_V6_MAP))?;
    list.set(0, subscriber_list_v6(&config.subscriber_networks), 0)
        .map_err(map_error(SUBSCRIBER_V6_MAP))?;

    let mut clock: Array<_, u64> = map_mut(ebpf, sflow::CLOCK_MAP)?
        .try_into()
        .map_err(map_error(sflow::CLOCK_MAP))?;
    set_clock(&mut clock).map_err(map_error(sflow::CLOCK_MAP))?;

    let mut nets: LpmTrie<_, Ip, u8> = map_mut(ebpf, SUBSCRIBER_NETS_MAP)?
        .try_into()
        .map_err(map_error(SUBSCRIBER_NETS_MAP))?;
    for net in &config.subscriber_networks {
        let (ip, len) = to_prefix(net);
        nets.insert(&Key::new(u32::from(len), ip), 1, 0)
            .map_err(map_error(SUBSCRIBER_NETS_MAP))?;
    }

    let mut table: Array<_, u64> = map_mut(ebpf, CLASS_V4_MAP)?
        .try_into()
        .map_err(map_error(CLASS_V4_MAP))?;
    for (index, word) in class_table(&config.classes) {
        table.set(index, word, 0).map_err(map_error(CLASS_V4_MAP))?;
    }

    let mut classes: LpmTrie<_, Ip, u8> = map_mut(ebpf, CLASS_NETS_MAP)?
        .try_into()
        .map_err(map_error(CLASS_NETS_MAP))?;
    for (net, class) in &config.classes {
        let (ip, len) = to_prefix(net);
        classes
            .insert(&Key::new(u32::from(len), ip), class, 0)
            .map_err(map_error(CLASS_NETS_MAP))?;
    }
    Ok(())
}

/// Loads the sFlow program and puts it where the main program tail-calls it.
fn load_sflow(ebpf: &mut Ebpf) -> Result<(), XdpError> {
    let program: &mut Xdp = ebpf
        .program_mut(sflow::SFLOW_PROGRAM_NAME)
        .ok_or(XdpError::Missing("the sFlow XDP program"))?
        .try_into()
        .map_err(XdpError::Verify)?;
    program.load().map_err(XdpError::Verify)?;
    let fd = program
        .fd()
        .map_err(XdpError::Verify)?
        .try_clone()
        .map_err(|err| XdpError::Verify(err.into()))?;
    let map_error = |error| XdpError::Map {
        map: sflow::PROGRAMS_MAP,
        error,
    };
    let mut programs: ProgramArray<_> = ebpf
        .map_mut(sflow::PROGRAMS_MAP)
        .ok_or(XdpError::Missing(sflow::PROGRAMS_MAP))?
        .try_into()
        .map_err(map_error)?;
    programs.set(sflow::PROGRAM, &fd, 0).map_err(map_error)
}

fn attach(program: &mut Xdp, iface: &str) -> Result<Attachment, XdpError> {
    let mut errors = Vec::new();
    for mode in [AttachMode::Native, AttachMode::Generic] {
        match program.attach(iface, mode.xdp_mode()) {
            Ok(id) => {
                let link = program.take_link(id).map_err(|err| XdpError::Attach {
                    iface: iface.into(),
                    native: err.to_string(),
                    generic: String::new(),
                })?;
                let link = FdLink::try_from(link).map_err(|_| XdpError::NotALink {
                    iface: iface.into(),
                })?;
                return Ok(Attachment {
                    iface: iface.into(),
                    mode,
                    _link: link,
                });
            }
            Err(err) => errors.push(error_chain(&err)),
        }
    }
    let [native, generic] = <[String; 2]>::try_from(errors).expect("two modes tried");
    Err(XdpError::Attach {
        iface: iface.into(),
        native,
        generic,
    })
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}

/// The aya-log level matching what `tracing` will print, so that kernel log
/// statements below it cost one comparison and emit nothing.
pub fn kernel_log_level() -> u8 {
    use aya_log::Level;
    use tracing::level_filters::LevelFilter;
    let level = match LevelFilter::current() {
        LevelFilter::OFF => return 0,
        LevelFilter::ERROR => Level::Error,
        LevelFilter::WARN => Level::Warn,
        LevelFilter::INFO => Level::Info,
        LevelFilter::DEBUG => Level::Debug,
        LevelFilter::TRACE => Level::Trace,
    };
    level as u8
}
