//! A token bucket per client: a NAS flooding accounting cannot starve the
//! others. Excess requests are dropped unanswered; the NAS retransmits.

use std::{collections::HashMap, net::IpAddr};

#[derive(Debug)]
pub struct Limiter {
    per_second: f64,
    burst: f64,
    buckets: HashMap<IpAddr, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
}

/// Buckets idle this long are forgotten (they would be full anyway).
const IDLE_MS: u64 = 60_000;

impl Limiter {
    /// `per_second` sustained, bursts of twice that.
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second: f64::from(per_second),
            burst: 2.0 * f64::from(per_second),
            buckets: HashMap::new(),
        }
    }

    pub fn allow(&mut self, client: IpAddr, now_ms: u64) -> bool {
        if self.buckets.len() > 65_536 {
            self.buckets
                .retain(|_, b| now_ms.saturating_sub(b.at_ms) < IDLE_MS);
        }
        let burst = self.burst;
        let bucket = self.buckets.entry(client).or_insert(Bucket {
            tokens: burst,
            at_ms: now_ms,
        });
        let elapsed = now_ms.saturating_sub(bucket.at_ms) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(burst);
        bucket.at_ms = now_ms;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds_per_client() {
        let mut limiter = Limiter::new(10);
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        let b: IpAddr = "198.18.0.2".parse().unwrap();
        let passed = (0..100).filter(|_| limiter.allow(a, 0)).count();
        assert_eq!(passed, 20, "a burst of twice the rate");
        assert!(limiter.allow(b, 0), "another client is unaffected");
        assert!(!limiter.allow(a, 50), "half a token after 50 ms");
        assert!(limiter.allow(a, 100), "one token after 100 ms");
        let passed = (0..100).filter(|_| limiter.allow(a, 1_100)).count();
        assert_eq!(passed, 10, "ten per second");
    }
}
