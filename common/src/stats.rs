//! Counters the XDP program keeps per CPU and userspace sums at scrape time.

/// A count and the bytes it stands for, on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub count: u64,
    pub bytes: u64,
}

impl core::ops::Add for Counter {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            count: self.count + other.count,
            bytes: self.bytes + other.bytes,
        }
    }
}

/// What the XDP program returns for a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// On to the network stack (and the socket path, for flow exports).
    Pass,
    /// Consumed: aggregated in the kernel, or refused.
    Drop,
}

impl Verdict {
    /// Metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Drop => "drop",
        }
    }
}

/// What the XDP program did with a frame, and why. The discriminant is the
/// index into `STATS`; `count` is frames and `bytes` their length.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpStat {
    /// Not addressed to a collector port: passed on untouched.
    PassOther = 0,
    /// To a collector port, but not a flow export version the kernel
    /// parses (or too short to tell): passed to the socket path, which
    /// rejects and counts it.
    PassUnknownVersion = 1,
    /// An IPv4 or IPv6 fragment: passed up so the kernel reassembles it; the
    /// reassembled datagram reaches the socket path.
    PassFragment = 2,
    /// Shorter than the headers it announces: passed on for the stack to judge.
    PassMalformed = 3,
    /// A NetFlow v5 export fully aggregated in the kernel, then dropped.
    DropV5Aggregated = 4,
    /// A NetFlow v5 export that fails validation (truncated, bad count,
    /// length mismatch): passed to the socket path, which rejects and counts it.
    PassV5Invalid = 5,
    /// From an exporter not on the allow-list: dropped.
    DropUnknownExporter = 6,
    /// A NetFlow v9 or IPFIX export whose data sets all have compiled
    /// templates, fully aggregated in the kernel, then dropped.
    DropTemplatedAggregated = 7,
    /// A v9/IPFIX export carrying (options) templates, or data sets whose
    /// template the kernel lacks: passed to the socket path, which learns
    /// and decodes it.
    PassTemplatedToUser = 8,
    /// A v9/IPFIX export the kernel will not parse (malformed set structure,
    /// longer than its buffer, too many sets or records): passed to the
    /// socket path, which decodes or rejects and counts it.
    PassTemplatedInvalid = 9,
    /// An sFlow datagram fully aggregated in the kernel, then dropped.
    DropSflowAggregated = 10,
    /// An sFlow datagram with counter samples, or past the kernel's bounds
    /// (`sflow::MAX_*`): passed to the socket path, which decodes it.
    PassSflowToUser = 11,
    /// An sFlow datagram the kernel found malformed: passed to the socket
    /// path, which rejects and counts it by cause.
    PassSflowInvalid = 12,
}

impl XdpStat {
    pub const ALL: [Self; 13] = [
        Self::PassOther,
        Self::PassUnknownVersion,
        Self::PassFragment,
        Self::PassMalformed,
        Self::DropV5Aggregated,
        Self::PassV5Invalid,
        Self::DropUnknownExporter,
        Self::DropTemplatedAggregated,
        Self::PassTemplatedToUser,
        Self::PassTemplatedInvalid,
        Self::DropSflowAggregated,
        Self::PassSflowToUser,
        Self::PassSflowInvalid,
    ];

    /// Number of `STATS` entries.
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// The XDP verdict this stat records.
    pub const fn verdict(self) -> Verdict {
        match self {
            Self::DropV5Aggregated
            | Self::DropUnknownExporter
            | Self::DropTemplatedAggregated
            | Self::DropSflowAggregated => Verdict::Drop,
            _ => Verdict::Pass,
        }
    }

    /// What kind of frame it was, as a metric label.
    pub const fn class(self) -> &'static str {
        match self {
            Self::PassOther => "other",
            Self::PassUnknownVersion => "unknown_version",
            Self::PassFragment => "fragment",
            Self::PassMalformed => "malformed",
            Self::DropV5Aggregated => "v5_aggregated",
            Self::PassV5Invalid => "v5_invalid",
            Self::DropUnknownExporter => "unknown_exporter",
            Self::DropTemplatedAggregated => "templated_aggregated",
            Self::PassTemplatedToUser => "templated_to_user",
            Self::PassTemplatedInvalid => "templated_invalid",
            Self::DropSflowAggregated => "sflow_aggregated",
            Self::PassSflowToUser => "sflow_to_user",
            Self::PassSflowInvalid => "sflow_invalid",
        }
    }
}

/// What became of the flow records the XDP program parsed. The
/// discriminant indexes `RECORD_STATS`; `count` is records and `bytes` the
/// (sampling-scaled) octets they carry.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordStat {
    /// Parsed from a valid export; every one ends in exactly one of the
    /// outcomes below, per direction it is aggregated in.
    Parsed = 0,
    /// Added to the active aggregate map.
    Aggregated = 1,
    /// The map was full or busy: sent through the overflow ring instead.
    Overflowed = 2,
    /// The ring was full too: lost, and counted here.
    Dropped = 3,
    /// Outside the billing scope (another router bills it): not aggregated.
    OutOfScope = 4,
}

impl RecordStat {
    pub const ALL: [Self; 5] = [
        Self::Parsed,
        Self::Aggregated,
        Self::Overflowed,
        Self::Dropped,
        Self::OutOfScope,
    ];
    pub const COUNT: u32 = Self::ALL.len() as u32;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `Counter` is `repr(C)`, two u64s, no padding, any bit pattern valid.
    unsafe impl aya::Pod for super::Counter {}
}
