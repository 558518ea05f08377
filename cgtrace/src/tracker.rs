//! The tracker: the state of every cgroup (live → dying → freed) and of every pod.
//!
//! Cgroups are keyed by (hierarchy id, cgroup id): ids are per hierarchy, and a runtime makes the
//! same path in a dozen v1 hierarchies. css events are joined by css pointer. What "dying" counts
//! lives on the hierarchy that holds the memory controller. The tracker uses event time only,
//! never the wall clock, so a replay gives exactly the live result.
//!
//! Memory stays bounded: a freed cgroup leaves only its contribution to the counters and the
//! lifetimes handed back to the caller (for histograms); paths are interned as a shared parent
//! directory plus the leaf name.
use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    rc::Rc,
};

/// A fast hasher for the tracker's tables (keys are kernel ids and paths, not attacker-chosen
/// in a way that matters: a collision costs time, never correctness).
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        // Final avalanche (splitmix64).
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(b));
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(23) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

use cgtrace_common::EventKind;
use serde::Serialize;

use crate::{
    baseline::Baseline,
    event::Event,
    k8s::{self, Qos},
};

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
/// `Entry::parent` of cgroups whose path is not kept (not on the memory hierarchy).
const NO_DIR: u32 = u32::MAX;

/// One tracked cgroup. Kept small (64 bytes): tens of thousands of dying memcgs stay in memory.
#[derive(Clone, Debug)]
struct Entry {
    mkdir_ns: u64,
    rmdir_ns: u64,
    css: u64,
    /// The leaf name; a long lowercase-hex name (a container id) is stored as its bytes.
    leaf: Box<[u8]>,
    /// Figures at rmdir/offline, in pages (saturating).
    usage: u32,
    kmem: u32,
    memsw: u32,
    parent: u32,
    pod: u32,
    memcg_id: u16,
    flags: u8,
    flags2: u8,
}

const F2_TRUNCATED: u8 = 1;
const F2_HEX_LEAF: u8 = 2;

/// Packs a leaf: 32+ lowercase hex characters (container ids) become half as many bytes.
fn pack_leaf(leaf: &[u8]) -> (Box<[u8]>, bool) {
    let hex = leaf.len() >= 32
        && leaf.len().is_multiple_of(2)
        && leaf.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    if !hex {
        return (leaf.into(), false);
    }
    let nib = |c: u8| if c <= b'9' { c - b'0' } else { c - b'a' + 10 };
    let packed: Vec<u8> = leaf.chunks(2).map(|p| nib(p[0]) << 4 | nib(p[1])).collect();
    (packed.into_boxed_slice(), true)
}

fn unpack_leaf(e: &Entry, out: &mut Vec<u8>) {
    if e.flags2 & F2_HEX_LEAF == 0 {
        out.extend_from_slice(&e.leaf);
        return;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in e.leaf.iter() {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
}

fn to_pages(bytes: u64) -> u32 {
    (bytes / crate::event::PAGE_SIZE).min(u32::MAX as u64) as u32
}

fn from_pages(pages: u32) -> u64 {
    u64::from(pages) * crate::event::PAGE_SIZE
}

/// The few fields of an entry the counters need (cheap to copy, unlike the entry).
#[derive(Clone, Copy)]
struct Brief {
    mkdir_ns: u64,
    rmdir_ns: u64,
    flags: u8,
    pod: u32,
}

impl Entry {
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

/// Interned parent directories (refcounted).
/// (The name is stored once, shared by the index and the slot.)
#[derive(Default)]
struct Dirs {
    ids: FastMap<Rc<[u8]>, u32>,
    slots: Vec<(Rc<[u8]>, u32)>,
    free: Vec<u32>,
}

impl Dirs {
    fn intern(&mut self, dir: &[u8]) -> u32 {
        if let Some(&id) = self.ids.get(dir) {
            self.slots[id as usize].1 += 1;
            return id;
        }
        let b: Rc<[u8]> = dir.into();
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = (b.clone(), 1);
                id
            }
            None => {
                self.slots.push((b.clone(), 1));
                (self.slots.len() - 1) as u32
            }
        };
        self.ids.insert(b, id);
        id
    }

    fn release(&mut self, id: u32) {
        let Some(slot) = self.slots.get_mut(id as usize) else {
            return;
        };
        slot.1 -= 1;
        if slot.1 == 0 {
            let name = std::mem::replace(&mut slot.0, Rc::from(&b""[..]));
            self.ids.remove(&*name);
            self.free.push(id);
        }
    }

    fn get(&self, id: u32) -> &[u8] {
        self.slots.get(id as usize).map(|s| &*s.0).unwrap_or(b"")
    }
}

fn split_path(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&c| c == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

/// Per-pod counters (memcgs on the memory hierarchy).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PodStats {
    pub pod_uid: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub qos: Option<Qos>,
    pub live: u64,
    pub dying: u64,
    pub freed: u64,
    /// Container cgroups created (all hierarchies count once: memory hierarchy only).
    pub containers_created: u64,
}

/// What one event changed, for histograms and detectors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// The cgroup is a memcg on the memory hierarchy.
    pub memcg: bool,
    /// A pod seen for the first time (index for [`Tracker::pod`]): look its name up.
    pub new_pod: Option<u32>,
    /// mkdir → rmdir, on rmdir.
    pub live_ns: Option<u64>,
    /// rmdir → freed, when the memcg was freed.
    pub dying_ns: Option<u64>,
    /// A dying memcg that existed before start was freed now.
    pub freed_before_start: bool,
    pub qos: Option<Qos>,
    /// The pod of the cgroup, if any.
    pub pod: Option<u32>,
    /// The cgroup is a container (the path names a container id).
    pub container: bool,
}

/// One dying memcg, for reports and detectors.
#[derive(Clone, Debug, Serialize)]
pub struct DyingMemcg {
    pub hierarchy_id: u32,
    pub cgroup_id: u64,
    pub path: String,
    pub pod_uid: Option<String>,
    pub rmdir_ns: u64,
    pub usage_bytes: Option<u64>,
    pub kmem_bytes: Option<u64>,
    pub memsw_bytes: Option<u64>,
    /// The path was cut to the event's buffer.
    pub path_truncated: bool,
    /// Found dying by the start-up walk: `rmdir_ns` is when it was found, not when removed.
    pub before_start: bool,
}

/// Totals for the summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Memcgs alive now (baseline + created − removed).
    pub live: u64,
    /// Memcgs removed but not freed: seen removed during the run plus those dying before start
    /// that were not freed since.
    pub dying: u64,
    /// Memcgs freed during the run.
    pub freed: u64,
    /// Dying memcgs the kernel held at start.
    pub dying_before_start: u64,
    /// Of those, freed during the run (attributed by their release event's path).
    pub freed_before_start: u64,
}

/// The tracker. Feed it every event in order with [`Tracker::observe`].
pub struct Tracker {
    memory_hierarchy: Option<u32>,
    cgroups: FastMap<Key, Entry>,
    css: FastMap<u64, Key>,
    /// Keep css → cgroup joins (only the fentry/kprobe tiers send css events).
    join_css: bool,
    dirs: Dirs,
    pods: Vec<PodStats>,
    pod_ids: FastMap<Box<str>, u32>,
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
            cgroups: FastMap::default(),
            css: FastMap::default(),
            join_css: true,
            dirs: Dirs::default(),
            pods: Vec::new(),
            pod_ids: FastMap::default(),
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
            let (entry, _) = self.new_entry(c.hierarchy_id, &c.path, 0, false);
            let mut entry = entry;
            entry.flags |= F_BASELINE;
            if entry.flags & F_MEMCG != 0 {
                self.totals.live += 1;
                if entry.pod != NO_POD {
                    self.pods[entry.pod as usize].live += 1;
                }
            }
            if let Some(old) = self.cgroups.insert(key, entry) {
                self.forget(old);
            }
        }
        self.totals.dying_before_start = b
            .dying_before_start
            .iter()
            .filter(|(h, _)| Some(*h) == self.memory_hierarchy)
            .map(|(_, n)| n)
            .sum();
        self.last_ts = b.taken_at_ns;
    }

    fn pod_index(&mut self, p: &k8s::PodRef) -> (u32, bool) {
        let Some(uid) = &p.pod_uid else {
            return (NO_POD, false);
        };
        if let Some(&i) = self.pod_ids.get(uid.as_str()) {
            return (i, false);
        }
        let i = self.pods.len() as u32;
        self.pods.push(PodStats {
            pod_uid: uid.clone(),
            qos: p.qos,
            ..PodStats::default()
        });
        self.pod_ids.insert(uid.as_str().into(), i);
        (i, true)
    }

    fn new_entry(
        &mut self,
        hierarchy_id: u32,
        path: &[u8],
        ts: u64,
        truncated: bool,
    ) -> (Entry, Option<u32>) {
        let memcg = Some(hierarchy_id) == self.memory_hierarchy;
        // Pods are attributed on the memory hierarchy only: parse nothing elsewhere.
        let (pod, new_pod, container) = if memcg {
            let pod_ref = k8s::parse_path(path);
            let (pod, new_pod) = self.pod_index(&pod_ref);
            (pod, new_pod, pod_ref.container_id.is_some())
        } else {
            (NO_POD, false, false)
        };
        // Paths are kept for memcgs (reports name them); other hierarchies only need times.
        let (parent, leaf, hex) = if memcg {
            let (dir, leaf) = split_path(path);
            let (leaf, hex) = pack_leaf(leaf);
            (self.dirs.intern(dir), leaf, hex)
        } else {
            (NO_DIR, Box::default(), false)
        };
        (
            Entry {
                parent,
                leaf,
                pod,
                mkdir_ns: ts,
                rmdir_ns: 0,
                usage: 0,
                kmem: 0,
                memsw: 0,
                css: 0,
                memcg_id: 0,
                flags: if memcg { F_MEMCG } else { 0 } | if container { F_CONTAINER } else { 0 },
                flags2: if truncated { F2_TRUNCATED } else { 0 }
                    | if hex { F2_HEX_LEAF } else { 0 },
            },
            new_pod.then_some(pod),
        )
    }

    fn forget(&mut self, e: Entry) {
        if e.parent != NO_DIR {
            self.dirs.release(e.parent);
        }
        if e.css != 0 {
            self.css.remove(&e.css);
        }
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

    /// Applies one event.
    pub fn observe(&mut self, ev: &Event<'_>) -> Observed {
        self.last_ts = self.last_ts.max(ev.ts_ns);
        let mut out = Observed::default();
        // css events before online carry only the css pointer; afterwards, join by css.
        let key = if ev.has_cgroup {
            Some((ev.hierarchy_id, ev.cgroup_id))
        } else {
            self.css.get(&ev.css).copied()
        };
        match ev.kind {
            EventKind::Mkdir => {
                let key = (ev.hierarchy_id, ev.cgroup_id);
                let (mut e, new_pod) =
                    self.new_entry(ev.hierarchy_id, ev.path, ev.ts_ns, ev.path_truncated);
                Self::capture(&mut e, ev);
                if ev.css != 0 {
                    e.css = ev.css;
                    if self.join_css {
                        self.css.insert(ev.css, key);
                    }
                }
                out.new_pod = new_pod;
                self.fill(&mut out, e.brief());
                if e.flags & F_MEMCG != 0 {
                    self.totals.live += 1;
                    if e.pod != NO_POD {
                        let p = &mut self.pods[e.pod as usize];
                        p.live += 1;
                        if out.container {
                            p.containers_created += 1;
                        }
                    }
                }
                if let Some(old) = self.cgroups.insert(key, e) {
                    self.forget(old);
                }
            }
            EventKind::CssOnline => {
                if let (Some(key), true) = (key, ev.css != 0) {
                    self.css.insert(ev.css, key);
                    if let Some(e) = self.cgroups.get_mut(&key) {
                        e.css = ev.css;
                    }
                }
            }
            EventKind::Rmdir => {
                let key = (ev.hierarchy_id, ev.cgroup_id);
                if !self.cgroups.contains_key(&key) {
                    // Made before start and missed by the baseline walk: track it from here.
                    let (e, new_pod) =
                        self.new_entry(ev.hierarchy_id, ev.path, 0, ev.path_truncated);
                    out.new_pod = new_pod;
                    if e.flags & F_MEMCG != 0 {
                        self.totals.live += 1;
                        if e.pod != NO_POD {
                            self.pods[e.pod as usize].live += 1;
                        }
                    }
                    self.cgroups.insert(key, e);
                }
                let Some(e) = self.cgroups.get_mut(&key) else {
                    return out;
                };
                if e.rmdir_ns != 0 {
                    return out; // duplicate
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
                self.fill(&mut out, e);
                if e.flags & F_MEMCG != 0 {
                    self.totals.live = self.totals.live.saturating_sub(1);
                    self.totals.dying += 1;
                    if e.pod != NO_POD {
                        let p = &mut self.pods[e.pod as usize];
                        p.live = p.live.saturating_sub(1);
                        p.dying += 1;
                    }
                }
            }
            EventKind::CssOffline => {
                if let Some(e) = key.and_then(|k| self.cgroups.get_mut(&k)) {
                    Self::capture(e, ev);
                }
            }
            // The memcg itself is freed (css tiers); the cgroup's release follows.
            EventKind::CssFree => {
                if let Some(key) = key {
                    self.freed(key, ev.ts_ns, &mut out);
                }
            }
            EventKind::Release => {
                let key = (ev.hierarchy_id, ev.cgroup_id);
                self.freed(key, ev.ts_ns, &mut out);
                match self.cgroups.remove(&key) {
                    Some(e) => self.forget(e),
                    None => {
                        // Not known: removed before start (dying before start) or unknown.
                        if Some(ev.hierarchy_id) == self.memory_hierarchy {
                            out.memcg = true;
                            let pod = k8s::parse_path(ev.path);
                            out.qos = pod.qos;
                            if self.totals.freed_before_start < self.totals.dying_before_start {
                                self.totals.freed_before_start += 1;
                                out.freed_before_start = true;
                                self.released_unnamed.insert(key);
                            }
                        }
                    }
                }
            }
            EventKind::DyingAtStart => self.dying_at_start(ev, &mut out),
            EventKind::CssAlloc | EventKind::CssReleased | EventKind::MkdirFailed => {}
        }
        out
    }

    /// A memcg the start-up walk found dying: named now, counted in `dying_before_start`.
    fn dying_at_start(&mut self, ev: &Event<'_>, out: &mut Observed) {
        let key = (ev.hierarchy_id, ev.cgroup_id);
        if self.cgroups.contains_key(&key) || self.released_unnamed.remove(&key) {
            return;
        }
        let path = self.child_path(ev.hierarchy_id, ev.css, ev.path);
        let (mut e, new_pod) = self.new_entry(ev.hierarchy_id, &path, 0, ev.path_truncated);
        e.rmdir_ns = ev.ts_ns.max(1);
        e.flags |= F_BASELINE | F_FOUND_DYING;
        Self::capture(&mut e, ev);
        out.new_pod = new_pod;
        self.fill(out, e.brief());
        if e.flags & F_MEMCG != 0 && e.pod != NO_POD {
            self.pods[e.pod as usize].dying += 1;
        }
        self.cgroups.insert(key, e);
    }

    fn fill(&self, out: &mut Observed, e: Brief) {
        out.memcg = e.flags & F_MEMCG != 0;
        if e.pod != NO_POD {
            out.pod = Some(e.pod);
            out.qos = self.pods[e.pod as usize].qos;
            out.container = e.flags & F_CONTAINER != 0;
        }
    }

    /// Marks the memcg of `key` freed (once), counting the dying time.
    fn freed(&mut self, key: Key, ts: u64, out: &mut Observed) {
        let Some(e) = self.cgroups.get_mut(&key) else {
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
            if e.pod != NO_POD {
                let p = &mut self.pods[e.pod as usize];
                p.dying = p.dying.saturating_sub(1);
                p.freed += 1;
            }
            return;
        }
        if e.rmdir_ns != 0 {
            self.totals.dying = self.totals.dying.saturating_sub(1);
            if e.pod != NO_POD {
                let p = &mut self.pods[e.pod as usize];
                p.dying = p.dying.saturating_sub(1);
                p.freed += 1;
            }
        } else {
            // Freed without an rmdir we saw (e.g. removed while we were not looking).
            self.totals.live = self.totals.live.saturating_sub(1);
            if e.pod != NO_POD {
                let p = &mut self.pods[e.pod as usize];
                p.live = p.live.saturating_sub(1);
                p.freed += 1;
            }
        }
        self.totals.freed += 1;
    }

    /// Records a pod's name and namespace (from `/var/log/pods`, or a session).
    pub fn set_pod_name(&mut self, pod_uid: &str, namespace: &str, name: &str) {
        if let Some(&i) = self.pod_ids.get(pod_uid) {
            let p = &mut self.pods[i as usize];
            p.namespace = Some(namespace.to_string());
            p.name = Some(name.to_string());
        }
    }

    pub fn pod(&self, i: u32) -> Option<&PodStats> {
        self.pods.get(i as usize)
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
        self.cgroups.len()
    }

    fn path_of(&self, e: &Entry) -> Vec<u8> {
        let mut p = self.dirs.get(e.parent).to_vec();
        p.push(b'/');
        unpack_leaf(e, &mut p);
        p
    }

    /// The path of `leaf` below the tracked cgroup `parent_id` (the start-up walk is pre-order:
    /// parents are known — baseline, or found just before).
    pub fn child_path(&self, hierarchy_id: u32, parent_id: u64, leaf: &[u8]) -> Vec<u8> {
        let mut path = match self.cgroups.get(&(hierarchy_id, parent_id)) {
            Some(p) => self.path_of(p),
            None => b"/?".to_vec(),
        };
        if path != b"/" {
            path.push(b'/');
        }
        path.extend_from_slice(leaf);
        path
    }

    /// The path of a tracked cgroup.
    pub fn path(&self, key: Key) -> Option<Vec<u8>> {
        self.cgroups.get(&key).map(|e| self.path_of(e))
    }

    /// Dying memcgs seen removed during the run, oldest first.
    pub fn dying_memcgs(&self) -> Vec<DyingMemcg> {
        let mut v: Vec<DyingMemcg> = self
            .cgroups
            .iter()
            .filter(|(_, e)| {
                e.flags & F_MEMCG != 0 && e.state() == State::Dying && e.flags & F_FREED == 0
            })
            .map(|(k, e)| DyingMemcg {
                hierarchy_id: k.0,
                cgroup_id: k.1,
                path: String::from_utf8_lossy(&self.path_of(e)).into_owned(),
                pod_uid: (e.pod != NO_POD).then(|| self.pods[e.pod as usize].pod_uid.clone()),
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

    /// Pods that have dying memcgs, most first (ties by UID).
    pub fn dying_pods(&self) -> Vec<PodSummary> {
        let mut v = self.pods(self.now_ns());
        v.retain(|p| p.stats.dying > 0);
        v
    }

    /// Pods with their counters and the age of their oldest dying memcg (at `now_ns`), most
    /// dying first (ties by UID).
    pub fn pods(&self, now_ns: u64) -> Vec<PodSummary> {
        let mut oldest: HashMap<u32, u64> = HashMap::new();
        for e in self.cgroups.values() {
            if e.pod != NO_POD && e.state() == State::Dying && e.flags & F_FREED == 0 {
                let o = oldest.entry(e.pod).or_insert(u64::MAX);
                *o = (*o).min(e.rmdir_ns);
            }
        }
        let mut v: Vec<PodSummary> = self
            .pods
            .iter()
            .enumerate()
            .map(|(i, p)| PodSummary {
                stats: p.clone(),
                oldest_dying_age_s: oldest
                    .get(&(i as u32))
                    .map(|&t| now_ns.saturating_sub(t) as f64 / 1e9),
            })
            .collect();
        v.sort_by(|a, b| {
            b.stats
                .dying
                .cmp(&a.stats.dying)
                .then_with(|| a.stats.pod_uid.cmp(&b.stats.pod_uid))
        });
        v
    }
}

/// A pod in the summary.
#[derive(Clone, Debug, Serialize)]
pub struct PodSummary {
    #[serde(flatten)]
    pub stats: PodStats,
    /// Age of the oldest dying memcg, seconds.
    pub oldest_dying_age_s: Option<f64>,
}

const _: () = assert!(size_of::<Entry>() == 64);

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn container_id_leaves_are_packed_and_restored() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let (packed, hex) = pack_leaf(id.as_bytes());
        assert!(hex && packed.len() == 32);
        let (plain, hex) = pack_leaf(b"Upper0123456789abcdef0123456789abcdef");
        assert!(!hex && plain.len() == 37);
        let mut t = Tracker::new(Some(1));
        let p = format!("/kubepods/pod{UID}/{id}");
        t.observe(&ev(EventKind::Mkdir, 1, 1, 9, p.as_bytes()));
        t.observe(&ev(EventKind::Rmdir, 2, 1, 9, p.as_bytes()));
        assert_eq!(t.dying_memcgs()[0].path, p);
    }
    use crate::baseline::BaselineCgroup;

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
        assert_eq!(t.dirs.ids.len(), 1);
        for i in 0..100u64 {
            let p = format!("/kubepods/besteffort/pod{UID}/c{i}");
            t.observe(&ev(EventKind::Rmdir, 200 + i, 1, i + 10, p.as_bytes()));
            t.observe(&ev(EventKind::Release, 400 + i, 1, i + 10, p.as_bytes()));
        }
        assert_eq!(t.dirs.ids.len(), 0);
        assert_eq!(t.tracked(), 0);
    }
}
