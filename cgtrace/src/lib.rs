//! cgtrace: trace the life of every cgroup on a Linux node with eBPF.
//!
//! Data flows one way: probes → ring buffer → [`event`] decoding → sinks ([`output`]).
pub mod baseline;
pub mod btf;
pub mod check;
pub mod clock;
pub mod detectors;
pub mod doctor;
pub mod escape;
pub mod event;
pub mod hierarchy;
pub mod histogram;
pub mod k8s;
pub mod kernel;
pub mod live;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod probes;
pub mod record;
pub mod replay;
pub mod session;
pub mod tracefs;
pub mod tracker;
pub mod units;

/// A mistake in what the user typed (exit code 2, like the argument parser's own errors).
#[derive(Debug)]
pub struct UsageError(pub anyhow::Error);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for UsageError {}
