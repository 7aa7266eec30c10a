//! The socket path: UDP sockets on the `--netflow` and `--sflow` addresses.
//! Every flow export the XDP program passes up (or all of them, without
//! XDP) arrives here and is decoded and aggregated with the same rules as
//! in the kernel. Any socket takes any format: the first bytes tell them
//! apart (an sFlow datagram starts with the 32-bit version 5, a NetFlow
//! one with a 16-bit version), as in the kernel.
//! NAT event records (never aggregated, and never compiled for the kernel)
//! go to the binding history.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{Arc, Mutex, OnceLock},
};

use flowtally_common::{
    agg::{FlowRecord, Ip},
    sequence::{ExportSeen, v5_domain},
    sflow::{SourceKey, SourceState},
    template::TemplateKey,
    templated::{IPFIX, V9},
    v5,
};

use super::receive;
use crate::{
    aggregate::Aggregator,
    integrity::sequence::{Seen, Sequences, StreamKey},
    ip::{to_addr, to_ip},
    metrics::Metrics,
    nat::Bindings,
    netflow::{TemplateCache, TemplateChange, nat::NatEvent},
    sflow::{self, AgentCounters, Decoded, SourceHealth, Sources},
    xdp::{ExportRing, KernelTemplates},
};

/// Binds every address, `threads` sockets each (see `receive.rs`); port 0
/// gets a free port (see `local_addr`). `kind` (`netflow`, `sflow`) names
/// them in errors.
pub fn bind(
    kind: &str,
    addrs: &[SocketAddr],
    receive_buffer: usize,
    threads: usize,
) -> io::Result<Vec<Vec<UdpSocket>>> {
    let mut groups = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let context = |err: io::Error| io::Error::new(err.kind(), format!("{kind} {addr}: {err}"));
        let sockets = receive::bind_group(*addr, threads).map_err(context)?;
        for socket in &sockets {
            let got = set_receive_buffer(socket, receive_buffer).map_err(context)?;
            if got < receive_buffer {
                tracing::warn!(
                    "{kind} {addr}: receive buffer {got} bytes, not the {receive_buffer} asked \
                     for (raise net.core.rmem_max, or run with CAP_NET_ADMIN at start); bursts \
                     of exports may overflow it"
                );
                break;
            }
        }
        groups.push(sockets);
    }
    Ok(groups)
}

/// Asks for `bytes` of receive buffer: past `net.core.rmem_max` when
/// privileged (SO_RCVBUFFORCE), else up to it. Returns what the kernel
/// granted (it books twice the size for its overhead, and reports that).
fn set_receive_buffer(socket: &UdpSocket, bytes: usize) -> io::Result<usize> {
    use std::os::fd::AsRawFd as _;
    let fd = socket.as_raw_fd();
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let set = |option| {
        // SAFETY: setsockopt on a socket we own with a valid c_int.
        unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, option, (&raw const value).cast(), len) }
    };
    if set(libc::SO_RCVBUFFORCE) != 0 && set(libc::SO_RCVBUF) != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut granted: libc::c_int = 0;
    let mut granted_len = len;
    // SAFETY: getsockopt into a c_int we own, with its length.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw mut granted).cast(),
            &raw mut granted_len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(granted).unwrap_or(0) / 2)
}

/// Decoding state shared by all sockets.
pub struct SocketPath {
    pub aggregator: Mutex<Aggregator>,
    /// Sequence tracking, fed by this path and the kernel's `EXPORTS` ring.
    pub sequences: Mutex<Sequences>,
    /// That ring, when the XDP program runs ([`SocketPath::read_kernel_exports`]).
    kernel_exports: OnceLock<Arc<Mutex<ExportRing>>>,
    templates: Mutex<Templates>,
    sflow: Mutex<SflowPath>,
    /// Allowed exporters; `None` allows any.
    exporters: Option<HashSet<Ip>>,
    /// Where NAT events go; the flush persists their changes.
    bindings: Arc<Mutex<Bindings>>,
    metrics: Metrics,
}

/// sFlow state: per-source bookkeeping, renormalised rates, and interface
/// counters waiting for the next flush.
#[derive(Debug, Default)]
struct SflowPath {
    /// Reused between datagrams.
    decoded: Decoded,
    sources: Sources,
    rates: HashMap<SourceKey, u32>,
    counters: Vec<AgentCounters>,
}

/// What the sFlow sources did since the last flush.
#[derive(Debug, Default)]
pub struct SflowInterval {
    pub healths: Vec<SourceHealth>,
    pub counters: Vec<AgentCounters>,
    /// Renormalised sampling rates that changed, for the kernel.
    pub rates: Vec<(SourceKey, u32)>,
}

/// The v9/IPFIX template cache, and the kernel map it keeps in step.
struct Templates {
    cache: TemplateCache,
    kernel: Option<KernelTemplates>,
    /// Reused between datagrams.
    records: Vec<FlowRecord>,
    nat: Vec<NatEvent>,
}

impl SocketPath {
    /// `cache` may come restored from disk: its compiled templates go into
    /// the kernel at once.
    pub fn new(
        aggregator: Aggregator,
        cache: TemplateCache,
        kernel: Option<KernelTemplates>,
        exporters: &[IpAddr],
        bindings: Arc<Mutex<Bindings>>,
        metrics: Metrics,
    ) -> Self {
        let mut templates = Templates {
            cache,
            kernel,
            records: Vec::new(),
            nat: Vec::new(),
        };
        let all = templates
            .cache
            .compiled()
            .map(|(key, template)| TemplateChange::Install(key, template))
            .collect();
        templates.apply(all, &metrics);
        Self {
            aggregator: Mutex::new(aggregator),
            sequences: Mutex::default(),
            kernel_exports: OnceLock::new(),
            templates: Mutex::new(templates),
            sflow: Mutex::default(),
            exporters: (!exporters.is_empty())
                .then(|| exporters.iter().copied().map(to_ip).collect()),
            bindings,
            metrics,
        }
    }

    /// Expires templates and pending data at `now_ms` and returns the cache
    /// in its saved form, for persisting.
    pub fn maintain(&self, now_ms: u64) -> Vec<u8> {
        let mut templates = self.templates.lock().expect("templates lock poisoned");
        if let Some(kernel) = &mut templates.kernel
            && let Err(err) = kernel.release_stale(now_ms)
        {
            tracing::warn!("kernel template holds: {err}");
        }
        let expired = templates.cache.expire(now_ms);
        self.metrics.templates.expired(&expired);
        let changes = templates.cache.take_changes();
        templates.apply(changes, &self.metrics);
        templates.cache.save()
    }

    /// Closes an sFlow interval: the kernel's per-source states (`kernel`)
    /// and the socket path's give each source's figures; renormalised
    /// rates are updated from them.
    pub fn sflow_interval(
        &self,
        kernel: impl IntoIterator<Item = (SourceKey, SourceState)>,
    ) -> SflowInterval {
        let mut s = self.sflow.lock().expect("sflow lock poisoned");
        let healths = s.sources.interval(kernel);
        let mut rates = Vec::new();
        for h in &healths {
            if let Some(rate) = h.renormalised_rate
                && s.rates.insert(h.key, rate) != Some(rate)
            {
                rates.push((h.key, rate));
            }
        }
        SflowInterval {
            healths,
            counters: std::mem::take(&mut s.counters),
            rates,
        }
    }

    /// Decodes and aggregates one datagram received at `now_ms`, counting
    /// it either way.
    pub fn handle(&self, now_ms: u64, from: IpAddr, datagram: &[u8]) {
        self.metrics.socket.packets.inc();
        if datagram.get(..4) == Some(&flowtally_common::sflow::VERSION.to_be_bytes()) {
            return self.handle_sflow(now_ms, datagram);
        }
        let exporter = to_ip(from);
        if let Some(allowed) = &self.exporters
            && !allowed.contains(&exporter)
        {
            return self.reject("unknown_exporter");
        }
        self.metrics.exporters.datagram(to_addr(&exporter), now_ms);
        match datagram.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) {
            Some(v5::VERSION) => self.handle_v5(now_ms, &exporter, datagram),
            Some(V9 | IPFIX) => self.handle_templated(now_ms, &exporter, datagram),
            Some(_) => self.reject("unsupported_version"),
            None => self.reject("truncated"),
        }
    }

    /// The kernel's `EXPORTS` ring, when the XDP program runs.
    pub fn set_kernel_exports(&self, ring: Arc<Mutex<ExportRing>>) {
        let _ = self.kernel_exports.set(ring);
    }

    /// Notes every export the kernel's `EXPORTS` ring holds: called by the
    /// ring's reader, at each flush, and before each export this path
    /// notes. The reader does not run for every entry, and an exporter's
    /// exports must reach sequence tracking in the order they arrived,
    /// whichever path took them (a template export passed up after data
    /// the kernel took, for one).
    pub fn read_kernel_exports(&self, now_ms: u64) {
        if let Some(ring) = self.kernel_exports.get() {
            ring.lock()
                .expect("exports ring lock poisoned")
                .read(|seen| self.observe_kernel(seen, now_ms));
        }
    }

    /// Notes an export the kernel aggregated.
    fn observe_kernel(&self, seen: &ExportSeen, now_ms: u64) {
        self.metrics
            .exporters
            .datagram(to_addr(&seen.exporter), now_ms);
        self.track(&Seen::from(seen), now_ms);
    }

    /// Notes an export this path decoded.
    fn observe(&self, seen: &Seen, now_ms: u64) {
        self.read_kernel_exports(now_ms);
        self.track(seen, now_ms);
    }

    fn track(&self, seen: &Seen, now_ms: u64) {
        self.sequences
            .lock()
            .expect("sequences lock poisoned")
            .observe(seen, now_ms);
    }

    fn handle_v5(&self, now_ms: u64, exporter: &Ip, datagram: &[u8]) {
        let added = self
            .aggregator
            .lock()
            .expect("aggregator lock poisoned")
            .add_v5(exporter, datagram);
        match added {
            Ok(added) => {
                self.metrics.socket.records.inc_by(added.records);
                self.metrics.socket.record_bytes.inc_by(added.bytes);
                self.metrics
                    .socket
                    .out_of_scope_records
                    .inc_by(added.out_of_scope_records);
                self.metrics
                    .socket
                    .out_of_scope_bytes
                    .inc_by(added.out_of_scope_bytes);
                let h = &added.header;
                let seen = Seen {
                    key: StreamKey {
                        exporter: *exporter,
                        version: v5::VERSION,
                        domain: v5_domain(h.engine_type, h.engine_id),
                    },
                    sequence: h.flow_sequence,
                    clock: h.sys_uptime,
                    records: u32::try_from(added.records).ok(),
                    bytes: added.bytes,
                };
                self.observe(&seen, now_ms);
            }
            Err(invalid) => self.reject(invalid.as_str()),
        }
    }

    fn handle_templated(&self, now_ms: u64, exporter: &Ip, datagram: &[u8]) {
        let mut guard = self.templates.lock().expect("templates lock poisoned");
        let templates = &mut *guard;
        templates.records.clear();
        templates.nat.clear();
        let mut aggregator = self.aggregator.lock().expect("aggregator lock poisoned");
        let decoded = templates.cache.decode_with_nat(
            exporter,
            datagram,
            now_ms,
            aggregator.flags(),
            &mut templates.records,
            &mut templates.nat,
        );
        match decoded {
            Ok(report) => {
                for record in &templates.records {
                    if !aggregator.add(exporter, record) {
                        self.metrics.socket.out_of_scope_records.inc();
                        self.metrics.socket.out_of_scope_bytes.inc_by(record.bytes);
                    }
                }
                drop(aggregator);
                self.bind(exporter, &templates.nat);
                self.metrics.socket.records.inc_by(report.records);
                self.metrics.socket.record_bytes.inc_by(report.bytes);
                self.metrics.templates.observe(&report);
                let changes = templates.cache.take_changes();
                templates.apply(changes, &self.metrics);
                let seen = Seen::templated(exporter, &report);
                self.observe(&seen, now_ms);
            }
            Err(err) => self.reject(err.as_str()),
        }
        // After the changes are in the kernel map: lift the kernel's hold on
        // this exporter's data that this export's template sets caused.
        if let (Some(kernel), Some(domain)) =
            (&mut templates.kernel, template_domain(exporter, datagram))
            && let Err(err) = kernel.release(&domain)
        {
            tracing::warn!("kernel template hold: {err}");
        }
    }

    /// Takes NAT events into the binding history.
    fn bind(&self, exporter: &Ip, events: &[NatEvent]) {
        if events.is_empty() {
            return;
        }
        let mut bindings = self.bindings.lock().expect("bindings lock poisoned");
        for event in events {
            let applied = bindings.apply(to_addr(exporter), event);
            self.metrics.nat.event(event, applied);
        }
    }

    /// An sFlow datagram: its agent address is the exporter, for the
    /// allow-list as for everything else (see README, sFlow).
    fn handle_sflow(&self, now_ms: u64, datagram: &[u8]) {
        let mut guard = self.sflow.lock().expect("sflow lock poisoned");
        let s = &mut *guard;
        let mut aggregator = self.aggregator.lock().expect("aggregator lock poisoned");
        let rates = &s.rates;
        let decoded = sflow::decode(
            datagram,
            aggregator.flags(),
            now_ms,
            |key| rates.get(key).copied(),
            &mut s.decoded,
        );
        if let Err(err) = decoded {
            return self.reject(err.as_str());
        }
        let d = &s.decoded;
        if let Some(allowed) = &self.exporters
            && !allowed.contains(&d.agent)
        {
            return self.reject("unknown_exporter");
        }
        self.metrics.exporters.datagram(to_addr(&d.agent), now_ms);
        let socket = &self.metrics.socket;
        for record in &d.records {
            socket.records.inc();
            socket.record_bytes.inc_by(record.bytes);
            if !aggregator.add(&d.agent, record) {
                socket.out_of_scope_records.inc();
                socket.out_of_scope_bytes.inc_by(record.bytes);
            }
        }
        drop(aggregator);
        for (counter, n) in self.metrics.sflow.socket_samples.iter().zip(d.samples) {
            counter.inc_by(n);
        }
        for (key, sample) in &d.flow_samples {
            s.sources.observe(key, sample);
        }
        let agent = d.agent;
        s.counters
            .extend(d.counters.iter().map(|&counters| AgentCounters {
                agent,
                time_ms: now_ms,
                counters,
            }));
    }

    /// Per exporter: the templates held, and how many are compiled.
    pub fn templates_per_exporter(&self) -> BTreeMap<IpAddr, (usize, usize)> {
        let templates = self.templates.lock().expect("templates lock poisoned");
        templates
            .cache
            .per_exporter()
            .into_iter()
            .map(|(ip, counts)| (to_addr(&ip), counts))
            .collect()
    }

    fn reject(&self, reason: &'static str) {
        self.metrics
            .rejected_packets
            .get_or_create(&[("reason", reason)])
            .inc();
    }
}

/// The exporter domain (`template_id` 0) of a v9/IPFIX datagram that
/// carries a template or options template set, found the way the XDP program
/// walks sets (which holds back that domain's data until this is processed).
fn template_domain(exporter: &Ip, datagram: &[u8]) -> Option<TemplateKey> {
    let be16 = |at: usize| {
        datagram
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let be32 = |at: usize| {
        datagram
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let version = be16(0)?;
    let (mut cursor, domain) = match version {
        9 => (20, be32(16)?),
        10 => (16, be32(12)?),
        _ => return None,
    };
    while let (Some(id), Some(len)) = (be16(cursor), be16(cursor + 2)) {
        if id < 256 {
            return Some(TemplateKey {
                exporter: *exporter,
                domain,
                template_id: 0,
                version,
            });
        }
        if len < 4 {
            return None;
        }
        cursor += usize::from(len);
    }
    None
}

impl Templates {
    /// Applies template changes to the kernel map, if there is one. A failed
    /// update only means the kernel passes those exports up: logged, never
    /// fatal.
    fn apply(&mut self, changes: Vec<TemplateChange>, metrics: &Metrics) {
        // Most datagrams change nothing: skip the recount on the hot path.
        if changes.is_empty() {
            return;
        }
        if let Some(kernel) = &mut self.kernel {
            for change in changes {
                let result = match &change {
                    TemplateChange::Install(key, template) => kernel.install(key, template),
                    TemplateChange::Remove(key) => kernel.remove(key),
                };
                if let Err(err) = result {
                    tracing::warn!("kernel template map: {change:?}: {err}");
                }
            }
        }
        metrics
            .templates
            .compiled
            .set(self.cache.compiled().count() as i64);
    }
}

impl std::fmt::Debug for SocketPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketPath").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use flowtally_common::{agg::Profile, v5::Header};

    use super::*;
    use crate::{
        netflow::{
            DecodeError,
            v5::{Record, encode},
        },
        subscribers::SubscriberNets,
    };

    fn path(exporters: &[IpAddr]) -> (SocketPath, Metrics) {
        let metrics = Metrics::default();
        let aggregator = Aggregator::new(
            Profile {
                keep: 0,
                bucket_ms: 60_000,
            },
            0,
            SubscriberNets::new(&[]),
        );
        let cache = TemplateCache::new(crate::netflow::Limits::default());
        let bindings = Arc::new(Mutex::new(Bindings::new(crate::nat::Limits {
            max_lifetime_ms: 1_000,
            memory_retention_ms: 1_000,
            max_bindings: 1,
        })));
        let path = SocketPath::new(
            aggregator,
            cache,
            None,
            exporters,
            bindings,
            metrics.clone(),
        );
        (path, metrics)
    }

    fn rejected(metrics: &Metrics, reason: &'static str) -> u64 {
        metrics
            .rejected_packets
            .get_or_create(&[("reason", reason)])
            .get()
    }

    #[test]
    fn every_datagram_is_either_aggregated_or_rejected_by_reason() {
        let allowed: IpAddr = "198.18.0.1".parse().unwrap();
        let (path, metrics) = path(&[allowed]);
        let header = Header {
            version: 5,
            ..Header::default()
        };
        let export = encode(&header, &[Record::default(); 3]);
        path.handle(0, allowed, &export);
        path.handle(0, "198.18.0.9".parse().unwrap(), &export);
        path.handle(0, allowed, &export[..30]);
        path.handle(0, allowed, &[0, 10, 0, 0]);
        path.handle(0, allowed, &[0, 7, 0, 0]);
        path.handle(0, allowed, &[5]);
        assert_eq!(metrics.socket.packets.get(), 6);
        assert_eq!(metrics.socket.records.get(), 3);
        assert_eq!(rejected(&metrics, "unknown_exporter"), 1);
        assert_eq!(rejected(&metrics, "v5_length_mismatch"), 1);
        assert_eq!(rejected(&metrics, "unsupported_version"), 1);
        assert_eq!(rejected(&metrics, "truncated"), 1);
        assert_eq!(
            rejected(&metrics, DecodeError::Truncated.as_str()),
            1,
            "IPFIX"
        );
    }
}
