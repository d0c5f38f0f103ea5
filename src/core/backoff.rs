//! Reconnect backoff: exponential with full jitter (AWS architecture blog, "Exponential Backoff
//! And Jitter"), plus a small deterministic random source so the core stays a pure function of
//! its inputs.
//!
//! Invariant: a delay never exceeds `max_delay_ms`, and the attempt counter only grows until
//! [`Backoff::reset`] is called (the session does that once a connection has stayed up).

/// Reconnect policy knobs (the `reconnect` option).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffConfig {
    /// Upper bound of the first delay; the first retry waits a random 0..=this.
    pub initial_delay_ms: u64,
    /// Cap of any delay.
    pub max_delay_ms: u64,
    /// Growth factor per attempt (at least 1).
    pub multiplier: f64,
    /// Attempts before giving up; `None` retries for ever.
    pub max_attempts: Option<u32>,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig { initial_delay_ms: 500, max_delay_ms: 30_000, multiplier: 2.0, max_attempts: None }
    }
}

/// xorshift64*: tiny, fast and good enough for jitter (not for secrets).
#[derive(Debug, Clone)]
pub struct Jitter {
    state: u64,
}

impl Jitter {
    /// A generator from any seed (zero is mapped to a fixed non-zero state).
    pub fn new(seed: u64) -> Self {
        Jitter { state: if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed } }
    }

    /// Next value, uniform in `0..=bound`.
    pub fn next_up_to(&mut self, bound: u64) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let value = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        if bound == u64::MAX {
            value
        } else {
            value % (bound + 1)
        }
    }
}

/// The attempt counter and the delay it implies.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
}

impl Backoff {
    /// A backoff at attempt zero.
    pub fn new(config: BackoffConfig) -> Self {
        Backoff { config, attempt: 0 }
    }

    /// Attempts made since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether another attempt is allowed.
    pub fn can_retry(&self) -> bool {
        self.config.max_attempts.is_none_or(|max| self.attempt < max)
    }

    /// Counts an attempt and returns its delay: random in `0..=min(cap, initial * m^(n-1))`.
    pub fn next_delay(&mut self, jitter: &mut Jitter) -> u64 {
        let exponent = self.attempt.min(64);
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = (self.config.initial_delay_ms as f64) * power(self.config.multiplier, exponent);
        let ceiling = if ceiling.is_finite() {
            (ceiling as u64).min(self.config.max_delay_ms)
        } else {
            self.config.max_delay_ms
        };
        jitter.next_up_to(ceiling)
    }

    /// Back to attempt zero (after a connection has proven stable).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// `base` to the power `exponent` by squaring (`f64::powi` is not in `core`, which the wasm
/// build is limited to).
fn power(mut base: f64, mut exponent: u32) -> f64 {
    let mut result = 1.0;
    while exponent > 0 {
        if exponent & 1 == 1 {
            result *= base;
        }
        base *= base;
        exponent >>= 1;
    }
    result
}

#[cfg(test)]
#[cfg(not(target_arch = "wasm32"))]
mod tests {
    use super::*;

    #[test]
    fn power_by_squaring_agrees_with_powi() {
        for base in [1.0, 1.5, 2.0, 3.7, 100.0] {
            for exponent in [0u32, 1, 2, 5, 17, 64] {
                let expected = f64::powi(base, exponent as i32);
                let got = super::power(base, exponent);
                assert!((got - expected).abs() <= expected * 1e-12, "{base}^{exponent}: {got} vs {expected}");
            }
        }
    }

    #[test]
    fn delays_grow_within_the_jittered_ceiling_and_cap() {
        // Over many seeds: no delay exceeds its attempt's ceiling, and the largest delay drawn
        // at each attempt comes close to it (the ceiling really grows, then stops at the cap).
        let ceilings = [500u64, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000];
        let mut largest = [0u64; 9];
        for seed in 1..=500u64 {
            let mut backoff = Backoff::new(BackoffConfig::default());
            let mut jitter = Jitter::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            for (attempt, ceiling) in ceilings.iter().enumerate() {
                let delay = backoff.next_delay(&mut jitter);
                assert!(delay <= *ceiling, "seed {seed}, attempt {attempt}: {delay} > {ceiling}");
                largest[attempt] = largest[attempt].max(delay);
            }
            assert_eq!(backoff.attempt(), 9);
            backoff.reset();
            assert_eq!(backoff.attempt(), 0);
        }
        for (attempt, ceiling) in ceilings.iter().enumerate() {
            assert!(largest[attempt] * 100 >= ceiling * 95, "attempt {attempt}: largest {} of {ceiling}", largest[attempt]);
        }
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_range() {
        for seed in [1u64, 7, 42, 0xDEAD_BEEF, u64::MAX] {
            let mut jitter = Jitter::new(seed);
            let mut low = 0;
            let mut high = 0;
            for _ in 0..1000 {
                let mut backoff = Backoff::new(BackoffConfig::default());
                let delay = backoff.next_delay(&mut jitter);
                assert!(delay <= 500);
                if delay < 100 {
                    low += 1;
                }
                if delay > 400 {
                    high += 1;
                }
            }
            // Uniform over 0..=500: about 200 each; a broken generator would pile up at one end.
            assert!((120..280).contains(&low), "seed {seed}: {low}");
            assert!((120..280).contains(&high), "seed {seed}: {high}");
        }
    }

    #[test]
    fn max_attempts_stops_retries() {
        let mut backoff = Backoff::new(BackoffConfig { max_attempts: Some(2), ..BackoffConfig::default() });
        let mut jitter = Jitter::new(1);
        assert!(backoff.can_retry());
        backoff.next_delay(&mut jitter);
        assert!(backoff.can_retry());
        backoff.next_delay(&mut jitter);
        assert!(!backoff.can_retry());
    }

    #[test]
    fn a_huge_multiplier_saturates_at_the_cap() {
        let config = BackoffConfig { multiplier: 1e300, ..BackoffConfig::default() };
        let mut backoff = Backoff::new(config);
        let mut jitter = Jitter::new(3);
        for _ in 0..100 {
            assert!(backoff.next_delay(&mut jitter) <= 30_000);
        }
    }
}
