//! Export sequence tracking (sans-IO): from the sequence numbers of the
//! exports that arrived, how many exports or records an exporter sent that
//! never did. Both data paths feed the same [`Sequences`] (the kernel
//! through its `EXPORTS` ring), and each flush closes an interval.
//!
//! The rules:
//!
//! - A **stream** is one exporter's sequence space: exporter, version and
//!   domain (v9 source id, IPFIX observation domain, v5 engine).
//! - **What a sequence number counts** is each protocol's meaning by
//!   default — v5 flow records, v9 export packets, IPFIX data records
//!   before this message (RFC 7011 §3.1) — but exporters differ
//!   (softflowd's IPFIX counts the records *including* this message's; some
//!   v9 exporters count records). Two exports in a row without loss between
//!   them show which: the sequence advances by 1 (exports), by the first
//!   one's records (records before) or by the second's (records
//!   including). Each such pair votes for the countings it fits unless it
//!   fits all; the stream follows the one with most votes (ties: the
//!   protocol's). So every export covers a range of units.
//! - **Gaps**: an export beyond the end of the furthest range so far opens
//!   a gap. A gap is *provisional*: a late export (reordering) fills it.
//!   Gaps still open `hold` after they opened are lost, counted at the
//!   flush that finds them so; so is the oldest when more than
//!   [`MAX_GAPS`] are open, and one further than [`WINDOW`] behind.
//! - The first export seen of a stream need not be the first sent: what
//!   lies before it is a gap that late exports fill but that is never
//!   counted lost (it may predate flowtally).
//! - **Duplicates**: an export behind the furthest range that fills no
//!   open gap covers units already received: counted as duplicates, never
//!   as received twice and never as loss.
//! - **Restarts**: v5/v9 sysUptime more than [`UPTIME_SLACK_MS`] behind the
//!   furthest export's, an IPFIX export behind in sequence but later in
//!   export time than any before, or any export more than [`WINDOW`]
//!   behind, makes a restart *candidate* (unless it fills a gap). The next
//!   export decides: if it continues the old stream the candidate was a
//!   stray duplicate; otherwise (or if nothing comes for `hold`) it is a
//!   restart: the old stream's open gaps are lost, and the new one counts
//!   from the candidate. A restart is never a 4-billion gap.
//! - Sequence numbers wrap at 2^32: positions are compared by their signed
//!   distance, and kept unwrapped (i64) inside a stream.

use std::collections::{BTreeMap, VecDeque};

use flowtally_common::{agg::Ip, sequence::ExportSeen, templated::V9, v5};

use crate::netflow::Report;

/// How far (in units) behind the furthest range an export may be and still
/// be late or a duplicate; further is a restart. Wide enough for seconds of
/// socket-path lag behind the kernel at high rates.
pub const WINDOW: i64 = 1 << 20;
/// Open gaps kept per stream; past it the oldest is lost at once.
pub const MAX_GAPS: usize = 256;
/// How far a v5/v9 sysUptime may go back (a late export) before it means a
/// restart.
pub const UPTIME_SLACK_MS: u32 = 1_000;
/// Streams tracked at once; more are counted, not tracked.
pub const MAX_STREAMS: usize = 4096;
/// A stream silent this long is forgotten; it starts afresh if it returns.
pub const IDLE_MS: u64 = 60 * 60 * 1000;

/// One exporter's sequence space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamKey {
    pub exporter: Ip,
    pub version: u16,
    pub domain: u32,
}

/// One export that arrived, from either path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub key: StreamKey,
    pub sequence: u32,
    /// v5/v9 sysUptime (ms), IPFIX export time (s).
    pub clock: u32,
    /// Data records; `None` when some could not be counted (a data set
    /// waiting for its template).
    pub records: Option<u32>,
    pub bytes: u64,
}

impl Seen {
    /// A v9/IPFIX export the socket path decoded into `report`.
    pub fn templated(exporter: &Ip, report: &Report) -> Self {
        let h = &report.header;
        Self {
            key: StreamKey {
                exporter: *exporter,
                version: h.version,
                domain: h.domain,
            },
            sequence: h.sequence,
            // v9 restarts show in its uptime, IPFIX ones in its export time.
            clock: if h.version == V9 {
                h.sys_uptime_ms
            } else {
                h.unix_secs
            },
            records: (report.uncounted_sets == 0)
                .then(|| u32::try_from(report.data_records).ok())
                .flatten(),
            bytes: report.bytes,
        }
    }
}

impl From<&ExportSeen> for Seen {
    fn from(e: &ExportSeen) -> Self {
        Self {
            key: StreamKey {
                exporter: e.exporter,
                version: e.version,
                domain: e.domain,
            },
            sequence: e.sequence,
            clock: e.clock,
            records: Some(e.records),
            // The kernel counts them per domain (`EXPORT_BYTES`): see
            // [`Sequences::add_bytes`].
            bytes: 0,
        }
    }
}

/// What a stream's sequence numbers count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counting {
    /// One per export packet (v9).
    Exports = 0,
    /// Data records sent before this export (v5, IPFIX).
    RecordsBefore = 1,
    /// Data records sent up to and including this export's.
    RecordsIncluding = 2,
}

impl Counting {
    const ALL: [Self; 3] = [Self::Exports, Self::RecordsBefore, Self::RecordsIncluding];

    /// The protocol's own meaning.
    fn default_for(version: u16) -> Self {
        if version == V9 {
            Self::Exports
        } else {
            Self::RecordsBefore
        }
    }

    /// Metric label of the unit.
    pub const fn unit(self) -> &'static str {
        match self {
            Self::Exports => "exports",
            Self::RecordsBefore | Self::RecordsIncluding => "records",
        }
    }

    /// The range `[start, start + len)` an export covers, relative to its
    /// sequence number; `None` length when its records are unknown.
    fn range(self, seen: &Seen) -> (i64, Option<i64>) {
        match (self, seen.records) {
            (Self::Exports, _) => (0, Some(1)),
            (Self::RecordsBefore, records) => (0, records.map(i64::from)),
            (Self::RecordsIncluding, Some(records)) => {
                (-i64::from(records), Some(i64::from(records)))
            }
            (Self::RecordsIncluding, None) => (0, None),
        }
    }
}

/// One stream's figures for one interval (between two flushes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    pub exports: u64,
    pub records: u64,
    pub bytes: u64,
    /// Units (see `unit`) received for the first time.
    pub received: u64,
    /// Units found lost in this interval.
    pub lost: u64,
    /// Units received again.
    pub duplicates: u64,
    /// Units that filled a gap (arrived out of order).
    pub late: u64,
    pub restarts: u64,
}

impl Figures {
    /// Counts an export that arrived (octets saturate: exporters claim any).
    fn count(&mut self, seen: &Seen) {
        self.exports += 1;
        self.records += u64::from(seen.records.unwrap_or(0));
        self.bytes = self.bytes.saturating_add(seen.bytes);
    }
}

/// A stream's figures at a flush.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    pub key: StreamKey,
    pub unit: &'static str,
    pub figures: Figures,
}

#[derive(Clone, Copy, Debug)]
struct Gap {
    start: i64,
    end: i64,
    opened_ms: u64,
    /// What came before the stream's first export: late arrivals fill it,
    /// but what never comes is no loss (it may predate flowtally).
    before_start: bool,
}

impl Gap {
    /// Units lost when the gap is given up.
    fn lost(&self) -> u64 {
        if self.before_start {
            0
        } else {
            (self.end - self.start) as u64
        }
    }
}

/// The export that reached furthest.
#[derive(Clone, Copy, Debug)]
struct Latest {
    seen: Seen,
    /// Unwrapped position of its sequence number.
    at: i64,
}

#[derive(Clone, Copy, Debug)]
struct Candidate {
    seen: Seen,
    arrived_ms: u64,
}

#[derive(Debug)]
struct Stream {
    counting: Counting,
    votes: [u32; 3],
    latest: Latest,
    /// End of the furthest range: the next unit expected.
    next: i64,
    /// The furthest export's extent is unknown: whatever follows it up to
    /// the next export is taken as its.
    open_end: bool,
    /// IPFIX: the latest export time seen.
    max_clock: u32,
    gaps: VecDeque<Gap>,
    candidate: Option<Candidate>,
    figures: Figures,
    last_seen_ms: u64,
}

/// Whether uptime `now` is more than the slack behind `before` (modulo
/// 2^32, so that an uptime wrapping round is not a restart).
fn uptime_back(before: u32, now: u32) -> bool {
    before.wrapping_sub(now) as i32 > UPTIME_SLACK_MS as i32
}

/// Unwrapped positions start here, so that a stream can go back.
const ORIGIN: i64 = 1 << 40;

impl Stream {
    fn new(seen: &Seen, counting: Counting, now_ms: u64) -> Self {
        let mut stream = Self {
            counting,
            votes: [0; 3],
            latest: Latest {
                seen: *seen,
                at: ORIGIN,
            },
            next: ORIGIN,
            open_end: false,
            max_clock: seen.clock,
            gaps: VecDeque::new(),
            candidate: None,
            figures: Figures::default(),
            last_seen_ms: now_ms,
        };
        stream.renormalise();
        let (_, len) = stream.counting.range(seen);
        stream.figures.received += len.unwrap_or(0) as u64;
        stream
    }

    /// The first export seen need not be the first sent (reordering): what
    /// lies before it may still arrive, late, within the hold.
    fn open_before_start(&mut self, now_ms: u64) {
        let (offset, _) = self.counting.range(&self.latest.seen);
        let start = self.latest.at + offset;
        self.gaps.push_front(Gap {
            start: start - WINDOW,
            end: start,
            opened_ms: now_ms,
            before_start: true,
        });
    }

    /// Positions the furthest range by the current counting.
    fn renormalise(&mut self) {
        let (offset, len) = self.counting.range(&self.latest.seen);
        self.next = self.latest.at + offset + len.unwrap_or(0);
        self.open_end = len.is_none() && self.counting == Counting::RecordsBefore;
        self.gaps.clear();
    }

    /// Where `sequence` lies, unwrapped, relative to the furthest export.
    fn position(&self, sequence: u32) -> i64 {
        let latest = self.latest.seen.sequence;
        self.latest.at + i64::from(sequence.wrapping_sub(latest) as i32)
    }

    fn observe(&mut self, seen: &Seen, now_ms: u64) {
        self.last_seen_ms = now_ms;
        let f = &mut self.figures;
        f.count(seen);
        if let Some(candidate) = self.candidate.take() {
            if !self.suspect(seen) {
                // The old run goes on: the candidate was a stray.
                self.figures.duplicates += self.units(&candidate.seen);
            } else if Self::continues(&candidate.seen, seen) {
                self.restart(&candidate.seen, now_ms);
            } else {
                self.figures.duplicates += self.units(&candidate.seen);
                self.candidate = Some(Candidate {
                    seen: *seen,
                    arrived_ms: now_ms,
                });
                return;
            }
        }
        if self.suspect(seen) {
            self.candidate = Some(Candidate {
                seen: *seen,
                arrived_ms: now_ms,
            });
            return;
        }
        self.vote(seen);
        self.place(seen, now_ms);
    }

    fn units(&self, seen: &Seen) -> u64 {
        self.counting.range(seen).1.unwrap_or(0) as u64
    }

    /// Whether `seen` looks like a restart (and fills no open gap, which
    /// would make it a late export after all).
    fn suspect(&self, seen: &Seen) -> bool {
        let at = self.position(seen.sequence);
        let (offset, len) = self.counting.range(seen);
        let (start, end) = (at + offset, at + offset + len.unwrap_or(0));
        let behind = start < self.next;
        let clock_says = match seen.key.version {
            v5::VERSION | V9 => uptime_back(self.latest.seen.clock, seen.clock),
            _ => behind && seen.clock > self.max_clock,
        };
        let far_behind = self.next - start > WINDOW;
        (clock_says || far_behind) && !self.overlaps_gap(start, end)
    }

    /// Whether `next` follows `first` in one run of an exporter.
    fn continues(first: &Seen, next: &Seen) -> bool {
        let ahead = i64::from(next.sequence.wrapping_sub(first.sequence) as i32);
        let clock_back = match next.key.version {
            v5::VERSION | V9 => uptime_back(first.clock, next.clock),
            _ => next.clock < first.clock,
        };
        (0..=WINDOW).contains(&ahead) && !clock_back
    }

    /// Whether `[start, end)` would fill a gap the stream opened (not the
    /// room before its start: what lands there with a restart's clock is
    /// a restart).
    fn overlaps_gap(&self, start: i64, end: i64) -> bool {
        self.gaps
            .iter()
            .any(|g| !g.before_start && start < g.end && g.start < end)
    }

    /// A confirmed restart from `first`: what the old run left open is
    /// lost, and counting starts again (what the sequence counts stays).
    fn restart(&mut self, first: &Seen, now_ms: u64) {
        let mut figures = self.figures;
        figures.lost += self.gaps.iter().map(Gap::lost).sum::<u64>();
        figures.restarts += 1;
        let mut fresh = Self::new(first, self.counting, now_ms);
        fresh.open_before_start(now_ms);
        figures.received += fresh.figures.received;
        *self = Self {
            votes: self.votes,
            figures,
            ..fresh
        };
    }

    /// Votes on what the sequence counts, from `seen` following the
    /// furthest export.
    fn vote(&mut self, seen: &Seen) {
        let last = &self.latest.seen;
        let d = i64::from(seen.sequence.wrapping_sub(last.sequence) as i32);
        // After an export without data records (an IPFIX template export)
        // a lost export looks just like "records including its own":
        // no evidence, and a switch would forget the gap it left.
        let (Some(before @ 1..), Some(including)) = (last.records, seen.records) else {
            return;
        };
        if d <= 0 {
            return;
        }
        let fits = [d == 1, d == i64::from(before), d == i64::from(including)];
        if fits.iter().all(|&f| f) || !fits.iter().any(|&f| f) {
            return;
        }
        for (votes, fit) in self.votes.iter_mut().zip(fits) {
            *votes += u32::from(fit);
        }
        let default = Counting::default_for(seen.key.version);
        let best = Counting::ALL
            .into_iter()
            .max_by_key(|&c| (self.votes[c as usize], c == default))
            .unwrap_or(default);
        if best != self.counting {
            // The furthest export was counted the old way: count it anew.
            let old = self.units(&self.latest.seen);
            self.counting = best;
            let new = self.units(&self.latest.seen);
            self.figures.received = (self.figures.received + new).saturating_sub(old);
            let before_start = self.gaps.iter().any(|g| g.before_start);
            self.renormalise();
            if before_start {
                self.open_before_start(self.last_seen_ms);
            }
        }
    }

    /// Places `seen`'s range: in order, ahead (a gap before it), or behind
    /// (late, or a duplicate).
    fn place(&mut self, seen: &Seen, now_ms: u64) {
        let at = self.position(seen.sequence);
        let (offset, len) = self.counting.range(seen);
        let start = at + offset;
        if start > self.next {
            if self.open_end || (len.is_none() && self.counting == Counting::RecordsIncluding) {
                // The unknown extent before reaches up to here.
            } else {
                self.gaps.push_back(Gap {
                    start: self.next,
                    end: start,
                    opened_ms: now_ms,
                    before_start: false,
                });
            }
            self.next = start;
            self.open_end = false;
        }
        let Some(len) = len else {
            // Records not known: nothing more to say but where it lies.
            if start >= self.next {
                self.open_end = self.counting == Counting::RecordsBefore;
                self.latest = Latest { seen: *seen, at };
            }
            return self.note_clock(seen);
        };
        let end = start + len;
        // The part behind `next`: a gap filled, or a duplicate.
        let old_end = end.min(self.next);
        if start < old_end {
            let filled = self.fill(start, old_end);
            self.figures.late += filled;
            self.figures.received += filled;
            self.figures.duplicates += (old_end - start) as u64 - filled;
        }
        // The part beyond: new.
        if end > self.next {
            self.figures.received += (end - self.next.max(start)) as u64;
            self.next = end;
            self.open_end = false;
        }
        if end == self.next && at >= self.latest.at {
            self.latest = Latest { seen: *seen, at };
        }
        self.note_clock(seen);
        self.bound_gaps();
    }

    fn note_clock(&mut self, seen: &Seen) {
        if seen.key.version != v5::VERSION && seen.key.version != V9 {
            self.max_clock = self.max_clock.max(seen.clock);
        }
    }

    /// Removes `[start, end)` from the open gaps; returns how many units
    /// that was.
    fn fill(&mut self, start: i64, end: i64) -> u64 {
        let mut filled = 0;
        let mut kept = VecDeque::with_capacity(self.gaps.len() + 1);
        for g in self.gaps.drain(..) {
            if end <= g.start || g.end <= start {
                kept.push_back(g);
                continue;
            }
            filled += (end.min(g.end) - start.max(g.start)) as u64;
            if g.start < start {
                kept.push_back(Gap { end: start, ..g });
            }
            if end < g.end {
                kept.push_back(Gap { start: end, ..g });
            }
        }
        self.gaps = kept;
        filled
    }

    /// Loses gaps past the window or the count bound at once.
    fn bound_gaps(&mut self) {
        while self.gaps.len() > MAX_GAPS {
            if let Some(g) = self.gaps.pop_front() {
                self.figures.lost += g.lost();
            }
        }
        let next = self.next;
        let mut lost = 0;
        self.gaps.retain(|g| {
            let keep = next - g.end < WINDOW;
            if !keep {
                lost += g.lost();
            }
            keep
        });
        self.figures.lost += lost;
    }

    /// Closes the interval: gaps open `hold_ms` (all of them when `last`)
    /// are lost, a candidate that waited as long is a restart.
    fn close(&mut self, now_ms: u64, hold_ms: u64, last: bool) -> Figures {
        let old = |since: u64| last || now_ms.saturating_sub(since) >= hold_ms;
        if let Some(candidate) = self.candidate
            && old(candidate.arrived_ms)
        {
            self.restart(&candidate.seen, now_ms);
        }
        let mut lost = 0;
        self.gaps.retain(|g| {
            let keep = !old(g.opened_ms);
            if !keep {
                lost += g.lost();
            }
            keep
        });
        self.figures.lost += lost;
        std::mem::take(&mut self.figures)
    }
}

/// Every stream's tracker.
#[derive(Debug, Default)]
pub struct Sequences {
    streams: BTreeMap<StreamKey, Stream>,
    /// Exports of streams beyond [`MAX_STREAMS`], not tracked.
    pub untracked: u64,
}

impl Sequences {
    /// Notes an export that arrived at `now_ms`.
    pub fn observe(&mut self, seen: &Seen, now_ms: u64) {
        if let Some(stream) = self.streams.get_mut(&seen.key) {
            return stream.observe(seen, now_ms);
        }
        if self.streams.len() >= MAX_STREAMS {
            self.untracked += 1;
            return;
        }
        let counting = Counting::default_for(seen.key.version);
        let mut stream = Stream::new(seen, counting, now_ms);
        stream.open_before_start(now_ms);
        self.streams.insert(seen.key, stream);
        let stream = self.streams.get_mut(&seen.key).expect("just inserted");
        let f = &mut stream.figures;
        f.count(seen);
    }

    /// Adds octets the kernel counted for a stream's exports.
    pub fn add_bytes(&mut self, key: &StreamKey, bytes: u64) {
        if let Some(stream) = self.streams.get_mut(key) {
            stream.figures.bytes = stream.figures.bytes.saturating_add(bytes);
        }
    }

    /// Closes an interval at `now_ms`: every stream's figures since the
    /// last call, for streams that had any. With `last` (intake stopped)
    /// every open gap is lost.
    pub fn close(&mut self, now_ms: u64, hold_ms: u64, last: bool) -> Vec<Health> {
        let mut healths = Vec::new();
        for (key, stream) in &mut self.streams {
            let figures = stream.close(now_ms, hold_ms, last);
            if figures != Figures::default() {
                healths.push(Health {
                    key: *key,
                    unit: stream.counting.unit(),
                    figures,
                });
            }
        }
        self.streams
            .retain(|_, s| now_ms.saturating_sub(s.last_seen_ms) < IDLE_MS);
        healths
    }
}

#[cfg(test)]
mod tests;
