//! NetFlow v9 (RFC 3954) and IPFIX (RFC 7011) wire constants that the
//! kernel's set walk and the userspace decoder must agree on.

pub const V9: u16 = 9;
pub const IPFIX: u16 = 10;
/// Version, count, sysUptime, unix secs, sequence, source id.
pub const V9_HEADER_LEN: usize = 20;
/// Version, length, export time, sequence, observation domain.
pub const IPFIX_HEADER_LEN: usize = 16;
/// Set id and set length.
pub const SET_HEADER_LEN: usize = 4;
/// Set ids of template and options template sets.
pub const V9_TEMPLATE_SET: u16 = 0;
pub const V9_OPTIONS_TEMPLATE_SET: u16 = 1;
pub const IPFIX_TEMPLATE_SET: u16 = 2;
pub const IPFIX_OPTIONS_TEMPLATE_SET: u16 = 3;
/// Data sets carry their template's id, which starts here; set ids below
/// it are (options) template sets or reserved.
pub const FIRST_DATA_SET_ID: u16 = 256;

/// The header length of an export of `version` ([`V9`] or [`IPFIX`]).
pub const fn header_len(version: u16) -> usize {
    if version == V9 {
        V9_HEADER_LEN
    } else {
        IPFIX_HEADER_LEN
    }
}
