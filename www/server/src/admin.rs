//! The admin surface: `GET /metrics`, `GET /realtime/stats` and `POST /realtime/kick`.
//!
//! (Scaffolding: the admin token lands here.)

use crate::Config;

/// Admin settings (see [`AdminFlags`]).
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {}

/// Command-line flags of the admin surface.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AdminFlags {}

impl AdminFlags {
    pub fn apply(&self, _config: &mut Config) -> Result<(), String> {
        Ok(())
    }
}
