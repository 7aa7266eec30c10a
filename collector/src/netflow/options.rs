//! What options data says about an exporter's observation domain (v9:
//! source id): its sampling interval, domain-wide or per sampler, and when
//! the exporter started, which IPFIX uptime times count from.

use std::collections::BTreeMap;

use flowtally_common::{agg::Ip, template::ie};

use super::sets::FieldSpec;

/// An exporter's observation domain (v9: source id) in one protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainKey {
    pub exporter: Ip,
    pub domain: u32,
    pub version: u16,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainState {
    /// When options data last said something here.
    pub refreshed_ms: u64,
    /// 1 in N for records without a sampler id.
    pub sampling: Option<u32>,
    /// 1 in N per sampler id (IE 48 or 302).
    pub samplers: BTreeMap<u64, u32>,
    /// systemInitTimeMilliseconds (IE 160): Unix ms at exporter uptime 0.
    pub system_init_ms: Option<u64>,
}

/// What one options data record says that matters here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OptionsRecord {
    pub sampler: Option<u64>,
    pub interval: Option<u32>,
    pub system_init_ms: Option<u64>,
}

impl OptionsRecord {
    /// Reads record `rec` with `fields` at `extents`, skipping the first
    /// `skip` fields (v9 scope fields, whose types are not elements).
    pub fn read(rec: &[u8], fields: &[FieldSpec], extents: &[(usize, usize)], skip: usize) -> Self {
        let (mut sampling, mut random, mut taken, mut space) = (None, None, None, None);
        let mut out = Self::default();
        for (field, &(offset, len)) in fields.iter().zip(extents).skip(skip) {
            let Some(id) = field.iana_ie() else { continue };
            let Some(value) = rec
                .get(offset..offset + len)
                .filter(|v| (1..=8).contains(&v.len()))
            else {
                continue;
            };
            let target = match id {
                ie::SAMPLING_INTERVAL => &mut sampling,
                ie::SAMPLER_RANDOM_INTERVAL => &mut random,
                ie::SAMPLING_PACKET_INTERVAL => &mut taken,
                ie::SAMPLING_PACKET_SPACE => &mut space,
                ie::SAMPLER_ID | ie::SELECTOR_ID => &mut out.sampler,
                ie::SYSTEM_INIT_TIME_MILLISECONDS => &mut out.system_init_ms,
                _ => continue,
            };
            target.get_or_insert(value.iter().fold(0, |v, &b| v << 8 | u64::from(b)));
        }
        out.interval = interval(sampling.or(random), taken, space);
        // Zero would put the exporter's start in 1970: it says nothing.
        out.system_init_ms = out.system_init_ms.filter(|&ms| ms > 0);
        out
    }
}

/// 1 in N: samplingInterval or samplerRandomInterval as given; otherwise
/// from samplingPacketInterval (packets taken) and samplingPacketSpace
/// (packets skipped after them) as (taken + space) / taken, rounded to the
/// nearest integer. Zero means nothing.
fn interval(given: Option<u64>, taken: Option<u64>, space: Option<u64>) -> Option<u32> {
    let n = match (given, taken) {
        (Some(n), _) => n,
        (None, Some(taken)) if taken > 0 => {
            let period = taken.saturating_add(space.unwrap_or(0));
            period.saturating_add(taken / 2) / taken
        }
        _ => return None,
    };
    (n > 0).then(|| u32::try_from(n).unwrap_or(u32::MAX))
}

impl DomainState {
    /// Takes in what `rec` says. A sampler beyond `max_samplers` is
    /// ignored, and the answer says so.
    pub fn apply(&mut self, rec: &OptionsRecord, now_ms: u64, max_samplers: usize) -> Applied {
        let mut sampler_rejected = false;
        let before = (self.sampling, self.system_init_ms);
        self.refreshed_ms = now_ms;
        if rec.system_init_ms.is_some() {
            self.system_init_ms = rec.system_init_ms;
        }
        match (rec.sampler, rec.interval) {
            (Some(id), Some(n)) => {
                if self.samplers.len() < max_samplers || self.samplers.contains_key(&id) {
                    self.samplers.insert(id, n);
                } else {
                    sampler_rejected = true;
                }
            }
            (None, Some(n)) => self.sampling = Some(n),
            _ => {}
        }
        Applied {
            changed: before != (self.sampling, self.system_init_ms),
            sampler_rejected,
        }
    }
}

/// What [`DomainState::apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Something compiled templates depend on (domain-wide interval, system
    /// init time) changed.
    pub changed: bool,
    pub sampler_rejected: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netflow::sets::fixed_extents;

    fn read(fields: &[(u16, u16)], rec: &[u8], skip: usize) -> OptionsRecord {
        let fields: Vec<_> = fields
            .iter()
            .map(|&(id, len)| FieldSpec::iana(id, len))
            .collect();
        let extents = fixed_extents(&fields);
        OptionsRecord::read(rec, &fields, &extents, skip)
    }

    #[test]
    fn sampling_interval_comes_from_any_of_its_elements() {
        assert_eq!(read(&[(34, 4)], &[0, 0, 0, 100], 0).interval, Some(100));
        assert_eq!(read(&[(50, 2)], &[0, 64], 0).interval, Some(64));
        // 1 packet taken, 99 skipped: 1 in 100.
        assert_eq!(
            read(&[(305, 4), (306, 4)], &[0, 0, 0, 1, 0, 0, 0, 99], 0).interval,
            Some(100)
        );
        // 3 taken, 7 skipped: 1 in 3.33, rounded to 3.
        assert_eq!(read(&[(305, 1), (306, 1)], &[3, 7], 0).interval, Some(3));
        assert_eq!(
            read(&[(34, 4)], &[0, 0, 0, 0], 0).interval,
            None,
            "0 says nothing"
        );
    }

    #[test]
    fn v9_scope_fields_are_not_elements() {
        // Scope type 1 (System) is not octetDeltaCount; 34 after it is read.
        let rec = read(&[(1, 4), (34, 4)], &[0, 0, 0, 9, 0, 0, 0, 10], 1);
        assert_eq!(rec.interval, Some(10));
    }

    #[test]
    fn sampler_records_set_their_sampler_only() {
        let mut domain = DomainState::default();
        let per_sampler = OptionsRecord {
            sampler: Some(3),
            interval: Some(1000),
            system_init_ms: None,
        };
        assert!(
            !domain.apply(&per_sampler, 1, 1).changed,
            "no compiled template depends on it"
        );
        assert_eq!(domain.samplers.get(&3), Some(&1000));
        assert_eq!(domain.sampling, None);
        let another = OptionsRecord {
            sampler: Some(4),
            ..per_sampler
        };
        assert!(
            domain.apply(&another, 2, 1).sampler_rejected,
            "past max_samplers"
        );
        let domain_wide = OptionsRecord {
            sampler: None,
            interval: Some(10),
            system_init_ms: Some(5),
        };
        assert!(domain.apply(&domain_wide, 3, 1).changed);
        assert!(!domain.apply(&domain_wide, 4, 1).changed, "unchanged");
        assert_eq!(
            (domain.sampling, domain.system_init_ms, domain.refreshed_ms),
            (Some(10), Some(5), 4)
        );
    }
}
