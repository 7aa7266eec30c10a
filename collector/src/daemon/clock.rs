//! The daemon's clock. Sans-IO modules take `now_ms` from here, by way of
//! their callers; nothing else reads the time.

/// Wall-clock Unix ms: persisted times (template refreshes, sessions) must
/// mean the same after a restart, so a monotonic clock will not do.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
