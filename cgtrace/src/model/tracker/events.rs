//! What each event does to the tracker: mkdir, css online, rmdir, release, the dying found at
//! start, and the freeing of a memcg.

use cgtrace_common::EventKind;

use crate::{model::event::Event, model::k8s};

use super::{
    Brief, Entry, F_BASELINE, F_CONTAINER, F_FOUND_DYING, F_FREED, F_HAS_KMEM, F_HAS_MEMSW,
    F_HAS_USAGE, F_MEMCG, Key, Observed, PageSize, Tracker,
};

impl Tracker {
    fn capture(e: &mut Entry, ev: &Event<'_>, page: PageSize) {
        if let Some(u) = ev.usage_bytes {
            e.usage = page.pages(u);
            e.flags |= F_HAS_USAGE;
        }
        if let Some(k) = ev.kmem_bytes {
            e.kmem = page.pages(k);
            e.flags |= F_HAS_KMEM;
        }
        if let Some(m) = ev.memsw_bytes {
            e.memsw = page.pages(m);
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
                    Self::capture(e, ev, self.page_size);
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
        Self::capture(&mut e, ev, self.page_size);
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
        if e.flags & F_MEMCG != 0 {
            self.first_made_id = self.first_made_id.min(key.1);
        }
        if let Some(old) = self.put(e) {
            self.uncount(&old);
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
        Self::capture(e, ev, self.page_size);
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
                    if self.walk_may_name(&e) {
                        self.released_unnamed.insert(key);
                    }
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
                        if !self.walk_ended {
                            self.released_unnamed.insert(key);
                        }
                    }
                }
            }
        }
    }

    /// Whether the start-up walk, still running, may yet name this released memcg: one that
    /// existed at start (made after start, it is known stale by its ID) and it has not named.
    fn walk_may_name(&self, e: &Entry) -> bool {
        e.flags & (F_MEMCG | F_FOUND_DYING) == F_MEMCG
            && !self.walk_ended
            && self.totals.dying_before_start > 0
            && e.cgroup_id < self.first_made_id
    }

    /// Whether a record of the start-up walk says nothing the events did not (then it is to be
    /// dropped): its memcg is tracked (the events tell its story), was made after start, or was
    /// released already (forgotten now: the walk names a memcg once).
    pub fn stale_walk_record(&mut self, ev: &Event<'_>) -> bool {
        let key = (ev.hierarchy_id, ev.cgroup_id);
        ev.cgroup_id >= self.first_made_id
            || self.lookup(key).is_some()
            || self.released_unnamed.remove(&key)
    }

    /// The start-up walk ended (or failed): no record of it comes any more, so the releases it
    /// could have named late are forgotten.
    pub fn walk_ended(&mut self) {
        self.walk_ended = true;
        self.released_unnamed = Default::default();
    }

    /// A memcg the start-up walk found dying: named now, counted in `dying_before_start`.
    fn dying_at_start(&mut self, ev: &Event<'_>, out: &mut Observed) {
        if self.stale_walk_record(ev) {
            return;
        }
        let key = (ev.hierarchy_id, ev.cgroup_id);
        let path = self.child_path(ev.hierarchy_id, ev.css, ev.path);
        let (mut e, new_pod) = self.new_entry(key, &path, 0, ev.path_truncated);
        e.rmdir_ns = ev.ts_ns.max(1);
        e.flags |= F_BASELINE | F_FOUND_DYING;
        Self::capture(&mut e, ev, self.page_size);
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
}
