//! The NetFlow v9 / IPFIX template cache. It learns templates and options
//! from exports, compiles the templates the XDP program can read (reported
//! as [`TemplateChange`]s for its TEMPLATES map), and decodes every data
//! record on the socket path through the same
//! `CompiledTemplate::record_into` as the kernel. Sans-IO: datagrams and
//! `now_ms` in, records and counters out. `now_ms` is wall-clock Unix ms, so
//! that a saved cache's refresh times still mean something after a restart.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    ops::RangeInclusive,
};

use flowtally_common::{
    agg::{FlowRecord, Ip},
    template::{CompiledTemplate, ExportTime, TemplateKey},
};

use super::{
    layout::{Layout, MadeDo},
    nat::{self, NatEvent},
    options::{DomainKey, DomainState, OptionsRecord},
    sets::{
        Definition, Header, Malformed, Message, SET_HEADER_LEN, SetKind, TemplateRecord,
        TemplateRecords, V9, record_extents,
    },
};
pub use super::{persist::RestoreError, sets::DecodeError};

/// Sweeping every template for expiry on every datagram would cost more
/// than the datagram; a second's lateness costs nothing.
const SWEEP_EVERY_MS: u64 = 1_000;

/// Bounds on what one exporter can make the cache hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Templates and options templates per exporter, all domains.
    pub max_templates_per_exporter: usize,
    pub max_fields_per_template: usize,
    /// Bytes of a template's fixed-length fields (a fixed-length template's
    /// record length).
    pub max_template_bytes: usize,
    /// A template not refreshed for this long expires; so does options
    /// state (sampling, system init time) not repeated for this long.
    pub template_timeout_ms: u64,
    /// Data sets waiting for their template, per exporter.
    pub max_pending_bytes_per_exporter: usize,
    pub pending_timeout_ms: u64,
    /// Sampler ids with an interval, per domain.
    pub max_samplers_per_domain: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_templates_per_exporter: 1024,
            max_fields_per_template: 128,
            max_template_bytes: 1024,
            template_timeout_ms: 30 * 60 * 1000,
            max_pending_bytes_per_exporter: 256 * 1024,
            pending_timeout_ms: 10_000,
            max_samplers_per_domain: 256,
        }
    }
}

/// What the kernel's TEMPLATES map must learn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateChange {
    /// Newly compiled, or compiled differently (new layout, sampling, uptime base).
    Install(TemplateKey, CompiledTemplate),
    /// Withdrawn, expired, or redefined as something the kernel cannot read.
    Remove(TemplateKey),
}

/// Why a template record was not learned (metric label in `Display`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("too_many_templates")]
    TooManyTemplates,
    #[error("too_many_fields")]
    TooManyFields,
    #[error("template_too_long")]
    TemplateTooLong,
    #[error("malformed")]
    Malformed,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rejected {
    pub too_many_templates: u64,
    pub too_many_fields: u64,
    pub template_too_long: u64,
    pub malformed: u64,
}

impl Rejected {
    fn add(&mut self, rejection: Rejection) {
        *match rejection {
            Rejection::TooManyTemplates => &mut self.too_many_templates,
            Rejection::TooManyFields => &mut self.too_many_fields,
            Rejection::TemplateTooLong => &mut self.template_too_long,
            Rejection::Malformed => &mut self.malformed,
        } += 1;
    }
}

/// Template records of one kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TemplateCounts {
    /// Defined under a new key.
    pub learned: u64,
    /// Redefined with a different layout.
    pub changed: u64,
    /// Repeated unchanged.
    pub refreshed: u64,
    /// Removed by a withdrawal.
    pub withdrawn: u64,
}

/// Data sets whose template was not known when they arrived.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingCounts {
    pub buffered_sets: u64,
    /// Set bytes, headers included.
    pub buffered_bytes: u64,
    /// Decoded once their template arrived.
    pub replayed_sets: u64,
    /// Dropped on arrival: the exporter's pending bytes were at their limit.
    pub overflow_sets: u64,
    pub overflow_bytes: u64,
}

/// What expired at a sweep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expired {
    pub templates: u64,
    /// Options state (sampling, system init time) of a domain.
    pub domains: u64,
    /// Pending data sets dropped because their template never came.
    pub pending_sets: u64,
    pub pending_bytes: u64,
}

/// Counters of one decode, for metrics by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The datagram's header (for its sequence number).
    pub header: Header,
    /// Data records of this datagram's own data sets (flow, options and
    /// others; a biflow record once), what its sequence number counts.
    pub data_records: u64,
    /// Data sets of this datagram buffered (or dropped) before their
    /// template: their records could not be counted.
    pub uncounted_sets: u64,
    /// Flow records appended to `out`, replayed ones included; a biflow
    /// record is two, one per direction.
    pub records: u64,
    /// Their bytes, sampling-scaled per the flags.
    pub bytes: u64,
    /// Templates of flow data.
    pub templates: TemplateCounts,
    pub options_templates: TemplateCounts,
    /// Template and options template records not learned, by reason.
    pub rejected: Rejected,
    /// Options data records read (whether or not they said anything used).
    pub options_records: u64,
    pub pending: PendingCounts,
    /// Swept during this decode.
    pub expired: Expired,
    /// Records whose sampler id has no interval from options data: taken as
    /// unsampled.
    pub unknown_sampler: u64,
    /// Records of templates without source and destination address (of one
    /// family) and octet count: not flows, ignored.
    pub non_flow_records: u64,
    /// NAT event records (templates with natEvent): handed out as
    /// [`NatEvent`]s, never as flows. One whose natEvent cannot be read
    /// counts as a bad-field record instead.
    pub nat_records: u64,
    /// Records decoded with a field read as absent because its size is
    /// unsupported for its element (e.g. a 3-byte address).
    pub bad_field_records: u64,
    /// IPFIX records with uptime times before the exporter's
    /// systemInitTimeMilliseconds is known: timed at export instead.
    pub no_system_init_time: u64,
    /// Trailing bytes of a data set too short for a record and not zero
    /// padding.
    pub short_records: u64,
    /// Sampler intervals ignored: the domain has `max_samplers_per_domain`.
    pub samplers_rejected: u64,
}

impl Report {
    fn made_do(&mut self, made_do: MadeDo) {
        self.unknown_sampler += u64::from(made_do.unknown_sampler);
        self.no_system_init_time += u64::from(made_do.no_system_init_time);
        self.bad_field_records += u64::from(made_do.bad_field);
    }

    fn counts(&mut self, def: &Definition) -> &mut TemplateCounts {
        match def.scope_fields {
            Some(_) => &mut self.options_templates,
            None => &mut self.templates,
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Template {
    pub def: Definition,
    pub refreshed_ms: u64,
    /// Fixed-length templates of flow data: field positions, found once.
    layout: Option<Layout>,
    /// Carries natEvent: its records are NAT events.
    nat: bool,
    compiled: Option<CompiledTemplate>,
}

/// A data set waiting for its template.
#[derive(Debug)]
struct PendingSet {
    domain: u32,
    version: u16,
    template_id: u16,
    time: ExportTime,
    arrived_ms: u64,
    body: Vec<u8>,
}

impl PendingSet {
    fn bytes(&self) -> usize {
        SET_HEADER_LEN + self.body.len()
    }
}

/// One exporter's pending data sets, in arrival order.
#[derive(Debug, Default)]
struct Pending {
    bytes: usize,
    sets: VecDeque<PendingSet>,
}

/// Where one decode's records and counts go.
struct Output<'a> {
    now_ms: u64,
    flags: u32,
    records: &'a mut Vec<FlowRecord>,
    nat: &'a mut Vec<NatEvent>,
    report: Report,
    /// Decoding sets of an earlier datagram (not this one's records).
    replaying: bool,
}

#[derive(Debug)]
pub struct TemplateCache {
    pub(super) limits: Limits,
    pub(super) templates: BTreeMap<TemplateKey, Template>,
    pub(super) domains: BTreeMap<DomainKey, DomainState>,
    pending: HashMap<Ip, Pending>,
    /// Latest compiled state per key since the last `take_changes`; `None`
    /// removes.
    changes: BTreeMap<TemplateKey, Option<CompiledTemplate>>,
    last_sweep_ms: u64,
}

/// `rec` zero-padded to a power-of-two length, like the kernel's record
/// window: `record_into`, `read_ip` and `read_uint` mask offsets with it.
fn power_of_two_window<'w>(window: &'w mut Vec<u8>, rec: &[u8]) -> &'w [u8] {
    window.clear();
    window.extend_from_slice(rec);
    window.resize(rec.len().next_power_of_two(), 0);
    window
}

fn template_key(scope: &DomainKey, template_id: u16) -> TemplateKey {
    TemplateKey {
        exporter: scope.exporter,
        domain: scope.domain,
        template_id,
        version: scope.version,
    }
}

fn domain_of(key: &TemplateKey) -> DomainKey {
    DomainKey {
        exporter: key.exporter,
        domain: key.domain,
        version: key.version,
    }
}

/// Keys sort by exporter, then domain: each is a contiguous range.
fn domain_range(scope: &DomainKey) -> RangeInclusive<TemplateKey> {
    let first = template_key(scope, 0);
    first..=TemplateKey {
        template_id: u16::MAX,
        version: u16::MAX,
        ..first
    }
}

fn exporter_range(exporter: &Ip) -> RangeInclusive<TemplateKey> {
    let first = TemplateKey {
        exporter: *exporter,
        ..TemplateKey::default()
    };
    first..=TemplateKey {
        domain: u32::MAX,
        template_id: u16::MAX,
        version: u16::MAX,
        ..first
    }
}

impl TemplateCache {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            templates: BTreeMap::new(),
            domains: BTreeMap::new(),
            pending: HashMap::new(),
            changes: BTreeMap::new(),
            last_sweep_ms: 0,
        }
    }

    /// Decodes one datagram (version 9 or 10) from `exporter`, learning
    /// templates and options, and appends the flow records of its data sets
    /// (and of earlier buffered sets this datagram's templates unlock) to
    /// `out`. A datagram whose header or set structure is unsound is
    /// rejected whole, before anything in it is used.
    pub fn decode(
        &mut self,
        exporter: &Ip,
        datagram: &[u8],
        now_ms: u64,
        flags: u32,
        out: &mut Vec<FlowRecord>,
    ) -> Result<Report, DecodeError> {
        self.decode_with_nat(exporter, datagram, now_ms, flags, out, &mut Vec::new())
    }

    /// [`TemplateCache::decode`], appending the NAT event records of its
    /// data sets to `nat`.
    pub fn decode_with_nat(
        &mut self,
        exporter: &Ip,
        datagram: &[u8],
        now_ms: u64,
        flags: u32,
        out: &mut Vec<FlowRecord>,
        nat: &mut Vec<NatEvent>,
    ) -> Result<Report, DecodeError> {
        let message = Message::parse(datagram)?;
        let mut o = Output {
            now_ms,
            flags,
            records: out,
            nat,
            report: Report {
                header: message.header,
                ..Report::default()
            },
            replaying: false,
        };
        if now_ms.abs_diff(self.last_sweep_ms) >= SWEEP_EVERY_MS {
            o.report.expired = self.expire(now_ms);
        }
        let header = message.header;
        let scope = DomainKey {
            exporter: *exporter,
            domain: header.domain,
            version: header.version,
        };
        let time = header.export_time();
        for set in &message.sets {
            let options = match set.kind {
                SetKind::Data(id) => {
                    self.data_set(&scope, id, set.body, &time, &mut o);
                    continue;
                }
                SetKind::Templates => false,
                SetKind::OptionsTemplates => true,
            };
            let mut learned = false;
            for record in TemplateRecords::new(set.body, header.version, options) {
                match record {
                    Ok(record) => learned |= self.learn(&scope, options, record, &mut o),
                    Err(Malformed) => o.report.rejected.malformed += 1,
                }
            }
            if learned {
                self.replay(exporter, &mut o);
            }
        }
        Ok(o.report)
    }

    /// Templates newly compiled or changed since the last call (`Install`)
    /// and ones withdrawn, expired or redefined as uncompilable (`Remove`),
    /// in key order; only each key's latest state.
    pub fn take_changes(&mut self) -> Vec<TemplateChange> {
        std::mem::take(&mut self.changes)
            .into_iter()
            .map(|(key, compiled)| match compiled {
                Some(compiled) => TemplateChange::Install(key, compiled),
                None => TemplateChange::Remove(key),
            })
            .collect()
    }

    /// Expires templates, options state and pending data at `now_ms` (also
    /// done inside `decode`, at most once a second).
    pub fn expire(&mut self, now_ms: u64) -> Expired {
        self.last_sweep_ms = now_ms;
        let stale =
            |refreshed_ms: u64, timeout_ms: u64| now_ms.saturating_sub(refreshed_ms) > timeout_ms;
        let timeout_ms = self.limits.template_timeout_ms;
        let mut expired = Expired::default();

        let old: Vec<_> = self
            .templates
            .extract_if(.., |_, t| stale(t.refreshed_ms, timeout_ms))
            .collect();
        for (key, t) in old {
            expired.templates += 1;
            self.note(key, t.compiled, None);
        }
        let old: Vec<_> = self
            .domains
            .extract_if(.., |_, d| stale(d.refreshed_ms, timeout_ms))
            .collect();
        for (scope, _) in old {
            expired.domains += 1;
            self.recompile(&scope);
        }

        let pending_timeout_ms = self.limits.pending_timeout_ms;
        self.pending.retain(|_, queue| {
            queue.sets.retain(|set| {
                let keep = !stale(set.arrived_ms, pending_timeout_ms);
                if !keep {
                    expired.pending_sets += 1;
                    expired.pending_bytes += set.bytes() as u64;
                    queue.bytes -= set.bytes();
                }
                keep
            });
            !queue.sets.is_empty()
        });
        expired
    }

    /// Every currently compiled template, for (re)loading the kernel map.
    pub fn compiled(&self) -> impl Iterator<Item = (TemplateKey, CompiledTemplate)> + '_ {
        self.templates
            .iter()
            .filter_map(|(key, t)| Some((*key, t.compiled?)))
    }

    /// Per exporter: the templates held, and how many of them are compiled
    /// (the XDP program decodes those exports itself).
    pub fn per_exporter(&self) -> BTreeMap<Ip, (usize, usize)> {
        let mut counts: BTreeMap<Ip, (usize, usize)> = BTreeMap::new();
        for (key, template) in &self.templates {
            let count = counts.entry(key.exporter).or_default();
            count.0 += 1;
            count.1 += usize::from(template.compiled.is_some());
        }
        counts
    }

    /// Learns one template record; true when a template was defined or
    /// changed, which may unlock pending data.
    fn learn(
        &mut self,
        scope: &DomainKey,
        options: bool,
        record: TemplateRecord,
        o: &mut Output,
    ) -> bool {
        match record {
            TemplateRecord::Define(id, def) => {
                let key = template_key(scope, id);
                match self.define(key, def, o.now_ms, &mut o.report) {
                    Ok(learned) => return learned,
                    Err(rejection) => {
                        o.report.rejected.add(rejection);
                        // The exporter has moved on from the old layout:
                        // reading its data with it would be garbage.
                        if let Some(old) = self.templates.remove(&key) {
                            self.note(key, old.compiled, None);
                        }
                    }
                }
            }
            TemplateRecord::Withdraw(id) => self.withdraw(&template_key(scope, id), &mut o.report),
            TemplateRecord::WithdrawAll => {
                let keys: Vec<TemplateKey> = self
                    .templates
                    .range(domain_range(scope))
                    .filter(|(key, t)| {
                        key.version == scope.version && t.def.scope_fields.is_some() == options
                    })
                    .map(|(key, _)| *key)
                    .collect();
                for key in keys {
                    self.withdraw(&key, &mut o.report);
                }
            }
        }
        false
    }

    /// Defines (or refreshes) `key` within the limits; `Ok(true)` when it is
    /// new or changed.
    pub(super) fn define(
        &mut self,
        key: TemplateKey,
        def: Definition,
        now_ms: u64,
        report: &mut Report,
    ) -> Result<bool, Rejection> {
        if def.fields.len() > self.limits.max_fields_per_template {
            return Err(Rejection::TooManyFields);
        }
        let fixed_len = def.fixed_len(key.version);
        let varlen = def.is_varlen(key.version);
        if fixed_len > self.limits.max_template_bytes {
            return Err(Rejection::TemplateTooLong);
        }
        if fixed_len == 0 && !varlen {
            // Records of no bytes: a data set would hold infinitely many.
            return Err(Rejection::Malformed);
        }
        if let Some(t) = self.templates.get_mut(&key)
            && t.def == def
        {
            t.refreshed_ms = now_ms;
            report.counts(&def).refreshed += 1;
            return Ok(false);
        }
        if self.templates.contains_key(&key) {
            report.counts(&def).changed += 1;
        } else if self.templates.range(exporter_range(&key.exporter)).count()
            >= self.limits.max_templates_per_exporter
        {
            return Err(Rejection::TooManyTemplates);
        } else {
            report.counts(&def).learned += 1;
        }
        let layout = (def.scope_fields.is_none() && !varlen).then(|| {
            let mut at = 0;
            let extents: Vec<(usize, usize)> = def
                .fields
                .iter()
                .map(|f| {
                    let extent = (at, usize::from(f.len));
                    at += extent.1;
                    extent
                })
                .collect();
            Layout::new(&def.fields, &extents, false)
        });
        let compiled =
            layout.and_then(|l| l.compile(key.version, self.domains.get(&domain_of(&key))));
        let nat = def
            .fields
            .iter()
            .any(|f| f.iana_ie() == Some(nat::ie::NAT_EVENT));
        let template = Template {
            def,
            refreshed_ms: now_ms,
            layout,
            nat,
            compiled,
        };
        let before = self
            .templates
            .insert(key, template)
            .and_then(|t| t.compiled);
        self.note(key, before, compiled);
        Ok(true)
    }

    fn withdraw(&mut self, key: &TemplateKey, report: &mut Report) {
        if let Some(t) = self.templates.remove(key) {
            report.counts(&t.def).withdrawn += 1;
            self.note(*key, t.compiled, None);
        }
    }

    /// Tells the kernel when `key`'s compiled template changed.
    fn note(
        &mut self,
        key: TemplateKey,
        before: Option<CompiledTemplate>,
        after: Option<CompiledTemplate>,
    ) {
        if before != after {
            self.changes.insert(key, after);
        }
    }

    /// Compiles `scope`'s templates again after its options state changed.
    fn recompile(&mut self, scope: &DomainKey) {
        let domain = self.domains.get(scope);
        for (key, t) in self.templates.range_mut(domain_range(scope)) {
            let Some(layout) = &t.layout else { continue };
            if key.version != scope.version {
                continue;
            }
            let compiled = layout.compile(scope.version, domain);
            if compiled != t.compiled {
                t.compiled = compiled;
                self.changes.insert(*key, compiled);
            }
        }
    }

    /// Decodes a data set, or buffers it until its template arrives.
    fn data_set(
        &mut self,
        scope: &DomainKey,
        id: u16,
        body: &[u8],
        time: &ExportTime,
        o: &mut Output,
    ) {
        let Some(template) = self.templates.get(&template_key(scope, id)) else {
            return self.buffer(scope, id, body, time, o);
        };
        let fields = &template.def.fields;
        let mut extents = Vec::with_capacity(fields.len());
        let mut window = Vec::new();
        let mut options_changed = false;
        let mut at = 0;
        while let Some(rest) = body.get(at..).filter(|rest| !rest.is_empty()) {
            // Templates with empty records are never learned; `len > 0` keeps
            // the loop finite regardless.
            let Some(len) =
                record_extents(rest, fields, scope.version, &mut extents).filter(|&len| len > 0)
            else {
                if rest.iter().any(|&b| b != 0) {
                    o.report.short_records += 1;
                }
                break;
            };
            let rec = &rest[..len];
            at += len;
            if !o.replaying {
                o.report.data_records += 1;
            }
            if let Some(scope_fields) = template.def.scope_fields {
                o.report.options_records += 1;
                let skip = if scope.version == V9 {
                    usize::from(scope_fields)
                } else {
                    0
                };
                let rec = OptionsRecord::read(rec, fields, &extents, skip);
                if rec.interval.is_some() || rec.system_init_ms.is_some() {
                    let applied = self.domains.entry(*scope).or_default().apply(
                        &rec,
                        o.now_ms,
                        self.limits.max_samplers_per_domain,
                    );
                    options_changed |= applied.changed;
                    o.report.samplers_rejected += u64::from(applied.sampler_rejected);
                }
                continue;
            }
            if template.nat {
                match NatEvent::read(rec, fields, &extents, time) {
                    Some(event) => {
                        o.report.nat_records += 1;
                        o.nat.push(event);
                    }
                    // Its natEvent has a length no integer has (0, or
                    // variable beyond 8 bytes): read as absent.
                    None => o.report.bad_field_records += 1,
                }
                continue;
            }
            let layout = template
                .layout
                .unwrap_or_else(|| Layout::new(fields, &extents, true));
            if !layout.flow {
                o.report.non_flow_records += 1;
                continue;
            }
            let rec = power_of_two_window(&mut window, rec);
            // What the kernel reads with, whenever it can read the record.
            let compiled = match template.compiled {
                Some(compiled) => compiled,
                None => {
                    let (compiled, made_do) =
                        layout.for_record(rec, scope.version, self.domains.get(scope));
                    o.report.made_do(made_do);
                    compiled
                }
            };
            let mut record = FlowRecord::default();
            compiled.record_into(rec, time, o.flags, &mut record);
            o.report.records += 1;
            o.report.bytes = o.report.bytes.saturating_add(record.bytes);
            o.records.push(record);
            // RFC 5103 biflows: the reverse direction is a record of its own.
            if compiled.reverse_into(rec, o.flags, &mut record) {
                o.report.records += 1;
                o.report.bytes = o.report.bytes.saturating_add(record.bytes);
                o.records.push(record);
            }
        }
        if options_changed {
            self.recompile(scope);
        }
    }

    fn buffer(
        &mut self,
        scope: &DomainKey,
        template_id: u16,
        body: &[u8],
        time: &ExportTime,
        o: &mut Output,
    ) {
        let set = PendingSet {
            domain: scope.domain,
            version: scope.version,
            template_id,
            time: *time,
            arrived_ms: o.now_ms,
            body: body.to_vec(),
        };
        let bytes = set.bytes();
        o.report.uncounted_sets += 1;
        let held = self.pending.get(&scope.exporter).map_or(0, |q| q.bytes);
        if held + bytes > self.limits.max_pending_bytes_per_exporter {
            o.report.pending.overflow_sets += 1;
            o.report.pending.overflow_bytes += bytes as u64;
            return;
        }
        let queue = self.pending.entry(scope.exporter).or_default();
        queue.bytes += bytes;
        queue.sets.push_back(set);
        o.report.pending.buffered_sets += 1;
        o.report.pending.buffered_bytes += bytes as u64;
    }

    /// Decodes, in arrival order, the pending sets whose template is now known.
    fn replay(&mut self, exporter: &Ip, o: &mut Output) {
        let Some(queue) = self.pending.remove(exporter) else {
            return;
        };
        o.replaying = true;
        let mut kept = Pending::default();
        for set in queue.sets {
            let scope = DomainKey {
                exporter: *exporter,
                domain: set.domain,
                version: set.version,
            };
            if self
                .templates
                .contains_key(&template_key(&scope, set.template_id))
            {
                o.report.pending.replayed_sets += 1;
                self.data_set(&scope, set.template_id, &set.body, &set.time, o);
            } else {
                kept.bytes += set.bytes();
                kept.sets.push_back(set);
            }
        }
        if !kept.sets.is_empty() {
            self.pending.insert(*exporter, kept);
        }
        o.replaying = false;
    }
}

#[cfg(test)]
mod tests;
