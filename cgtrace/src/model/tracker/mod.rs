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

use cgtrace_common::EventKind;
use serde::Serialize;

use crate::{model::baseline::Baseline, model::event::Event, model::k8s};

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

mod names;
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

fn to_pages(bytes: u64) -> u32 {
    (bytes / crate::kernel::page_size()).min(u32::MAX as u64) as u32
}

fn from_pages(pages: u32) -> u64 {
    u64::from(pages) * crate::kernel::page_size()
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
    /// Memcgs released before the start-up walk named them (at most `dying_before_start`):
    /// the walk runs beside the events, so its record of a memcg can come after the memcg's
    /// release, and is then to be dropped.
    released_unnamed: std::collections::HashSet<Key, BuildHasherDefault<FastHasher>>,
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
            names: Slab::default(),
            dirs: Dirs::default(),
            strings: Strings::default(),
            pods: Slab::default(),
            pod_index: IdTable::default(),
            retired: None,
            totals: Totals::default(),
            last_ts: 0,
            released_unnamed: Default::default(),
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
        // Paths are kept for memcgs (reports name them); other hierarchies only need times.
        let (pod, new_pod, container, name) = if memcg {
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

    fn capture(e: &mut Entry, ev: &Event<'_>) {
        if let Some(u) = ev.usage_bytes {
            e.usage = to_pages(u);
            e.flags |= F_HAS_USAGE;
        }
        if let Some(k) = ev.kmem_bytes {
            e.kmem = to_pages(k);
            e.flags |= F_HAS_KMEM;
        }
        if let Some(m) = ev.memsw_bytes {
            e.memsw = to_pages(m);
            e.flags |= F_HAS_MEMSW;
        }
        if let Some(id) = ev.memcg_id {
            e.memcg_id = id.min(u16::MAX as u32) as u16;
        }
    }

    /// The cgroup of a css event: its own fields, or (before online) the css join.
    fn css_key(&self, ev: &Event<'_>) -> Option<Key> {
        if ev.has_cgroup {
            Some((ev.hierarchy_id, ev.cgroup_id))
        } else {
            self.css.get(&ev.css).copied()
        }
    }

    /// Applies one event.
    pub fn observe(&mut self, ev: &Event<'_>) -> Observed {
        self.free_retired();
        self.last_ts = self.last_ts.max(ev.ts_ns);
        let mut out = Observed::default();
        match ev.kind {
            EventKind::Mkdir => self.mkdir(ev, &mut out),
            EventKind::CssOnline => self.css_online(ev),
            EventKind::Rmdir => self.rmdir(ev, &mut out),
            EventKind::CssOffline => {
                if let Some((_, slot)) = self.css_key(ev).and_then(|k| self.lookup(k))
                    && let Some(e) = self.cgroups.get_mut(slot)
                {
                    Self::capture(e, ev);
                }
            }
            // The memcg itself is freed (css tiers); the cgroup's release follows.
            EventKind::CssFree => {
                if let Some((_, slot)) = self.css_key(ev).and_then(|k| self.lookup(k)) {
                    self.freed(slot, ev.ts_ns, &mut out);
                }
            }
            EventKind::Release => self.release(ev, &mut out),
            EventKind::DyingAtStart => self.dying_at_start(ev, &mut out),
            // The victim's memcg: its pod (a dying memcg is still tracked), nothing changes.
            EventKind::OomKill => {
                if let Some((_, slot)) = self.lookup((ev.hierarchy_id, ev.cgroup_id))
                    && let Some(e) = self.cgroups.get(slot)
                {
                    let e = e.brief();
                    self.fill(&mut out, e);
                }
            }
            EventKind::CssAlloc | EventKind::CssReleased | EventKind::MkdirFailed => {}
        }
        out.forgotten_pod = self.retired;
        out
    }

    /// A cgroup was made: tracked from now, counted live.
    fn mkdir(&mut self, ev: &Event<'_>, out: &mut Observed) {
        let key = (ev.hierarchy_id, ev.cgroup_id);
        let (mut e, new_pod) = self.new_entry(key, ev.path, ev.ts_ns, ev.path_truncated);
        Self::capture(&mut e, ev);
        if ev.css != 0 {
            e.css = ev.css;
            if self.join_css {
                self.css.insert(ev.css, key);
            }
        }
        out.new_pod = new_pod;
        self.fill(out, e.brief());
        if e.flags & F_MEMCG != 0 {
            self.totals.live += 1;
            let container = out.container;
            if let Some(p) = self.pod_mut(e.pod) {
                p.live += 1;
                if container {
                    p.containers_created += 1;
                }
            }
        }
        if let Some(old) = self.put(e) {
            self.forget(old);
        }
    }

    /// A css went online: join it to its cgroup if tracked (a new cgroup's mkdir, which comes
    /// after, carries its css; an untracked one's join would never be dropped).
    fn css_online(&mut self, ev: &Event<'_>) {
        if let (Some(key), true) = (self.css_key(ev), ev.css != 0)
            && let Some((_, slot)) = self.lookup(key)
            && let Some(e) = self.cgroups.get_mut(slot)
        {
            if e.css != 0 && e.css != ev.css {
                self.css.remove(&e.css);
            }
            e.css = ev.css;
            if self.join_css {
                self.css.insert(ev.css, key);
            }
        }
    }

    /// A cgroup was removed: live → dying (once), with its figures at removal.
    fn rmdir(&mut self, ev: &Event<'_>, out: &mut Observed) {
        let key = (ev.hierarchy_id, ev.cgroup_id);
        let slot = match self.lookup(key) {
            Some((_, slot)) => slot,
            None => {
                // Made before start and missed by the baseline walk: track it from here.
                let (e, new_pod) = self.new_entry(key, ev.path, 0, ev.path_truncated);
                out.new_pod = new_pod;
                if e.flags & F_MEMCG != 0 {
                    self.totals.live += 1;
                    if let Some(p) = self.pod_mut(e.pod) {
                        p.live += 1;
                    }
                }
                self.insert(e)
            }
        };
        let Some(e) = self.cgroups.get_mut(slot) else {
            return;
        };
        if e.rmdir_ns != 0 {
            return; // duplicate
        }
        e.rmdir_ns = ev.ts_ns.max(1);
        Self::capture(e, ev);
        if ev.css != 0 && e.css == 0 {
            e.css = ev.css;
            if self.join_css {
                self.css.insert(ev.css, key);
            }
        }
        let e = e.brief();
        if e.mkdir_ns != 0 {
            out.live_ns = Some(ev.ts_ns.saturating_sub(e.mkdir_ns));
        }
        self.fill(out, e);
        if e.flags & F_MEMCG != 0 {
            self.totals.live = self.totals.live.saturating_sub(1);
            self.totals.dying += 1;
            if let Some(p) = self.pod_mut(e.pod) {
                p.live = p.live.saturating_sub(1);
                p.dying += 1;
            }
        }
    }

    /// A cgroup was released: freed and forgotten; an unknown one may be a memcg dying since
    /// before start.
    fn release(&mut self, ev: &Event<'_>, out: &mut Observed) {
        let key = (ev.hierarchy_id, ev.cgroup_id);
        match self.lookup(key) {
            Some((pos, slot)) => {
                self.freed(slot, ev.ts_ns, out);
                if let Some(e) = self.remove(pos, slot) {
                    self.forget(e);
                }
            }
            None => {
                // Not known: removed before start (dying before start) or unknown.
                if Some(ev.hierarchy_id) == self.memory_hierarchy {
                    out.memcg = true;
                    out.qos = k8s::match_path(ev.path).map(|p| p.qos);
                    if self.totals.freed_before_start < self.totals.dying_before_start {
                        self.totals.freed_before_start += 1;
                        out.freed_before_start = true;
                        self.released_unnamed.insert(key);
                    }
                }
            }
        }
    }

    /// A memcg the start-up walk found dying: named now, counted in `dying_before_start`.
    fn dying_at_start(&mut self, ev: &Event<'_>, out: &mut Observed) {
        let key = (ev.hierarchy_id, ev.cgroup_id);
        if self.lookup(key).is_some() || self.released_unnamed.remove(&key) {
            return;
        }
        let path = self.child_path(ev.hierarchy_id, ev.css, ev.path);
        let (mut e, new_pod) = self.new_entry(key, &path, 0, ev.path_truncated);
        e.rmdir_ns = ev.ts_ns.max(1);
        e.flags |= F_BASELINE | F_FOUND_DYING;
        Self::capture(&mut e, ev);
        out.new_pod = new_pod;
        self.fill(out, e.brief());
        if e.flags & F_MEMCG != 0
            && let Some(p) = self.pod_mut(e.pod)
        {
            p.dying += 1;
        }
        self.insert(e);
    }

    fn fill(&self, out: &mut Observed, e: Brief) {
        out.memcg = e.flags & F_MEMCG != 0;
        if let Some(p) = self.pod(e.pod) {
            out.pod = Some(e.pod);
            out.qos = p.qos;
            out.container = e.flags & F_CONTAINER != 0;
        }
    }

    /// Marks the memcg in `slot` freed (once), counting the dying time.
    fn freed(&mut self, slot: u32, ts: u64, out: &mut Observed) {
        let Some(e) = self.cgroups.get_mut(slot) else {
            return;
        };
        if e.flags & F_FREED != 0 {
            return;
        }
        e.flags |= F_FREED;
        let e = e.brief();
        self.fill(out, e);
        if e.rmdir_ns != 0 {
            out.dying_ns = Some(ts.saturating_sub(e.rmdir_ns));
        }
        if e.flags & F_MEMCG == 0 {
            return;
        }
        if e.flags & F_FOUND_DYING != 0 {
            // Found dying by the start-up walk: one of the dying-before-start memcgs.
            out.dying_ns = None;
            out.freed_before_start = true;
            if self.totals.freed_before_start < self.totals.dying_before_start {
                self.totals.freed_before_start += 1;
            }
            if let Some(p) = self.pod_mut(e.pod) {
                p.dying = p.dying.saturating_sub(1);
                p.freed += 1;
            }
            return;
        }
        if e.rmdir_ns != 0 {
            self.totals.dying = self.totals.dying.saturating_sub(1);
            if let Some(p) = self.pod_mut(e.pod) {
                p.dying = p.dying.saturating_sub(1);
                p.freed += 1;
            }
        } else {
            // Freed without an rmdir we saw (e.g. removed while we were not looking).
            self.totals.live = self.totals.live.saturating_sub(1);
            if let Some(p) = self.pod_mut(e.pod) {
                p.live = p.live.saturating_sub(1);
                p.freed += 1;
            }
        }
        self.totals.freed += 1;
    }

    /// Records a pod's name and namespace (from `/var/log/pods`, or a session).
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
        match self.names.get(e.name) {
            Some(n) if e.name != NO_NAME => {
                self.dirs.write(n.dir, &self.strings, &mut p);
                p.push(b'/');
                n.leaf.write(&self.strings, &mut p);
            }
            _ => p.push(b'/'),
        }
        p
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
                usage_bytes: (e.flags & F_HAS_USAGE != 0).then_some(from_pages(e.usage)),
                kmem_bytes: (e.flags & F_HAS_KMEM != 0).then_some(from_pages(e.kmem)),
                memsw_bytes: (e.flags & F_HAS_MEMSW != 0).then_some(from_pages(e.memsw)),
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
                *by_pod.entry(e.pod).or_default() += from_pages(e.usage);
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

const _: () = assert!(size_of::<Entry>() == 64);
const _: () = assert!(size_of::<Name>() == 44);
const _: () = assert!(size_of::<Dir>() == 64);

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::tracker::names::K_HEX;

    #[test]
    fn container_id_leaves_are_packed_and_restored() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let sh = shape(id.as_bytes());
        assert!(sh.kind == K_HEX && sh.len == 64 && sh.prefix.is_empty() && sh.suffix.is_empty());
        let sh = shape(b"Upper0123456789abcdef0123456789abcdef");
        assert!(sh.kind == K_HEX && sh.prefix == b"Upper" && sh.len == 32);
        let mut t = Tracker::new(Some(1));
        let p = format!("/kubepods/pod{UID}/{id}");
        t.observe(&ev(EventKind::Mkdir, 1, 1, 9, p.as_bytes()));
        t.observe(&ev(EventKind::Rmdir, 2, 1, 9, p.as_bytes()));
        assert_eq!(t.dying_memcgs()[0].path, p);
    }

    use crate::model::baseline::BaselineCgroup;

    pub(crate) const UID: &str = "0a1b2c3d-0000-4000-8000-00000000abcd";

    pub(crate) fn ev<'a>(kind: EventKind, ts: u64, h: u32, id: u64, path: &'a [u8]) -> Event<'a> {
        Event {
            ts_ns: ts,
            kind,
            hierarchy_id: h,
            cgroup_id: id,
            level: path.iter().filter(|&&c| c == b'/').count() as u32,
            pid: 1,
            tid: 1,
            comm: b"runc",
            path,
            path_truncated: false,
            has_cgroup: true,
            css: 0,
            memcg_id: None,
            usage_bytes: None,
            kmem_bytes: None,
            memsw_bytes: None,
            errno: None,
            errno_inferred: false,
            syscall_relative: false,
            oom: None,
        }
    }

    #[test]
    fn lifecycle_per_pod() {
        let mut t = Tracker::new(Some(4));
        let pod = format!("/kubepods/burstable/pod{UID}");
        let ctr = format!("{pod}/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
        let o = t.observe(&ev(EventKind::Mkdir, 10, 4, 100, pod.as_bytes()));
        assert!(o.memcg && o.new_pod.is_some());
        let o = t.observe(&ev(EventKind::Mkdir, 20, 4, 101, ctr.as_bytes()));
        assert!(o.container && o.new_pod.is_none());
        // The same path in another hierarchy is a different cgroup and no memcg.
        let o = t.observe(&ev(EventKind::Mkdir, 21, 2, 101, ctr.as_bytes()));
        assert!(!o.memcg);
        assert_eq!(t.totals().live, 2);
        let mut rm = ev(EventKind::Rmdir, 50, 4, 101, ctr.as_bytes());
        rm.usage_bytes = Some(8192);
        let o = t.observe(&rm);
        assert_eq!(o.live_ns, Some(30));
        assert_eq!((t.totals().live, t.totals().dying), (1, 1));
        let dying = t.dying_memcgs();
        assert_eq!(dying.len(), 1);
        assert_eq!(dying[0].path, ctr);
        assert_eq!(dying[0].usage_bytes, Some(8192));
        assert_eq!(dying[0].pod_uid.as_deref(), Some(UID));
        let pods = t.pods(1_000_000_050);
        assert_eq!(pods[0].stats.dying, 1);
        assert_eq!(pods[0].stats.containers_created, 1);
        assert_eq!(pods[0].oldest_dying_age_s, Some(1.0));
        let o = t.observe(&ev(EventKind::Release, 90, 4, 101, ctr.as_bytes()));
        assert_eq!(o.dying_ns, Some(40));
        assert_eq!(
            (t.totals().live, t.totals().dying, t.totals().freed),
            (1, 0, 1)
        );
        assert_eq!(t.pods(100)[0].stats.freed, 1);
        // Freed cgroups leave nothing behind but counters.
        t.observe(&ev(EventKind::Release, 91, 2, 101, ctr.as_bytes()));
        assert_eq!(t.tracked(), 1);
    }

    #[test]
    fn css_events_join_by_pointer_and_free_counts_once() {
        let mut t = Tracker::new(Some(0));
        let mut alloc = ev(EventKind::CssAlloc, 1, 0, 0, b"");
        alloc.has_cgroup = false;
        alloc.css = 0xffff_8880_0000_1000;
        t.observe(&alloc);
        let mut online = ev(EventKind::CssOnline, 2, 0, 7, b"");
        online.css = alloc.css;
        t.observe(&online);
        let mut mk = ev(EventKind::Mkdir, 3, 0, 7, b"/a");
        mk.css = alloc.css;
        t.observe(&mk);
        t.observe(&ev(EventKind::Rmdir, 4, 0, 7, b"/a"));
        let mut off = ev(EventKind::CssOffline, 5, 0, 7, b"");
        off.css = alloc.css;
        off.usage_bytes = Some(4096);
        t.observe(&off);
        assert_eq!(t.dying_memcgs()[0].usage_bytes, Some(4096));
        let mut free = ev(EventKind::CssFree, 9, 0, 0, b"");
        free.has_cgroup = false;
        free.css = alloc.css;
        let o = t.observe(&free);
        assert_eq!(o.dying_ns, Some(5));
        assert_eq!(t.totals().freed, 1);
        let o = t.observe(&ev(EventKind::Release, 10, 0, 7, b"/a"));
        assert_eq!(o.dying_ns, None, "freed once, at css_free");
        assert_eq!(t.totals().freed, 1);
        assert_eq!(t.tracked(), 0);
    }

    #[test]
    fn baseline_and_dying_before_start() {
        let mut t = Tracker::new(Some(4));
        t.load_baseline(&Baseline {
            cgroups: vec![
                BaselineCgroup {
                    hierarchy_id: 4,
                    cgroup_id: 1,
                    level: 0,
                    path: b"/".to_vec(),
                },
                BaselineCgroup {
                    hierarchy_id: 4,
                    cgroup_id: 5,
                    level: 1,
                    path: b"/x".to_vec(),
                },
            ],
            dying_before_start: vec![(4, 3)],
            taken_at_ns: 5,
        });
        assert_eq!(
            t.totals(),
            Totals {
                live: 2,
                dying: 3,
                freed: 0,
                dying_before_start: 3,
                freed_before_start: 0
            }
        );
        // A release of a cgroup we never saw: one of the dying-before-start ones.
        let o = t.observe(&ev(EventKind::Release, 9, 4, 77, b"/old/pod"));
        assert!(o.freed_before_start);
        assert_eq!(t.totals().dying, 2);
        assert_eq!(t.totals().freed_before_start, 1);
        // A baseline cgroup removed and freed.
        t.observe(&ev(EventKind::Rmdir, 10, 4, 5, b"/x"));
        let o = t.observe(&ev(EventKind::Release, 12, 4, 5, b"/x"));
        assert_eq!((o.live_ns, o.dying_ns), (None, Some(2)));
        assert_eq!(t.totals().live, 1);
    }

    /// The start-up walk runs beside the events: a dying memcg it named can be released first.
    #[test]
    fn walk_record_after_the_release_is_dropped() {
        let mut t = Tracker::new(Some(4));
        t.load_baseline(&Baseline {
            cgroups: vec![BaselineCgroup {
                hierarchy_id: 4,
                cgroup_id: 1,
                level: 0,
                path: b"/".to_vec(),
            }],
            dying_before_start: vec![(4, 2)],
            taken_at_ns: 5,
        });
        // Released before its walk record arrives, then named by the walk: not counted again.
        let o = t.observe(&ev(EventKind::Release, 9, 4, 77, b"/old"));
        assert!(o.freed_before_start);
        let mut found = ev(EventKind::DyingAtStart, 10, 4, 77, b"old");
        found.css = 1;
        t.observe(&found);
        assert_eq!(t.tracked(), 1, "the late walk record adds nothing");
        // The other one is named, then released: counted once.
        let mut found = ev(EventKind::DyingAtStart, 11, 4, 78, b"other");
        found.css = 1;
        t.observe(&found);
        assert_eq!(t.tracked(), 2);
        assert_eq!(t.totals().dying, 1);
        t.observe(&ev(EventKind::Release, 12, 4, 78, b"/other"));
        assert_eq!(t.tracked(), 1);
        let tot = t.totals();
        assert_eq!((tot.dying, tot.freed_before_start), (0, 2));
        assert!(t.released_unnamed.is_empty());
    }

    #[test]
    fn paths_are_interned_and_released() {
        let mut t = Tracker::new(Some(1));
        for i in 0..100u64 {
            let p = format!("/kubepods/besteffort/pod{UID}/c{i}");
            t.observe(&ev(EventKind::Mkdir, i, 1, i + 10, p.as_bytes()));
        }
        assert_eq!(t.dirs.len(), 1);
        for i in 0..100u64 {
            let p = format!("/kubepods/besteffort/pod{UID}/c{i}");
            t.observe(&ev(EventKind::Rmdir, 200 + i, 1, i + 10, p.as_bytes()));
            t.observe(&ev(EventKind::Release, 400 + i, 1, i + 10, p.as_bytes()));
        }
        assert_eq!(t.dirs.len(), 0);
        assert_eq!(t.tracked(), 0);
    }

    /// A small deterministic generator for the table tests.
    /// A small deterministic generator for the storage tests.
    pub(super) struct Lcg(pub(super) u64);

    impl Lcg {
        pub(super) fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }
    }

    #[test]
    fn paths_of_every_shape_are_kept() {
        let mut t = Tracker::new(Some(3));
        let uid_ = UID.replace('-', "_");
        let id = "3b1f2a9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a";
        let paths = [
            "/".to_string(),
            "/a".into(),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{id}.scope"
            ),
            format!("/kubepods.slice/kubepods-pod{uid_}.slice:crio:{id}"),
            format!("/kubepods/besteffort/pod{UID}/{id}/init.scope"),
            format!("/user.slice/user-0.slice/{}", "long-name-".repeat(20)),
        ];
        for (i, p) in paths.iter().enumerate() {
            t.observe(&ev(EventKind::Mkdir, 1, 3, i as u64, p.as_bytes()));
            t.observe(&ev(EventKind::Mkdir, 1, 5, i as u64, p.as_bytes()));
        }
        for (i, p) in paths.iter().enumerate() {
            assert_eq!(t.path((3, i as u64)).as_deref(), Some(p.as_bytes()));
            // Other hierarchies keep no path.
            assert_eq!(t.path((5, i as u64)).as_deref(), Some(&b"/"[..]));
            assert_eq!(
                t.child_path(3, i as u64, b"x"),
                if p == "/" {
                    b"/x".to_vec()
                } else {
                    format!("{p}/x").into_bytes()
                }
            );
        }
        assert_eq!(t.child_path(3, 999, b"x"), b"/?/x");
        for (i, p) in paths.iter().enumerate() {
            for h in [3, 5] {
                t.observe(&ev(EventKind::Rmdir, 2, h, i as u64, p.as_bytes()));
                t.observe(&ev(EventKind::Release, 3, h, i as u64, p.as_bytes()));
            }
        }
        assert_eq!(
            (t.tracked(), t.names.len(), t.dirs.len(), t.strings.len()),
            (0, 0, 0, 0)
        );
    }

    #[test]
    fn pods_are_keyed_by_uid_value_and_form() {
        let mut t = Tracker::new(Some(1));
        // A static pod's UID (32 hex digits) with the same digits as a UUID is another pod.
        let hash_uid = UID.replace('-', "");
        let paths = [
            format!("/kubepods/burstable/pod{UID}"),
            format!("/kubepods/burstable/pod{hash_uid}"),
            // The same pods through the systemd driver and in upper case.
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
                UID.replace('-', "_")
            ),
            format!("/kubepods/burstable/pod{}", hash_uid.to_uppercase()),
            // Another UUID.
            "/kubepods/pod0a1b2c3d-0000-4000-8000-00000000abce".into(),
        ];
        let mut new_pods = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            let o = t.observe(&ev(EventKind::Mkdir, 1, 1, i as u64, p.as_bytes()));
            new_pods.push(o.new_pod);
        }
        assert_eq!(new_pods, [Some(0), Some(1), None, None, Some(2)]);
        let uids: Vec<&str> = (0..3)
            .filter_map(|i| t.pod(i))
            .map(|p| &*p.pod_uid)
            .collect();
        assert_eq!(
            uids,
            [UID, &hash_uid, "0a1b2c3d-0000-4000-8000-00000000abce"]
        );
        assert_eq!(t.pod(0).map(|p| p.live), Some(2));
        assert_eq!(t.pod(1).map(|p| p.live), Some(2));
        t.set_pod_name(&hash_uid, "kube-system", "etcd");
        t.set_pod_name(UID, "default", "web");
        t.set_pod_name("not-a-uid", "x", "y");
        assert_eq!(t.pod(1).and_then(|p| p.name.as_deref()), Some("etcd"));
        assert_eq!(t.pod(0).and_then(|p| p.name.as_deref()), Some("web"));
        assert_eq!(t.pod(2).and_then(|p| p.name.as_deref()), None);
        // Many pods: the index grows and finds them all again.
        for i in 0..2000u64 {
            let p = format!("/kubepods/pod{:08x}-0000-4000-8000-{:012x}", i, i * 7);
            let o = t.observe(&ev(EventKind::Mkdir, 1, 1, 1000 + i, p.as_bytes()));
            assert!(o.new_pod.is_some());
            let o = t.observe(&ev(
                EventKind::Mkdir,
                1,
                1,
                5000 + i,
                format!("{p}/c").as_bytes(),
            ));
            assert_eq!(o.pod, Some(3 + i as u32));
            assert!(o.new_pod.is_none());
        }
    }

    /// A kubelet-like pod (pod cgroup and one container cgroup) made, removed and freed.
    fn pod_cycle(t: &mut Tracker, n: u64, ts: u64) -> Vec<Observed> {
        let pod = format!("/kubepods/burstable/pod{:08x}-0000-4000-8000-{:012x}", n, n);
        let ctr = format!("{pod}/{:064x}", n);
        let (p, c) = (2 * n + 100, 2 * n + 101);
        vec![
            t.observe(&ev(EventKind::Mkdir, ts, 1, p, pod.as_bytes())),
            t.observe(&ev(EventKind::Mkdir, ts + 1, 1, c, ctr.as_bytes())),
            t.observe(&ev(EventKind::Rmdir, ts + 2, 1, c, ctr.as_bytes())),
            t.observe(&ev(EventKind::Rmdir, ts + 3, 1, p, pod.as_bytes())),
            t.observe(&ev(EventKind::Release, ts + 4, 1, c, ctr.as_bytes())),
            t.observe(&ev(EventKind::Release, ts + 5, 1, p, pod.as_bytes())),
        ]
    }

    #[test]
    fn freed_pods_are_forgotten_and_the_tables_return_to_the_baseline() {
        let mut t = Tracker::new(Some(1));
        // What stays: the kubepods skeleton (live all along).
        t.observe(&ev(EventKind::Mkdir, 1, 1, 1, b"/kubepods"));
        t.observe(&ev(EventKind::Mkdir, 2, 1, 2, b"/kubepods/burstable"));
        // A warm-up round of pods alive at once, then their removal: the tables' high mark.
        let mut ts = 10;
        for n in 0..200u64 {
            pod_cycle(&mut t, n, ts);
            ts += 10;
        }
        let baseline = t.footprint();
        assert_eq!(
            (baseline.cgroups, baseline.pods, baseline.dirs),
            (2, 0, 2),
            "{baseline:?}"
        );
        for n in 200..20_000u64 {
            let obs = pod_cycle(&mut t, n, ts);
            ts += 10;
            // The last release forgets the pod, and says so.
            assert_eq!(obs[5].forgotten_pod, obs[0].new_pod, "pod {n}");
            assert!(obs[..5].iter().all(|o| o.forgotten_pod.is_none()));
        }
        assert_eq!(t.footprint(), baseline);
        assert!(t.pods(ts).is_empty() && t.dying_pods().is_empty());
        let tot = t.totals();
        assert_eq!((tot.live, tot.dying, tot.freed), (2, 0, 40_000));
    }

    #[test]
    fn a_pod_that_comes_back_is_a_new_entry() {
        let mut t = Tracker::new(Some(1));
        let pod = format!("/kubepods/burstable/pod{UID}");
        let ctr = format!("{pod}/{:064x}", 7);
        t.observe(&ev(EventKind::Mkdir, 1, 1, 10, pod.as_bytes()));
        t.observe(&ev(EventKind::Mkdir, 2, 1, 11, ctr.as_bytes()));
        t.set_pod_name(UID, "default", "web");
        t.observe(&ev(EventKind::Rmdir, 3, 1, 11, ctr.as_bytes()));
        t.observe(&ev(EventKind::Rmdir, 4, 1, 10, pod.as_bytes()));
        let o = t.observe(&ev(EventKind::Release, 5, 1, 11, ctr.as_bytes()));
        assert_eq!((o.pod, o.forgotten_pod), (Some(0), None));
        assert_eq!(t.pod(0).map(|p| (p.dying, p.freed)), Some((1, 1)));
        let o = t.observe(&ev(EventKind::Release, 6, 1, 10, pod.as_bytes()));
        assert_eq!((o.pod, o.forgotten_pod), (Some(0), Some(0)));
        // Still named during the event that forgot it (the sinks see it), not found by UID.
        assert_eq!(t.pod(0).map(|p| p.freed), Some(2));
        assert!(t.find_pod(UID).is_none());
        assert_eq!(t.footprint().pods, 0);
        // Another event frees the slot; the pod coming back starts from nothing.
        t.observe(&ev(EventKind::Mkdir, 7, 1, 99, b"/other"));
        assert_eq!(t.pod(0).map(|p| p.freed), None);
        let o = t.observe(&ev(EventKind::Mkdir, 8, 1, 20, pod.as_bytes()));
        assert_eq!(o.new_pod, Some(0));
        let p = t.pod(0).cloned().unwrap_or_default();
        assert_eq!((p.live, p.freed, p.name), (1, 0, None));
        assert_eq!(
            t.totals().freed,
            2,
            "the forgotten pod's frees stay in the totals"
        );
    }

    #[test]
    fn css_joins_of_untracked_cgroups_are_not_kept() {
        let mut t = Tracker::new(Some(1));
        for i in 0..1000u64 {
            // A css that goes online in a cgroup whose mkdir is filtered out (or lost).
            let mut online = ev(EventKind::CssOnline, i, 1, 1000 + i, b"");
            online.css = 0xffff_8880_0000_0000 + i * 64;
            t.observe(&online);
        }
        assert_eq!(t.footprint().css_joins, 0);
    }

    #[test]
    fn a_long_churn_stays_flat() {
        let mut t = Tracker::new(Some(1));
        let id = |n: u64| format!("{n:064x}");
        let mut peak = None;
        for round in 0..30u64 {
            for i in 0..500u64 {
                let n = round * 500 + i;
                let pod = format!("/kubepods/pod{:08x}-0000-4000-8000-{:012x}", n / 4, n / 4);
                let p = format!("{pod}/{}", id(n));
                for h in [1, 2] {
                    t.observe(&ev(EventKind::Mkdir, n, h, n, p.as_bytes()));
                    t.observe(&ev(EventKind::Rmdir, n + 1, h, n, p.as_bytes()));
                }
                // Releases lag: half of the cgroups stay dying for a round.
                if n >= 250 {
                    let old = n - 250;
                    let pod = format!(
                        "/kubepods/pod{:08x}-0000-4000-8000-{:012x}",
                        old / 4,
                        old / 4
                    );
                    let p = format!("{pod}/{}", id(old));
                    for h in [1, 2] {
                        t.observe(&ev(EventKind::Release, n + 2, h, old, p.as_bytes()));
                    }
                }
            }
            assert_eq!(t.tracked(), 500);
            let size = (
                t.cgroups.chunks.len(),
                t.names.chunks.len(),
                t.index.buckets.len(),
                t.dirs.index.buckets.len(),
            );
            match peak {
                None => peak = Some(size),
                Some(p) => assert_eq!(size, p, "round {round}"),
            }
        }
        assert_eq!(t.totals().dying, 250);
        assert_eq!(t.dying_memcgs().len(), 250);
    }
}
