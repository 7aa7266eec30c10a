//! What the XDP program does with an sFlow datagram (collector-ebpf
//! `sflow.rs`), restated for userspace step by step: the same checks in the
//! same order over the same buffer (the datagram, then stale bytes up to
//! the kernel's slack), and records read by the shared
//! `flowtally_common::sflow::{packet_into, finish}`. The `sflow_kernel`
//! fuzz target compares it with the socket path's decoder, and
//! `tests/fuzz_xdp.rs` runs the target's inputs through the real program to
//! check the kernel gives the verdicts and records this model gives.

use flowtally_common::{
    agg::{FLAG_SFLOW_RENORMALIZE, FlowRecord, Ip, ip_from_v4},
    sflow::{
        ADDRESS_IPV4, ADDRESS_IPV6, FlowSample, HEADER_WINDOW, IPV4_RECORD_LEN, IPV6_RECORD_LEN,
        MAX_DATAGRAM_LEN, MAX_RECORDS, MAX_SAMPLES, RAW_HEADER_FIXED_LEN, RECORD_IPV4, RECORD_IPV6,
        RECORD_RAW_HEADER, SAMPLE_COUNTERS, SAMPLE_COUNTERS_EXPANDED, SAMPLE_FLOW,
        SAMPLE_FLOW_EXPANDED, SampleStat, SourceKey, VERSION, finish, interface,
        interface_expanded, packet_into,
    },
};

/// The kernel's verdict on one datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelVerdict {
    /// Aggregated in the kernel (`drop_sflow_aggregated`).
    Aggregated(Aggregated),
    /// Passed up whole, beyond the kernel's bounds or with counter samples
    /// (`pass_sflow_to_user`).
    ToUser,
    /// Passed up whole as malformed (`pass_sflow_invalid`).
    Invalid,
}

/// What the kernel aggregates from a datagram.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Aggregated {
    pub agent: Ip,
    /// One per flow sample with an IP packet, in order.
    pub records: Vec<FlowRecord>,
    /// Every flow sample, as counted in its source's state.
    pub flow_samples: Vec<(SourceKey, FlowSample)>,
    /// Samples by [`SampleStat`] (never counters: those go up).
    pub samples: [u64; SampleStat::COUNT as usize],
}

/// A flow sample as the walk notes it: its fields and its first packet
/// record (format, raw header protocol, where its bytes start, how many
/// count), if any.
struct Noted {
    sample: FlowSample,
    packet: Option<(u32, u32, usize, usize)>,
}

/// The XDP program's handling of `datagram` (a UDP payload to an sFlow
/// port), with `flags` as the kernel's `FLAGS`, `rate` as its `SFLOW_RATES`
/// map and records timed at `time_ms`; `stale` fills the kernel's buffer
/// past the datagram. `None` when the program would not take it for sFlow
/// (its first word is not version 5).
pub fn kernel_walk(
    datagram: &[u8],
    flags: u32,
    time_ms: u64,
    rate: impl Fn(&SourceKey) -> Option<u32>,
    stale: u8,
) -> Option<KernelVerdict> {
    use KernelVerdict::{Invalid, ToUser};
    if datagram.get(..4)? != VERSION.to_be_bytes() {
        return None;
    }
    let len = datagram.len();
    if !(8..=MAX_DATAGRAM_LEN).contains(&len) {
        return Some(ToUser);
    }
    let mut buf = vec![stale; MAX_DATAGRAM_LEN + HEADER_WINDOW];
    buf[..len].copy_from_slice(datagram);
    let (agent, header_len) = match be32(&buf, 4) {
        ADDRESS_IPV4 => (ip_from_v4([buf[8], buf[9], buf[10], buf[11]]), 28),
        ADDRESS_IPV6 if len >= 40 => (buf[8..24].try_into().expect("16 bytes"), 40),
        _ => return Some(Invalid),
    };
    if len < header_len {
        return Some(Invalid);
    }
    let sub_agent = be32(&buf, header_len - 16);
    let count = be32(&buf, header_len - 4);
    if count > MAX_SAMPLES {
        return Some(ToUser);
    }
    let (mut cursor, mut records, mut skipped) = (header_len, 0, 0);
    let mut noted = Vec::new();
    for _ in 0..count {
        let Some((format, body, end)) = element(&buf, cursor, len) else {
            return Some(Invalid);
        };
        let (fixed, expanded) = match format {
            SAMPLE_FLOW => (32, false),
            SAMPLE_FLOW_EXPANDED => (44, true),
            SAMPLE_COUNTERS | SAMPLE_COUNTERS_EXPANDED => return Some(ToUser),
            _ => {
                skipped += 1;
                cursor = end;
                continue;
            }
        };
        if body + fixed > end {
            return Some(Invalid);
        }
        let word = |i: usize| be32(&buf, body + 4 * i);
        let sample = if expanded {
            FlowSample {
                sequence: word(0),
                source_id: word(1) << 24 | (word(2) & 0x00ff_ffff),
                sampling_rate: word(3),
                sample_pool: word(4),
                drops: word(5),
                input_if: interface_expanded(word(6), word(7)),
                output_if: interface_expanded(word(8), word(9)),
            }
        } else {
            FlowSample {
                sequence: word(0),
                source_id: word(1),
                sampling_rate: word(2),
                sample_pool: word(3),
                drops: word(4),
                input_if: interface(word(5)),
                output_if: interface(word(6)),
            }
        };
        let mut records_left = word(fixed / 4 - 1);
        cursor = body + fixed;
        if records_left == 0 && cursor != end {
            return Some(Invalid);
        }
        let mut packet = None;
        while records_left > 0 {
            records += 1;
            if records > MAX_RECORDS {
                return Some(ToUser);
            }
            let Some((format, body, record_end)) = element(&buf, cursor, end) else {
                return Some(Invalid);
            };
            let record_len = record_end - body;
            let found = match format {
                RECORD_RAW_HEADER => {
                    if record_len < RAW_HEADER_FIXED_LEN {
                        return Some(Invalid);
                    }
                    let header_len = be32(&buf, body + 12) as usize;
                    let room = record_len - RAW_HEADER_FIXED_LEN;
                    if header_len > room || (header_len + 3) & !3 != room {
                        return Some(Invalid);
                    }
                    let counted = header_len.min(HEADER_WINDOW);
                    Some((
                        format,
                        be32(&buf, body),
                        body + RAW_HEADER_FIXED_LEN,
                        counted,
                    ))
                }
                RECORD_IPV4 if record_len == IPV4_RECORD_LEN => Some((format, 0, body, record_len)),
                RECORD_IPV6 if record_len == IPV6_RECORD_LEN => Some((format, 0, body, record_len)),
                RECORD_IPV4 | RECORD_IPV6 => return Some(Invalid),
                _ => None,
            };
            packet = packet.or(found);
            records_left -= 1;
            cursor = record_end;
            if records_left == 0 && record_end != end {
                return Some(Invalid);
            }
        }
        noted.push(Noted { sample, packet });
    }
    if cursor != len {
        return Some(Invalid);
    }
    let mut out = Aggregated {
        agent,
        ..Aggregated::default()
    };
    out.samples[SampleStat::Skipped as usize] = skipped;
    for Noted { sample, packet } in noted {
        let key = SourceKey {
            agent,
            sub_agent,
            source_id: sample.source_id,
        };
        out.flow_samples.push((key, sample));
        let (kind, protocol, at, counted) = packet.unwrap_or_default();
        let at = at & (MAX_DATAGRAM_LEN - 1);
        let mut record = FlowRecord::default();
        let window = &buf[at..at + HEADER_WINDOW];
        if !packet_into(kind, protocol, window, counted, &mut record) {
            out.samples[SampleStat::NoIpPacket as usize] += 1;
            continue;
        }
        let renormalised = (flags & FLAG_SFLOW_RENORMALIZE != 0)
            .then(|| rate(&key))
            .flatten();
        let rate = renormalised.unwrap_or(sample.sampling_rate);
        finish(&mut record, &sample, rate, flags, time_ms);
        out.records.push(record);
        out.samples[SampleStat::Flow as usize] += 1;
    }
    Some(KernelVerdict::Aggregated(out))
}

/// The element (sample or record) at `at`, inside `limit`: its format, and
/// where its data starts and ends; `None` if it does not fit or its length
/// is not a multiple of 4.
fn element(buf: &[u8], at: usize, limit: usize) -> Option<(u32, usize, usize)> {
    if at + 8 > limit {
        return None;
    }
    let (format, len) = (be32(buf, at), be32(buf, at + 4) as usize);
    if !len.is_multiple_of(4) || len > limit - at - 8 {
        return None;
    }
    Some((format, at + 8, at + 8 + len))
}

/// A big-endian word at an offset masked into the datagram's room, as the
/// kernel reads it.
fn be32(buf: &[u8], at: usize) -> u32 {
    let at = at & (MAX_DATAGRAM_LEN - 1);
    u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}
