//! The model: decoded events, the start-up baseline, the tracker of cgroups and pods, and the
//! Kubernetes attribution of cgroup paths.
pub mod baseline;
pub mod event;
pub(crate) mod hash;
pub(crate) mod k8s;
pub mod oom;
pub mod tracker;
