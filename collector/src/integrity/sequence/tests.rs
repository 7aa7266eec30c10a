//! Sequence arithmetic on a virtual clock: exports in, figures out.

use super::*;

const HOLD: u64 = 2_000;
const V5: u16 = 5;
const IPFIX: u16 = 10;

fn key(version: u16) -> StreamKey {
    StreamKey {
        exporter: flowtally_common::agg::ip_from_v4([198, 18, 0, 1]),
        version,
        domain: 0,
    }
}

/// An export of `records` records with sequence `sequence` and clock `clock`.
fn seen(version: u16, sequence: u32, records: u32, clock: u32) -> Seen {
    Seen {
        key: key(version),
        sequence,
        clock,
        records: Some(records),
        bytes: u64::from(records) * 1000,
    }
}

/// A tracker fed on a virtual clock.
struct Run {
    seq: Sequences,
    now: u64,
}

impl Run {
    fn new() -> Self {
        Self {
            seq: Sequences::default(),
            now: 1_000_000,
        }
    }

    fn feed(&mut self, exports: impl IntoIterator<Item = Seen>) {
        for e in exports {
            self.now += 1;
            self.seq.observe(&e, self.now);
        }
    }

    /// Closes an interval `after` ms later; the one stream's figures.
    fn close(&mut self, after: u64) -> Figures {
        self.now += after;
        self.figures(false)
    }

    fn last(&mut self) -> Figures {
        self.figures(true)
    }

    fn figures(&mut self, last: bool) -> Figures {
        let healths = self.seq.close(self.now, HOLD, last);
        assert!(healths.len() <= 1, "{healths:?}");
        healths.first().map(|h| h.figures).unwrap_or_default()
    }

    fn unit(&mut self) -> &'static str {
        self.seq.streams.values().next().unwrap().counting.unit()
    }
}

/// v5 exports of 30 records, in order from `first` (records sent before).
fn v5_run(first: u32, exports: u32) -> Vec<Seen> {
    (0..exports)
        .map(|i| seen(V5, first.wrapping_add(30 * i), 30, 10_000 + i * 10))
        .collect()
}

#[test]
fn exports_in_order_lose_nothing() {
    let mut run = Run::new();
    run.feed(v5_run(1000, 10));
    let f = run.close(10_000);
    assert_eq!(
        (f.exports, f.records, f.received, f.lost),
        (10, 300, 300, 0)
    );
    assert_eq!(f.bytes, 300_000);
    assert_eq!(run.unit(), "records");
}

#[test]
fn a_missing_export_is_lost_once_held_long_enough() {
    let mut run = Run::new();
    let mut exports = v5_run(0, 10);
    exports.remove(4);
    run.feed(exports);
    let f = run.close(HOLD / 2);
    assert_eq!(f.lost, 0, "still provisional: it may come late");
    let f = run.close(HOLD);
    assert_eq!(f.lost, 30, "one export of 30 records");
    assert_eq!(run.close(HOLD).lost, 0, "counted once");
}

#[test]
fn reordered_exports_are_late_not_lost() {
    let mut run = Run::new();
    let mut exports = v5_run(0, 20);
    // Swap neighbours and move one far back (but within the hold).
    exports.swap(3, 4);
    exports.swap(10, 11);
    let moved = exports.remove(6);
    exports.insert(15, moved);
    run.feed(exports);
    let f = run.close(HOLD * 2);
    assert_eq!((f.received, f.lost, f.duplicates), (600, 0, 0));
    assert_eq!(f.late, 30 * 3);
}

#[test]
fn duplicates_are_neither_received_twice_nor_lost() {
    let mut run = Run::new();
    let exports = v5_run(0, 10);
    let mut with_copies = exports.clone();
    with_copies.insert(5, exports[4]);
    with_copies.push(exports[2]);
    with_copies.push(exports[9]);
    run.feed(with_copies);
    let f = run.close(HOLD * 2);
    assert_eq!((f.exports, f.received, f.lost), (13, 300, 0));
    assert_eq!(f.duplicates, 90);
    assert_eq!(f.restarts, 0);
}

#[test]
fn sequence_numbers_wrap_at_2_32() {
    let mut run = Run::new();
    let first = u32::MAX - 100;
    let mut exports = v5_run(first, 10);
    assert!(exports[9].sequence < 200, "wrapped");
    exports.remove(6);
    run.feed(exports);
    let f = run.close(HOLD * 2);
    assert_eq!((f.received, f.lost, f.restarts), (270, 30, 0));
}

#[test]
fn v9_counts_export_packets() {
    let mut run = Run::new();
    let exports: Vec<Seen> = (1..=20u32)
        .filter(|s| *s != 7 && *s != 8)
        .map(|s| seen(V9, s, s % 5 + 1, 10_000 + s))
        .collect();
    run.feed(exports);
    let f = run.close(HOLD * 2);
    assert_eq!((f.received, f.lost), (18, 2));
    assert_eq!(run.unit(), "exports");
}

#[test]
fn an_exporter_counting_records_including_its_own_is_followed() {
    // softflowd's IPFIX: the sequence is the records sent *including* this
    // message's, so the first message's is its own count.
    let mut run = Run::new();
    let counts = [7u32, 12, 3, 12, 9, 1, 20, 5];
    let mut sent = 0;
    let exports: Vec<Seen> = counts
        .iter()
        .map(|&n| {
            sent += n;
            seen(IPFIX, sent, n, 1_700_000_000)
        })
        .collect();
    run.feed(exports.clone());
    let f = run.close(HOLD * 2);
    assert_eq!(
        (f.received, f.lost, f.duplicates),
        (69, 0, 0),
        "no phantom loss"
    );
    // And loss is still found in its terms.
    let mut run = Run::new();
    let mut gappy = exports;
    gappy.remove(4);
    run.feed(gappy);
    assert_eq!(run.close(HOLD * 2).lost, 9);
}

#[test]
fn an_export_lost_after_a_template_export_is_lost_not_a_new_counting() {
    // The templates (no data records), then the first data export is lost:
    // the next one's sequence is what "records including its own" predicts.
    let mut run = Run::new();
    let mut exports = vec![seen(IPFIX, 0, 0, 1_700_000_000)];
    exports.extend((1..20).map(|i| seen(IPFIX, 10 * i, 10, 1_700_000_000)));
    run.feed(exports);
    let f = run.close(HOLD * 2);
    assert_eq!((f.received, f.lost), (190, 10));
    assert_eq!(run.unit(), "records");
}

#[test]
fn a_v9_exporter_counting_records_is_followed() {
    let mut run = Run::new();
    let counts = [4u32, 9, 2, 7, 7, 1, 3];
    let mut sent = 0;
    let exports: Vec<Seen> = counts
        .iter()
        .map(|&n| {
            let e = seen(V9, sent, n, 20_000 + sent);
            sent += n;
            e
        })
        .collect();
    run.feed(exports);
    let f = run.close(HOLD * 2);
    assert_eq!((f.received, f.lost), (33, 0));
    assert_eq!(run.unit(), "records");
}

#[test]
fn a_v5_restart_is_a_restart_not_loss() {
    let mut run = Run::new();
    // 20 exports, then the exporter restarts: sequence and uptime from 0.
    run.feed(v5_run(0, 20));
    let again: Vec<Seen> = (0..5).map(|i| seen(V5, 30 * i, 30, 500 + i * 10)).collect();
    run.feed(again);
    let f = run.close(HOLD * 2);
    assert_eq!((f.restarts, f.lost, f.duplicates), (1, 0, 0));
    assert_eq!(f.received, 25 * 30);
}

#[test]
fn an_ipfix_restart_shows_in_its_export_time() {
    let mut run = Run::new();
    let before: Vec<Seen> = (0..10)
        .map(|i| seen(IPFIX, i * 10, 10, 1_700_000_000))
        .collect();
    run.feed(before);
    let after: Vec<Seen> = (0..3)
        .map(|i| seen(IPFIX, i * 10, 10, 1_700_000_005))
        .collect();
    run.feed(after);
    let f = run.close(HOLD * 2);
    assert_eq!(
        (f.restarts, f.lost, f.duplicates, f.received),
        (1, 0, 0, 130)
    );
}

#[test]
fn a_sequence_far_behind_is_a_restart() {
    let mut run = Run::new();
    run.feed(v5_run(1 << 30, 5));
    // Same uptime line (a counter reset without a reboot), sequence far back.
    run.feed((0..3).map(|i| seen(V5, 30 * i, 30, 20_000 + i)));
    let f = run.close(HOLD * 2);
    assert_eq!((f.restarts, f.lost), (1, 0));
}

#[test]
fn a_lone_restart_is_confirmed_when_nothing_contradicts_it() {
    let mut run = Run::new();
    run.feed(v5_run(0, 10));
    run.feed([seen(V5, 0, 30, 100)]);
    let f = run.close(HOLD / 2);
    assert_eq!(f.restarts, 0, "a candidate until the hold is over");
    let f = run.close(HOLD);
    assert_eq!((f.restarts, f.lost, f.received), (1, 0, 30));
}

#[test]
fn a_stray_old_duplicate_is_not_a_restart() {
    let mut run = Run::new();
    let exports = v5_run(0, 200);
    run.feed(exports[..150].iter().copied());
    // Export 3 again, long after: its uptime is well behind.
    run.feed([exports[3]]);
    run.feed(exports[150..].iter().copied());
    let f = run.close(HOLD * 2);
    assert_eq!((f.restarts, f.lost, f.duplicates), (0, 0, 30));
    assert_eq!(f.received, 200 * 30);
}

#[test]
fn uptime_wrapping_round_is_not_a_restart() {
    let mut run = Run::new();
    let exports: Vec<Seen> = (0..10)
        .map(|i| seen(V5, 30 * i, 30, (u32::MAX - 50).wrapping_add(i * 20)))
        .collect();
    run.feed(exports);
    let f = run.close(HOLD * 2);
    assert_eq!((f.restarts, f.lost, f.received), (0, 0, 300));
}

#[test]
fn the_last_close_loses_every_open_gap() {
    let mut run = Run::new();
    let mut exports = v5_run(0, 5);
    exports.remove(2);
    run.feed(exports);
    assert_eq!(run.last().lost, 30);
}

#[test]
fn open_gaps_are_bounded() {
    let mut run = Run::new();
    let exports: Vec<Seen> = (0..(MAX_GAPS as u32 + 10))
        .map(|i| seen(V5, 60 * i, 30, 10_000 + i))
        .collect();
    run.feed(exports);
    let stream = run.seq.streams.values().next().unwrap();
    assert_eq!(stream.gaps.len(), MAX_GAPS);
    let f = run.close(0);
    assert_eq!(f.lost, 30 * 9, "the oldest, at once");
}

#[test]
fn records_that_could_not_be_counted_cause_no_false_loss() {
    let mut run = Run::new();
    let mut exports = v5_run(0, 6);
    exports[2].key.version = IPFIX;
    let mut exports: Vec<Seen> = exports
        .into_iter()
        .map(|mut e| {
            e.key.version = IPFIX;
            e.clock = 1_700_000_000;
            e
        })
        .collect();
    exports[2].records = None;
    run.feed(exports);
    let f = run.close(HOLD * 2);
    assert_eq!((f.lost, f.exports), (0, 6));
}

#[test]
fn streams_are_kept_apart() {
    let mut seq = Sequences::default();
    let mut other = seen(V5, 0, 30, 10);
    other.key.domain = 1;
    for (i, e) in v5_run(0, 3).iter().enumerate() {
        seq.observe(e, i as u64);
        seq.observe(&other, i as u64);
        other.sequence += 60;
    }
    let healths = seq.close(10_000, HOLD, false);
    assert_eq!(healths.len(), 2);
    assert_eq!(healths[0].figures.lost, 0);
    assert_eq!(healths[1].figures.lost, 60);
}

#[test]
fn exports_sent_before_the_first_one_seen_are_late_not_duplicates() {
    let mut run = Run::new();
    let exports = v5_run(0, 8);
    // The stream is first seen at its third export.
    run.feed([2, 3, 1, 0, 4, 6, 5, 7].map(|i| exports[i]));
    let f = run.close(HOLD * 2);
    assert_eq!((f.received, f.duplicates, f.lost), (240, 0, 0));
    assert_eq!(f.late, 3 * 30, "exports 1 and 0, and 5: {f:?}");
}

#[test]
fn shuffled_windows_with_copies_ahead_and_behind_add_up() {
    let mut rng = crate::rng::Rng(0x18);
    let mut order: Vec<u32> = (0..200).collect();
    for window in order.chunks_mut(4) {
        for i in (1..window.len()).rev() {
            window.swap(i, rng.below(i as u64 + 1) as usize);
        }
    }
    let copies: Vec<u32> = (0..10).map(|_| rng.below(200) as u32).collect();
    for (n, copy) in copies.iter().enumerate() {
        order.insert(20 * n + 7, *copy);
    }
    let mut run = Run::new();
    run.feed(
        order
            .iter()
            .map(|&i| seen(V5, i * 10, 10, 5_000_000 + i * 10)),
    );
    let f = run.close(HOLD * 2);
    assert_eq!(
        (f.received, f.duplicates, f.lost, f.restarts),
        (2000, 100, 0, 0),
        "{copies:?}"
    );
}
