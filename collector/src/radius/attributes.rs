//! Attribute types this codec gives meaning to. Lengths are of the value,
//! after the two-byte type and length header.

/// text (RFC 2865 §5.1).
pub const USER_NAME: u8 = 1;
/// ipv4addr (RFC 2865 §5.4).
pub const NAS_IP_ADDRESS: u8 = 4;
/// integer (RFC 2865 §5.5).
pub const NAS_PORT: u8 = 5;
/// ipv4addr (RFC 2865 §5.8).
pub const FRAMED_IP_ADDRESS: u8 = 8;
/// text: the name of a filter list the NAS applies (RFC 2865 §5.11).
pub const FILTER_ID: u8 = 11;
/// text (RFC 2865 §5.18).
pub const REPLY_MESSAGE: u8 = 18;
/// string, may repeat; the NAS echoes what the server put in the
/// Access-Accept (RFC 2865 §5.25).
pub const CLASS: u8 = 25;
/// Vendor id (4 bytes) and at least one byte of vendor data (RFC 2865 §5.26).
pub const VENDOR_SPECIFIC: u8 = 26;
/// integer, seconds (RFC 2865 §5.27).
pub const SESSION_TIMEOUT: u8 = 27;
/// integer, seconds (RFC 2865 §5.28).
pub const IDLE_TIMEOUT: u8 = 28;
/// text (RFC 2865 §5.31).
pub const CALLING_STATION_ID: u8 = 31;
/// text (RFC 2865 §5.32).
pub const NAS_IDENTIFIER: u8 = 32;
/// string, may repeat; a server copies them into its response, in order
/// (RFC 2865 §5.33).
pub const PROXY_STATE: u8 = 33;
/// integer (RFC 2866 §5.1).
pub const ACCT_STATUS_TYPE: u8 = 40;
/// integer, seconds (RFC 2866 §5.2).
pub const ACCT_DELAY_TIME: u8 = 41;
/// integer, low 32 bits of the counter (RFC 2866 §5.3).
pub const ACCT_INPUT_OCTETS: u8 = 42;
/// integer (RFC 2866 §5.4).
pub const ACCT_OUTPUT_OCTETS: u8 = 43;
/// text (RFC 2866 §5.5).
pub const ACCT_SESSION_ID: u8 = 44;
/// integer, seconds (RFC 2866 §5.7).
pub const ACCT_SESSION_TIME: u8 = 46;
/// integer (RFC 2866 §5.10).
pub const ACCT_TERMINATE_CAUSE: u8 = 49;
/// integer, times the input octet counter wrapped (RFC 2869 §5.1).
pub const ACCT_INPUT_GIGAWORDS: u8 = 52;
/// integer (RFC 2869 §5.2).
pub const ACCT_OUTPUT_GIGAWORDS: u8 = 53;
/// integer, Unix seconds (RFC 2869 §5.3).
pub const EVENT_TIMESTAMP: u8 = 55;
/// 16 bytes of HMAC-MD5 (RFC 2869 §5.14, RFC 3579 §3.2).
pub const MESSAGE_AUTHENTICATOR: u8 = 80;
/// integer, seconds between interim updates (RFC 2869 §5.16).
pub const ACCT_INTERIM_INTERVAL: u8 = 85;
/// text (RFC 2869 §5.17).
pub const NAS_PORT_ID: u8 = 87;
/// ipv6addr (RFC 3162 §2.1).
pub const NAS_IPV6_ADDRESS: u8 = 95;
/// ipv6prefix (RFC 3162 §2.3).
pub const FRAMED_IPV6_PREFIX: u8 = 97;
/// integer: why a NAS refused a CoA or Disconnect-Request (RFC 5176 §3.5).
pub const ERROR_CAUSE: u8 = 101;
/// ipv6prefix (RFC 4818 §3).
pub const DELEGATED_IPV6_PREFIX: u8 = 123;
/// ipv6addr (RFC 6911 §3.1).
pub const FRAMED_IPV6_ADDRESS: u8 = 168;
