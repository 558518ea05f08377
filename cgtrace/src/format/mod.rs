//! Text helpers for every output: escaping, units, the clock.
pub mod clock;
pub(crate) mod escape;
pub(crate) mod units;
