//! The tracker: the state of every cgroup (live → dying → freed) and of every pod.
//!
//! Cgroups are keyed by (hierarchy id, cgroup id): ids are per hierarchy, and a runtime makes the
//! same path in a dozen v1 hierarchies. css events are joined by css pointer. What "dying" counts
//! lives on the hierarchy that holds the memory controller. The tracker uses event time only,
//! never the wall clock, so a replay gives exactly the live result.
//!
//! Memory stays bounded by what exists, not by what existed (tens of thousands of dying memcgs
//! are held at once, millions of pods come and go): a freed cgroup leaves only its contribution
//! to the counters and the lifetimes handed back to the caller (for histograms), and a pod is
//! forgotten with its last tracked cgroup (a pod that comes back is a new entry). Cgroups and
//! pods live in chunked slabs (no doubling spike, freed slots reused) found through compact
//! indexes of slot numbers. Only memcgs keep a path: an interned parent directory plus the leaf
//! name, both packed (the container id or pod UID they carry as bytes, what surrounds it
//! interned once for all); directories and strings are reference-counted and go with their last
//! user.
use std::hash::{BuildHasherDefault, Hasher};

use crate::model::hash::{FastHasher, FastMap};

use serde::Serialize;

use crate::{model::baseline::Baseline, model::k8s};

/// (hierarchy id, cgroup id).
pub type Key = (u32, u64);

/// Lifecycle state of a tracked cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Live,
    Dying,
}

const F_BASELINE: u8 = 1;
const F_MEMCG: u8 = 2;
const F_HAS_USAGE: u8 = 4;
const F_HAS_KMEM: u8 = 8;
const F_HAS_MEMSW: u8 = 16;
const F_FREED: u8 = 32;
const F_CONTAINER: u8 = 64;
/// Found dying by the start-up walk.
const F_FOUND_DYING: u8 = 128;
const NO_POD: u32 = u32::MAX;
/// `Entry::name` of cgroups whose path is not kept (not on the memory hierarchy).
const NO_NAME: u32 = u32::MAX;
/// The id of the empty string in [`Strings`] (it is not stored).
const NO_STR: u32 = u32::MAX;

const F2_TRUNCATED: u8 = 1;

mod events;
mod names;
mod queries;
mod store;
mod types;

pub use types::{DyingMemcg, Footprint, Observed, PodStats, PodSummary, Totals, TrackedMemcg};

use names::{Dir, DirPod, Dirs, Packed, Strings, hash_bytes, shape};
use store::{IdTable, Slab};

fn split_path(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&c| c == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

/// The path of a memcg: its parent directory (in [`Dirs`]) and its leaf name.
#[derive(Clone, Copy, Debug, Default)]
struct Name {
    dir: u32,
    leaf: Packed,
}

/// One tracked cgroup. Kept small (64 bytes; memcgs add a 44-byte [`Name`]): tens of thousands
/// of dying memcgs stay in memory.
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    cgroup_id: u64,
    mkdir_ns: u64,
    rmdir_ns: u64,
    css: u64,
    hierarchy_id: u32,
    /// Figures at rmdir/offline, in pages (saturating).
    usage: u32,
    kmem: u32,
    memsw: u32,
    /// The path, memcgs only: a slot of `Tracker::names`, or [`NO_NAME`].
    name: u32,
    pod: u32,
    memcg_id: u16,
    flags: u8,
    flags2: u8,
}

/// The hash of a cgroup key for [`IdTable`] (which uses the low 32 bits): one multiply,
/// keeping the well-mixed high half of the product (every event computes one).
fn key_hash(key: Key) -> u64 {
    let x = key.1 ^ u64::from(key.0).rotate_right(16);
    x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32
}

fn pod_hash(uid: u128) -> u64 {
    let mut h = FastHasher::default();
    h.write_u64(uid as u64);
    h.write_u64((uid >> 64) as u64);
    h.finish()
}

/// The page size figures are kept in: that of the kernel the events come from (the run facts'),
/// so a replay keeps the recording's figures whatever page size the replaying machine has.
#[derive(Clone, Copy, Debug)]
pub(super) struct PageSize(u64);

impl PageSize {
    /// `bytes` in whole pages (saturating).
    pub(super) fn pages(self, bytes: u64) -> u32 {
        (bytes / self.0).min(u32::MAX as u64) as u32
    }

    /// `pages` in bytes.
    pub(super) fn bytes(self, pages: u32) -> u64 {
        u64::from(pages).saturating_mul(self.0)
    }
}

/// The few fields of an entry the counters need.
#[derive(Clone, Copy)]
struct Brief {
    mkdir_ns: u64,
    rmdir_ns: u64,
    flags: u8,
    pod: u32,
}

impl Entry {
    fn key(&self) -> Key {
        (self.hierarchy_id, self.cgroup_id)
    }

    fn brief(&self) -> Brief {
        Brief {
            mkdir_ns: self.mkdir_ns,
            rmdir_ns: self.rmdir_ns,
            flags: self.flags,
            pod: self.pod,
        }
    }

    fn state(&self) -> State {
        if self.rmdir_ns == 0 {
            State::Live
        } else {
            State::Dying
        }
    }
}
/// One pod: its counters, its UID as a number (see [`k8s::uid_key`]) and how many tracked
/// cgroups are attributed to it (it is forgotten when the last one goes).
#[derive(Clone, Debug, Default)]
struct Pod {
    stats: PodStats,
    key: u128,
    refs: u32,
    in_use: bool,
}

/// The tracker. Feed it every event in order with [`Tracker::observe`].
pub struct Tracker {
    memory_hierarchy: Option<u32>,
    /// Every tracked cgroup, found by key through `index`.
    cgroups: Slab<Entry>,
    index: IdTable,
    css: FastMap<u64, Key>,
    /// Keep css → cgroup joins (only the fentry/kprobe tiers send css events).
    join_css: bool,
    /// The page size of the kernel the events come from.
    page_size: PageSize,
    /// The paths of memcgs.
    names: Slab<Name>,
    dirs: Dirs,
    strings: Strings,
    /// The pods with tracked cgroups, found by UID through `pod_index`.
    pods: Slab<Pod>,
    pod_index: IdTable,
    /// The pod the current event forgot: out of the index at once, its slot (and what
    /// [`Tracker::pod`] says of it) kept until the next event, so that the sinks and detectors
    /// of this event still see it.
    retired: Option<u32>,
    totals: Totals,
    last_ts: u64,
    /// Memcgs released before the start-up walk named them: the walk runs beside the events,
    /// so its record of a memcg can come after the memcg's release, and is then to be dropped.
    /// Unknown ones (at most `dying_before_start`) and, while the walk runs, the memcgs that
    /// existed at start (below `first_made_id`); emptied when the walk ends.
    released_unnamed: std::collections::HashSet<Key, BuildHasherDefault<FastHasher>>,
    /// The lowest cgroup ID of a memcg whose mkdir was seen. A cgroup's ID (its kernfs node's)
    /// only grows within a hierarchy (`idr_alloc_cyclic` in `kernfs_new_node()`), so a memcg at
    /// or above it was made after start: a walk record of it is stale (`u64::MAX`: none yet).
    first_made_id: u64,
    /// The start-up walk ended: its records are over.
    walk_ended: bool,
}

impl Tracker {
    /// `memory_hierarchy`: the hierarchy id holding the memory controller (None: no memcgs).
    pub fn new(memory_hierarchy: Option<u32>) -> Tracker {
        Tracker {
            memory_hierarchy,
            cgroups: Slab::default(),
            index: IdTable::default(),
            css: FastMap::default(),
            join_css: true,
            page_size: PageSize(crate::kernel::page_size().max(1)),
            names: Slab::default(),
            dirs: Dirs::default(),
            strings: Strings::default(),
            pods: Slab::default(),
            pod_index: IdTable::default(),
            retired: None,
            totals: Totals::default(),
            last_ts: 0,
            released_unnamed: Default::default(),
            first_made_id: u64::MAX,
            walk_ended: false,
        }
    }

    /// Whether css events will come (fentry/kprobe tiers): without them the css → cgroup
    /// table is not kept, which saves memory per tracked memcg.
    pub fn set_css_joins(&mut self, on: bool) {
        self.join_css = on;
        if !on {
            self.css = FastMap::default();
        }
    }

    /// The page size of the kernel the events come from (the running system's unless set):
    /// the tracker keeps figures in pages of this size.
    pub fn set_page_size(&mut self, bytes: u64) {
        self.page_size = PageSize(bytes.max(1));
    }

    pub fn memory_hierarchy(&self) -> Option<u32> {
        self.memory_hierarchy
    }

    /// Starts from what existed before: every cgroup live, the kernel's dying count.
    pub fn load_baseline(&mut self, b: &Baseline) {
        for c in &b.cgroups {
            let key = (c.hierarchy_id, c.cgroup_id);
            let (mut entry, _) = self.new_entry(key, &c.path, 0, false);
            entry.flags |= F_BASELINE;
            if entry.flags & F_MEMCG != 0 {
                self.totals.live += 1;
                if let Some(p) = self.pod_mut(entry.pod) {
                    p.live += 1;
                }
            }
            if let Some(old) = self.put(entry) {
                self.forget(old);
            }
            self.free_retired();
        }
        self.totals.dying_before_start = b
            .dying_before_start
            .iter()
            .filter(|(h, _)| Some(*h) == self.memory_hierarchy)
            .map(|(_, n)| n)
            .sum();
        self.last_ts = b.taken_at_ns;
    }

    /// The bucket of `key` in the index and its slot in the slab.
    fn lookup(&self, key: Key) -> Option<(usize, u32)> {
        self.lookup_hashed(key, key_hash(key))
    }

    fn lookup_hashed(&self, key: Key, hash: u64) -> Option<(usize, u32)> {
        let cgroups = &self.cgroups;
        let pos = self.index.find(hash, |slot| {
            cgroups.get(slot).is_some_and(|e| e.key() == key)
        })?;
        Some((pos, self.index.id_at(pos)))
    }

    /// Adds an entry whose key (of hash `hash`) is not tracked yet; returns its slot.
    fn insert_hashed(&mut self, e: Entry, hash: u64) -> u32 {
        let slot = self.cgroups.insert(e);
        self.index.insert(hash, slot);
        slot
    }

    fn insert(&mut self, e: Entry) -> u32 {
        self.insert_hashed(e, key_hash(e.key()))
    }

    /// Adds or replaces the entry of `e`'s key; returns the replaced one.
    fn put(&mut self, e: Entry) -> Option<Entry> {
        let hash = key_hash(e.key());
        match self.lookup_hashed(e.key(), hash) {
            Some((_, slot)) => self
                .cgroups
                .get_mut(slot)
                .map(|old| std::mem::replace(old, e)),
            None => {
                self.insert_hashed(e, hash);
                None
            }
        }
    }

    /// Removes the entry found at (`pos`, `slot`) by [`Tracker::lookup`].
    fn remove(&mut self, pos: usize, slot: u32) -> Option<Entry> {
        self.index.remove_at(pos);
        self.cgroups.remove(slot)
    }

    /// The pod of a path's match, made if new: (its slot, whether it is new). The caller takes
    /// the reference (an entry attributed to it).
    fn pod_index(&mut self, p: Option<&k8s::PodMatch<'_>>) -> (u32, bool) {
        let Some((p, (uid, dashed))) = p.and_then(|p| Some((p, k8s::uid_key(p.uid)?))) else {
            return (NO_POD, false);
        };
        if let Some(i) = self.find_pod_key(uid, dashed) {
            return (i, false);
        }
        let i = self.pods.insert(Pod {
            stats: PodStats {
                pod_uid: k8s::uid_string(p.uid),
                qos: Some(p.qos),
                ..PodStats::default()
            },
            key: uid,
            refs: 0,
            in_use: true,
        });
        self.pod_index.insert(pod_hash(uid), i);
        (i, true)
    }

    /// The slot of the pod of this UID value and form (36 characters with dashes, or not).
    fn find_pod_key(&self, uid: u128, dashed: bool) -> Option<u32> {
        let pods = &self.pods;
        let pos = self.pod_index.find(pod_hash(uid), |i| {
            pods.get(i)
                .is_some_and(|p| p.key == uid && (p.stats.pod_uid.len() == 36) == dashed)
        })?;
        Some(self.pod_index.id_at(pos))
    }

    /// The pod of a canonical-or-not UID string.
    fn find_pod(&self, pod_uid: &str) -> Option<u32> {
        let (uid, dashed) = k8s::uid_key(pod_uid.as_bytes())?;
        self.find_pod_key(uid, dashed)
    }

    /// The counters of the pod in `slot` (None for [`NO_POD`] and free slots).
    fn pod_mut(&mut self, slot: u32) -> Option<&mut PodStats> {
        if slot == NO_POD {
            return None;
        }
        self.pods
            .get_mut(slot)
            .filter(|p| p.in_use)
            .map(|p| &mut p.stats)
    }

    /// One more tracked cgroup of the pod in `slot`.
    fn pod_ref(&mut self, slot: u32) {
        if slot != NO_POD
            && let Some(p) = self.pods.get_mut(slot)
        {
            p.refs += 1;
        }
    }

    /// One tracked cgroup of the pod in `slot` less: with the last one the pod is forgotten
    /// (out of the index now, its slot freed at the next event: see `retired`).
    fn pod_unref(&mut self, slot: u32) {
        if slot == NO_POD {
            return;
        }
        let Some(p) = self.pods.get_mut(slot) else {
            return;
        };
        p.refs = p.refs.saturating_sub(1);
        if p.refs > 0 || !p.in_use {
            return;
        }
        let hash = pod_hash(p.key);
        if let Some(pos) = self.pod_index.find(hash, |i| i == slot) {
            self.pod_index.remove_at(pos);
        }
        // At most one pod is forgotten per event (one entry is forgotten per event); should a
        // second come, the first is freed now.
        self.free_retired();
        self.retired = Some(slot);
    }

    /// Frees the slot of the pod the previous event forgot.
    fn free_retired(&mut self) {
        if let Some(slot) = self.retired.take() {
            self.pods.remove(slot);
        }
    }

    /// Takes a reference on the directory `dir`, interning it (and what it says of pods) if
    /// new: (its id, its pod, whether the pod is new).
    fn intern_dir(&mut self, dir: &[u8]) -> (u32, DirPod, bool) {
        let hash = hash_bytes(dir);
        if let Some((id, pod)) = self.dirs.find(dir, hash, &self.strings) {
            return (id, pod, false);
        }
        let m = k8s::match_path(dir);
        let (pod, new_pod) = self.pod_index(m.as_ref());
        let dir_pod = match m {
            Some(m) if m.last => DirPod::Pod(pod),
            Some(m) => DirPod::Below(pod, m.container.is_some()),
            None => DirPod::None,
        };
        let id = self.dirs.insert(dir, hash, dir_pod, &mut self.strings);
        (id, dir_pod, new_pod)
    }

    fn new_entry(
        &mut self,
        key: Key,
        path: &[u8],
        ts: u64,
        truncated: bool,
    ) -> (Entry, Option<u32>) {
        let memcg = Some(key.0) == self.memory_hierarchy;
        // Pods are attributed on the memory hierarchy only: parse nothing elsewhere.
        // Paths are kept for memcgs (reports name them); other hierarchies only need times. An
        // empty path is an unknown one (a rmdir without its path of a cgroup whose mkdir was not
        // seen): no name, so `path_into` says it is not known.
        let (pod, new_pod, container, name) = if memcg && !path.is_empty() {
            let (dir, leaf) = split_path(path);
            let (dir, dir_pod, mut new_pod) = self.intern_dir(dir);
            let (pod, container) = match dir_pod {
                DirPod::Pod(pod) => (pod, k8s::is_container(leaf)),
                DirPod::Below(pod, container) => (pod, container),
                DirPod::None => {
                    let pod_ref = k8s::match_path(path);
                    let (pod, new) = self.pod_index(pod_ref.as_ref());
                    new_pod |= new;
                    (pod, pod_ref.is_some_and(|p| p.container.is_some()))
                }
            };
            let sh = shape(leaf);
            let leaf = sh.packed(self.strings.intern(sh.prefix, sh.suffix));
            let name = self.names.insert(Name { dir, leaf });
            self.pod_ref(pod);
            (pod, new_pod, container, name)
        } else {
            (NO_POD, false, false, NO_NAME)
        };
        (
            Entry {
                cgroup_id: key.1,
                hierarchy_id: key.0,
                name,
                pod,
                mkdir_ns: ts,
                rmdir_ns: 0,
                usage: 0,
                kmem: 0,
                memsw: 0,
                css: 0,
                memcg_id: 0,
                flags: if memcg { F_MEMCG } else { 0 } | if container { F_CONTAINER } else { 0 },
                flags2: if truncated { F2_TRUNCATED } else { 0 },
            },
            new_pod.then_some(pod),
        )
    }

    /// Takes a replaced entry out of the live and dying counts (a mkdir of a cgroup the start-up
    /// walk named before the mkdir's record came).
    fn uncount(&mut self, old: &Entry) {
        if old.flags & (F_MEMCG | F_FREED) != F_MEMCG {
            return;
        }
        let dying = old.rmdir_ns != 0;
        if old.flags & F_FOUND_DYING == 0 {
            let total = if dying {
                &mut self.totals.dying
            } else {
                &mut self.totals.live
            };
            *total = total.saturating_sub(1);
        }
        if let Some(p) = self.pod_mut(old.pod) {
            let n = if dying { &mut p.dying } else { &mut p.live };
            *n = n.saturating_sub(1);
        }
    }

    /// Releases what a removed (or replaced) entry held: its name, its css join, its reference
    /// on its pod (the last one forgets the pod).
    fn forget(&mut self, e: Entry) {
        if e.name != NO_NAME
            && let Some(n) = self.names.remove(e.name)
        {
            self.strings.release(n.leaf.affix);
            self.dirs.release(n.dir, &mut self.strings);
        }
        if e.css != 0 {
            self.css.remove(&e.css);
        }
        self.pod_unref(e.pod);
    }
}

const _: () = assert!(size_of::<Entry>() == 64);
const _: () = assert!(size_of::<Name>() == 44);
const _: () = assert!(size_of::<Dir>() == 64);

#[cfg(test)]
pub(crate) mod tests;
