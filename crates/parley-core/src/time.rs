//! Wall-clock time as the protocol and the store count it.

use std::time::SystemTime;

/// Milliseconds since the Unix epoch (0 on a clock set before it).
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// Seconds since the Unix epoch (0 on a clock set before it), as tokens count them.
pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
