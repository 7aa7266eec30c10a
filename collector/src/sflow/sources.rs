//! Per-source bookkeeping for the integrity audit (sans-IO): what each
//! sFlow data source's flow samples say about it between two flushes.
//!
//! Every flow sample carries its source's sequence number (+1 per sample),
//! sample pool (packets the source could have sampled, cumulative) and
//! drops (samples the agent could not send, cumulative). Both data paths
//! keep, per source, the count of samples that arrived and the counters of
//! the latest one ([`SourceState`]); at each flush the two are merged and
//! compared with the previous flush:
//!
//! - `lost` = sequence advance − samples received: samples that left the
//!   agent but never arrived (lost datagrams). Reordering across a flush
//!   can move a few from one interval to the next; it never adds up to loss.
//! - `sample_pool` and `drops` advances, modulo 2^32.
//! - A sequence number that goes back beyond the reordering window
//!   (`flowtally_common::sflow::REORDER_WINDOW`) is an agent restart:
//!   counters start again from it, and nothing is called lost.
//! - The renormalised sampling rate is pool advance / samples received: the
//!   packets each *received* sample stands for, so that lost datagrams are
//!   made up for (pmacct's `sfacctd_renormalize` does the same from the
//!   sampling rate alone). Rounded to an integer, at least 1.

use std::collections::HashMap;

use flowtally_common::sflow::{FlowSample, SourceKey, SourceState};

/// One source's figures for one interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceHealth {
    pub key: SourceKey,
    pub samples: u64,
    pub lost: u64,
    pub sample_pool: u64,
    pub drops: u64,
    /// The latest sample's sampling rate.
    pub sampling_rate: u32,
    pub restarted: bool,
    /// Pool advance / samples received; `None` when either is 0.
    pub renormalised_rate: Option<u32>,
}

#[derive(Debug, Default)]
pub struct Sources {
    /// What the socket path has seen, cumulative.
    socket: HashMap<SourceKey, SourceState>,
    /// Both paths merged, as of the last interval.
    last: HashMap<SourceKey, SourceState>,
}

impl Sources {
    /// The socket path received `sample` from `key`.
    pub fn observe(&mut self, key: &SourceKey, sample: &FlowSample) {
        self.socket.entry(*key).or_default().observe(sample);
    }

    /// Closes an interval: merges the kernel's cumulative states (`kernel`)
    /// with the socket path's and returns the figures of every source that
    /// sent samples since the last call.
    pub fn interval(
        &mut self,
        kernel: impl IntoIterator<Item = (SourceKey, SourceState)>,
    ) -> Vec<SourceHealth> {
        let mut now = self.socket.clone();
        for (key, state) in kernel {
            now.entry(key).or_default().merge(&state);
        }
        let mut healths: Vec<SourceHealth> = now
            .iter()
            .filter_map(|(key, now)| health(key, self.last.get(key), now))
            .collect();
        healths.sort_by_key(|h| h.key);
        self.last = now;
        healths
    }
}

fn health(key: &SourceKey, last: Option<&SourceState>, now: &SourceState) -> Option<SourceHealth> {
    let mut h = SourceHealth {
        key: *key,
        sampling_rate: now.sampling_rate,
        ..SourceHealth::default()
    };
    let Some(last) = last else {
        // First seen: the pool and drops count from the agent's start; what
        // was lost before cannot be told.
        h.samples = now.samples;
        h.sample_pool = u64::from(now.sample_pool);
        h.drops = u64::from(now.drops);
        return (now.samples > 0).then_some(h);
    };
    h.samples = now.samples - last.samples;
    if h.samples == 0 {
        return None;
    }
    let advance = now.sequence.wrapping_sub(last.sequence);
    if (advance as i32) < 0 {
        // Only a restart moves the latest sequence back (see `supersedes`).
        h.restarted = true;
        return Some(h);
    }
    h.lost = u64::from(advance).saturating_sub(h.samples);
    h.sample_pool = u64::from(now.sample_pool.wrapping_sub(last.sample_pool));
    h.drops = u64::from(now.drops.wrapping_sub(last.drops));
    h.renormalised_rate = (h.sample_pool > 0).then(|| {
        let rate = (h.sample_pool + h.samples / 2) / h.samples;
        u32::try_from(rate).unwrap_or(u32::MAX).max(1)
    });
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(source_id: u32) -> SourceKey {
        SourceKey {
            source_id,
            ..SourceKey::default()
        }
    }

    fn sample(sequence: u32, sample_pool: u32, drops: u32) -> FlowSample {
        FlowSample {
            sequence,
            sampling_rate: 100,
            sample_pool,
            drops,
            ..FlowSample::default()
        }
    }

    #[test]
    fn lost_samples_are_the_sequence_advance_not_received() {
        let mut sources = Sources::default();
        sources.observe(&key(1), &sample(10, 1000, 0));
        let first = sources.interval([]);
        assert_eq!(
            (first[0].samples, first[0].lost, first[0].sample_pool),
            (1, 0, 1000)
        );
        // 11..=20 sent, 3 of them lost; the pool grew by 10 samples' worth.
        for seq in [11, 12, 14, 15, 17, 18, 20] {
            sources.observe(&key(1), &sample(seq, 1000 + (seq - 10) * 100, 2));
        }
        let h = sources.interval([])[0];
        assert_eq!((h.samples, h.lost, h.sample_pool, h.drops), (7, 3, 1000, 2));
        assert_eq!(
            h.renormalised_rate,
            Some(143),
            "1000 packets over 7 samples"
        );
        assert!(sources.interval([]).is_empty(), "nothing new");
    }

    #[test]
    fn the_kernel_and_the_socket_path_add_up() {
        let mut sources = Sources::default();
        sources.observe(&key(1), &sample(1, 100, 0));
        sources.interval([]);
        sources.observe(&key(1), &sample(3, 300, 0));
        let mut kernel = SourceState::default();
        kernel.observe(&sample(2, 200, 0));
        kernel.observe(&sample(4, 400, 0));
        let h = sources.interval([(key(1), kernel)])[0];
        assert_eq!((h.samples, h.lost, h.sample_pool), (3, 0, 300));
        assert_eq!(h.renormalised_rate, Some(100));
    }

    #[test]
    fn a_sequence_going_back_is_a_restart_and_counters_wrap() {
        let mut sources = Sources::default();
        sources.observe(&key(1), &sample(u32::MAX - 1, u32::MAX - 99, u32::MAX));
        sources.interval([]);
        sources.observe(&key(1), &sample(1, 101, 1));
        let h = sources.interval([])[0];
        assert_eq!((h.samples, h.lost, h.sample_pool, h.drops), (1, 2, 201, 2));
        assert!(!h.restarted, "wrapped, not restarted");
        sources.observe(&key(1), &sample(5000, 500_000, 0));
        sources.interval([]);
        // The agent restarted: its sequence and pool start again.
        sources.observe(&key(1), &sample(3, 300, 0));
        let h = sources.interval([])[0];
        assert!(h.restarted);
        assert_eq!((h.samples, h.lost, h.sample_pool), (1, 0, 0));
        sources.observe(&key(1), &sample(4, 400, 0));
        let h = sources.interval([])[0];
        assert_eq!((h.restarted, h.lost, h.sample_pool), (false, 0, 100));
    }
}
