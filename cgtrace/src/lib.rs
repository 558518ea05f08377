//! cgtrace: trace the life of every cgroup on a Linux node with eBPF.
//!
//! Data flows one way: probes → ring buffer → [`event`] decoding → sinks ([`output`]).
pub mod baseline;
pub mod btf;
pub mod check;
pub mod clock;
pub mod doctor;
pub mod escape;
pub mod event;
pub mod hierarchy;
pub mod k8s;
pub mod kernel;
pub mod live;
pub mod output;
pub mod pipeline;
pub mod probes;
pub mod tracefs;
pub mod tracker;
pub mod units;
