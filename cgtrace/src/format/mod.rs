//! Text helpers for every output: escaping, hex digits, units, the clock.
pub mod clock;
pub(crate) mod escape;
pub(crate) mod hex;
pub(crate) mod units;
