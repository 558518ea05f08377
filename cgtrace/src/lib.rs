//! cgtrace: trace the life of every cgroup on a Linux node with eBPF.
//!
//! Data flows one way: [`probes`] → ring buffer → [`model::event`] decoding → [`model::tracker`]
//! → [`detectors`] → sinks ([`pipeline`], [`session`]). [`kernel`] holds the facts about the
//! running kernel and its cgroupfs; [`cli`] the command line; [`commands`] one file per CLI verb; [`format`] the text helpers.
pub mod cli;
pub mod commands;
pub mod detectors;
pub mod format;
pub mod kernel;
pub mod model;
pub mod pipeline;
pub mod probes;
pub mod session;

/// A mistake in what the user typed (exit code 2, like the argument parser's own errors).
#[derive(Debug)]
pub struct UsageError(pub anyhow::Error);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for UsageError {}
