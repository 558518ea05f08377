//! Pod names and namespaces, which the cgroup path does not carry: looked up in
//! `/var/log/pods/<namespace>_<name>_<uid>` in a live run, taken from the session in a replay.
//! Either way the pipeline asks when it meets a new pod, so both name the same pods.
use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::model::k8s::PodLogIndex;

/// Where the pipeline gets a new pod's (namespace, name).
pub trait PodNameSource {
    /// (namespace, name) of the pod with this UID, if known.
    fn lookup(&mut self, uid: &str) -> Option<(String, String)>;
    /// A name a recorded session carries (ignored by live sources).
    fn recorded(&mut self, _uid: &str, _namespace: &str, _name: &str) {}
}

/// No names (tests, benches).
pub struct NoPodNames;

impl PodNameSource for NoPodNames {
    fn lookup(&mut self, _uid: &str) -> Option<(String, String)> {
        None
    }
}

/// Lookups in a pod log directory (`/var/log/pods`, under `--host-root` in a container).
pub struct PodLogDir {
    dir: PathBuf,
    index: PodLogIndex,
    loaded: Instant,
}

/// A pod log directory is reread on a miss at most this often.
const RELOAD_AFTER: Duration = Duration::from_secs(2);

impl PodLogDir {
    pub fn new(dir: PathBuf) -> PodLogDir {
        let index = PodLogIndex::load(&dir).unwrap_or_default();
        PodLogDir {
            dir,
            index,
            loaded: Instant::now(),
        }
    }
}

impl PodNameSource for PodLogDir {
    fn lookup(&mut self, uid: &str) -> Option<(String, String)> {
        if self.index.lookup(uid).is_none() && self.loaded.elapsed() > RELOAD_AFTER {
            self.index = PodLogIndex::load(&self.dir).unwrap_or_default();
            self.loaded = Instant::now();
        }
        self.index
            .lookup(uid)
            .map(|(ns, n)| (ns.to_string(), n.to_string()))
    }
}

/// The names a session recorded. A live run records a pod's name right before the event that
/// made the pod known, so a name waits here only until that event: the map holds no more than
/// the names not yet used.
#[derive(Default)]
pub struct RecordedPodNames {
    pending: HashMap<String, (String, String)>,
}

impl PodNameSource for RecordedPodNames {
    fn lookup(&mut self, uid: &str) -> Option<(String, String)> {
        self.pending.remove(uid)
    }

    fn recorded(&mut self, uid: &str, namespace: &str, name: &str) {
        self.pending
            .insert(uid.to_string(), (namespace.to_string(), name.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_name_is_used_once() {
        let mut r = RecordedPodNames::default();
        r.recorded("u1", "ns", "web");
        assert_eq!(r.lookup("u1"), Some(("ns".into(), "web".into())));
        assert_eq!(r.lookup("u1"), None);
        assert!(r.pending.is_empty());
    }
}
