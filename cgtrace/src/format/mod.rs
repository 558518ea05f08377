//! Text helpers for every output: escaping, units, the clock.
pub mod clock;
pub mod escape;
pub mod units;
