//! Flow export codecs (sans-IO): bytes in, records or a precise error out.

pub mod v5;
