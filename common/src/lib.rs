//! Plain data shared by the XDP program and userspace: map names, map
//! layouts and the bounds the verifier needs. Nothing here allocates.
#![no_std]

/// Per-CPU counters of the XDP program (`PerCpuArray<Counter>`), indexed by
/// [`XdpStat`].
pub const STATS_MAP: &str = "STATS";

/// UDP destination ports (host byte order) that carry flow exports to us
/// (`HashMap<u16, u8>`). Userspace fills it from the bound `--netflow`
/// sockets before attaching.
pub const COLLECTOR_PORTS_MAP: &str = "COLLECTOR_PORTS";

/// Upper bound of distinct collector ports; sizes `COLLECTOR_PORTS`.
pub const MAX_COLLECTOR_PORTS: u32 = 64;

/// Packets and bytes (whole frames) seen for one [`XdpStat`] on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// What the XDP program did with a frame, and why. The discriminant is the
/// index into `STATS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpStat {
    /// Not addressed to a collector port: passed on untouched.
    PassOther = 0,
    /// A UDP datagram to a collector port: passed up to the socket path.
    PassFlowExport = 1,
    /// An IPv4 fragment: passed up so the kernel reassembles it; the
    /// reassembled datagram reaches the socket path.
    PassFragment = 2,
    /// Shorter than the headers it announces: passed on for the stack to judge.
    PassMalformed = 3,
}

impl XdpStat {
    pub const ALL: [Self; 4] = [
        Self::PassOther,
        Self::PassFlowExport,
        Self::PassFragment,
        Self::PassMalformed,
    ];

    /// Number of `STATS` entries.
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// The XDP verdict this stat records, as a metric label.
    pub const fn verdict(self) -> &'static str {
        match self {
            Self::PassOther | Self::PassFlowExport | Self::PassFragment | Self::PassMalformed => {
                "pass"
            }
        }
    }

    /// What kind of frame it was, as a metric label.
    pub const fn class(self) -> &'static str {
        match self {
            Self::PassOther => "other",
            Self::PassFlowExport => "flow_export",
            Self::PassFragment => "fragment",
            Self::PassMalformed => "malformed",
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `Counter` is `repr(C)`, has no padding and is valid for any bit pattern.
    unsafe impl aya::Pod for super::Counter {}
}
