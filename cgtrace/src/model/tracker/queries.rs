//! What the tracker answers: pods, totals, footprint, paths, the dying memcgs.

use crate::model::hash::FastMap;

use super::{
    DyingMemcg, Entry, F_CONTAINER, F_FOUND_DYING, F_FREED, F_HAS_KMEM, F_HAS_MEMSW, F_HAS_USAGE,
    F_MEMCG, F2_TRUNCATED, Footprint, Key, NO_NAME, NO_POD, PodStats, PodSummary, State, Totals,
    TrackedMemcg, Tracker,
};

impl Tracker {
    pub fn set_pod_name(&mut self, pod_uid: &str, namespace: &str, name: &str) {
        if let Some(i) = self.find_pod(pod_uid)
            && let Some(p) = self.pod_mut(i)
        {
            p.namespace = Some(namespace.to_string());
            p.name = Some(name.to_string());
        }
    }

    /// The pod in slot `i` ([`Observed::pod`], [`Observed::new_pod`]): valid for the event that
    /// named it; a forgotten pod's slot is reused by a later pod.
    pub fn pod(&self, i: u32) -> Option<&PodStats> {
        if i == NO_POD {
            return None;
        }
        self.pods.get(i).filter(|p| p.in_use).map(|p| &p.stats)
    }

    /// Pods held: those with tracked cgroups (not the one the current event forgot).
    pub fn pods_tracked(&self) -> usize {
        self.pod_index.len()
    }

    /// How much each table holds and has room for, for tests and benches: what stays after
    /// the cgroups and pods that come and go are gone.
    pub fn footprint(&self) -> Footprint {
        Footprint {
            cgroups: self.index.len(),
            cgroup_slots: self.cgroups.slots(),
            cgroup_buckets: self.index.buckets.len(),
            names: self.names.slots() - self.names.free.len(),
            name_slots: self.names.slots(),
            dirs: self.dirs.index.len(),
            dir_slots: self.dirs.slots.slots(),
            strings: self.strings.index.len(),
            string_slots: self.strings.slots.slots(),
            pods: self.pods_tracked(),
            pod_slots: self.pods.slots(),
            pod_buckets: self.pod_index.buckets.len(),
            css_joins: self.css.len(),
            css_capacity: self.css.capacity(),
            released_unnamed: self.released_unnamed.len(),
        }
    }

    /// Totals; dying includes the dying-before-start memcgs not yet freed.
    pub fn totals(&self) -> Totals {
        let mut t = self.totals.clone();
        t.dying += t.dying_before_start.saturating_sub(t.freed_before_start);
        t
    }

    /// Latest event time seen (the tracker's "now").
    pub fn now_ns(&self) -> u64 {
        self.last_ts
    }

    /// Number of cgroups held in memory (live and dying, all hierarchies).
    pub fn tracked(&self) -> usize {
        self.index.len()
    }

    /// The tracked entries.
    fn entries(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.index.iter().filter_map(|slot| self.cgroups.get(slot))
    }

    fn path_of(&self, e: &Entry) -> Vec<u8> {
        let mut p = Vec::new();
        if !self.write_path(e, &mut p) {
            p.push(b'/');
        }
        p
    }

    /// Appends the kept path of `e` to `out`; false when none is kept (not a memcg).
    fn write_path(&self, e: &Entry, out: &mut Vec<u8>) -> bool {
        match self.names.get(e.name) {
            Some(n) if e.name != NO_NAME => {
                self.dirs.write(n.dir, &self.strings, out);
                out.push(b'/');
                n.leaf.write(&self.strings, out);
                true
            }
            _ => false,
        }
    }

    /// The path of a tracked memcg written into `out` (cleared first), with whether it was
    /// cut: what its mkdir record said. None when the cgroup is not tracked or keeps no path
    /// (other hierarchies). No allocation once `out` is big enough.
    pub fn path_into(&self, key: Key, out: &mut Vec<u8>) -> Option<bool> {
        let (_, slot) = self.lookup(key)?;
        let e = self.cgroups.get(slot)?;
        out.clear();
        self.write_path(e, out)
            .then_some(e.flags2 & F2_TRUNCATED != 0)
    }

    /// The path of `leaf` below the tracked cgroup `parent_id` (the start-up walk is pre-order:
    /// parents are known — baseline, or found just before).
    pub fn child_path(&self, hierarchy_id: u32, parent_id: u64, leaf: &[u8]) -> Vec<u8> {
        let parent = self
            .lookup((hierarchy_id, parent_id))
            .and_then(|(_, slot)| self.cgroups.get(slot));
        let mut path = match parent {
            Some(p) => self.path_of(p),
            None => b"/?".to_vec(),
        };
        if path != b"/" {
            path.push(b'/');
        }
        path.extend_from_slice(leaf);
        path
    }

    /// A tracked memcg (live or dying), found by (hierarchy id, cgroup id): its path, pod and
    /// whether it is a container's.
    pub fn memcg(&self, key: Key) -> Option<TrackedMemcg> {
        let (_, slot) = self.lookup(key)?;
        let e = self.cgroups.get(slot)?;
        if e.flags & F_MEMCG == 0 {
            return None;
        }
        Some(TrackedMemcg {
            path: self.path_of(e),
            pod: (e.pod != NO_POD).then_some(e.pod),
            container: e.flags & F_CONTAINER != 0,
            state: e.state(),
        })
    }

    /// The path of a tracked cgroup.
    pub fn path(&self, key: Key) -> Option<Vec<u8>> {
        let (_, slot) = self.lookup(key)?;
        self.cgroups.get(slot).map(|e| self.path_of(e))
    }

    /// Dying memcgs seen removed during the run, oldest first.
    pub fn dying_memcgs(&self) -> Vec<DyingMemcg> {
        let mut v: Vec<DyingMemcg> = self
            .entries()
            .filter(|e| {
                e.flags & F_MEMCG != 0 && e.state() == State::Dying && e.flags & F_FREED == 0
            })
            .map(|e| DyingMemcg {
                hierarchy_id: e.hierarchy_id,
                cgroup_id: e.cgroup_id,
                path: String::from_utf8_lossy(&self.path_of(e)).into_owned(),
                pod_uid: self.pod(e.pod).map(|p| p.pod_uid.clone()),
                rmdir_ns: e.rmdir_ns,
                usage_bytes: (e.flags & F_HAS_USAGE != 0).then_some(self.page_size.bytes(e.usage)),
                kmem_bytes: (e.flags & F_HAS_KMEM != 0).then_some(self.page_size.bytes(e.kmem)),
                memsw_bytes: (e.flags & F_HAS_MEMSW != 0).then_some(self.page_size.bytes(e.memsw)),
                path_truncated: e.flags2 & F2_TRUNCATED != 0,
                before_start: e.flags & F_FOUND_DYING != 0,
            })
            .collect();
        v.sort_by_key(|d| (d.rmdir_ns, d.cgroup_id));
        v
    }

    /// The memory charged to each pod's dying memcgs when they were removed, by pod UID (pods
    /// none of whose dying memcgs had a known usage are left out). Allocates nothing per memcg.
    pub fn dying_bytes_by_pod(&self) -> std::collections::HashMap<&str, u64> {
        let mut by_pod: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
        for e in self.entries() {
            if e.pod != NO_POD
                && e.flags & F_MEMCG != 0
                && e.flags & F_HAS_USAGE != 0
                && e.state() == State::Dying
                && e.flags & F_FREED == 0
            {
                *by_pod.entry(e.pod).or_default() += self.page_size.bytes(e.usage);
            }
        }
        by_pod
            .into_iter()
            .filter_map(|(pod, b)| Some((self.pod(pod)?.pod_uid.as_str(), b)))
            .collect()
    }

    /// Pods that have dying memcgs, most first (ties by UID). Costs what is live and dying.
    pub fn dying_pods(&self) -> Vec<PodSummary> {
        self.pods_where(self.now_ns(), |p| p.dying > 0)
    }

    /// Pods with their counters and the age of their oldest dying memcg (at `now_ns`), most
    /// dying first (ties by UID): the pods with tracked cgroups (a pod all of whose cgroups
    /// were freed is forgotten; its figures stay in the totals and histograms).
    pub fn pods(&self, now_ns: u64) -> Vec<PodSummary> {
        self.pods_where(now_ns, |_| true)
    }

    fn pods_where(&self, now_ns: u64, keep: impl Fn(&PodStats) -> bool) -> Vec<PodSummary> {
        let mut v: Vec<(u32, PodSummary)> = self
            .pod_index
            .iter()
            .filter_map(|i| Some((i, self.pod(i)?)))
            .filter(|(_, p)| keep(p))
            .map(|(i, p)| {
                (
                    i,
                    PodSummary {
                        stats: p.clone(),
                        oldest_dying_age_s: None,
                    },
                )
            })
            .collect();
        if v.iter().any(|(_, p)| p.stats.dying > 0) {
            let mut oldest: FastMap<u32, u64> = FastMap::default();
            for e in self.entries() {
                if e.pod != NO_POD && e.state() == State::Dying && e.flags & F_FREED == 0 {
                    let o = oldest.entry(e.pod).or_insert(u64::MAX);
                    *o = (*o).min(e.rmdir_ns);
                }
            }
            for (i, p) in &mut v {
                p.oldest_dying_age_s = oldest
                    .get(i)
                    .map(|&t| now_ns.saturating_sub(t) as f64 / 1e9);
            }
        }
        let mut v: Vec<PodSummary> = v.into_iter().map(|(_, p)| p).collect();
        v.sort_by(|a, b| {
            b.stats
                .dying
                .cmp(&a.stats.dying)
                .then_with(|| a.stats.pod_uid.cmp(&b.stats.pod_uid))
        });
        v
    }
}
