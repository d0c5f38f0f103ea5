//! Per-session and per-IP limits on sessions, streams and rates.
//!
//! (Scaffolding: the session limits land here.)

use crate::Config;

/// Session and rate limits (see [`LimitFlags`]).
#[derive(Debug, Clone, Default)]
pub struct LimitConfig {}

/// Command-line flags of the session and rate limits.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LimitFlags {}

impl LimitFlags {
    pub fn apply(&self, _config: &mut Config) -> Result<(), String> {
        Ok(())
    }
}
