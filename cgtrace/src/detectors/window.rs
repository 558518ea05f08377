//! The time window every detector counts in: a ring of event-time buckets.

/// Most buckets in a window, whatever the configuration says.
const MAX_WINDOW_BUCKETS: u64 = 10_000;

/// A ring of time buckets; a slot is valid for the bucket index stamped on it, so nothing has to
/// be cleared as time moves on. Windows are judged on whole buckets before the current one.
#[derive(Clone, Debug)]
pub(super) struct Ring<T> {
    pub(super) width: u64,
    /// (bucket index + 1, value); 0 = never used.
    slots: Vec<(u64, T)>,
}

impl<T: Copy + Default> Ring<T> {
    /// A ring for windows of `complete` buckets of `width` ns (plus the current one).
    pub(super) fn new(width: u64, complete: u64) -> Ring<T> {
        let complete = complete.clamp(1, MAX_WINDOW_BUCKETS);
        Ring {
            width: width.max(1),
            slots: vec![(0, T::default()); complete as usize + 1],
        }
    }

    pub(super) fn complete(&self) -> u64 {
        self.slots.len() as u64 - 1
    }

    /// The bucket of `ts`, or `None` when it is older than the ring remembers.
    pub(super) fn at(&mut self, ts: u64) -> Option<&mut T> {
        let idx = ts / self.width;
        let stamp = idx + 1;
        let n = self.slots.len() as u64;
        let slot = &mut self.slots[(idx % n) as usize];
        if slot.0 > stamp {
            return None;
        }
        if slot.0 < stamp {
            *slot = (stamp, T::default());
        }
        Some(&mut slot.1)
    }

    /// Start (inclusive) and end (exclusive) of the window before the bucket holding `now`.
    pub(super) fn window(&self, now: u64) -> (u64, u64) {
        let now_idx = now / self.width;
        let start = now_idx.saturating_sub(self.complete()) * self.width;
        (start, now_idx * self.width)
    }

    /// The buckets of that window.
    pub(super) fn buckets(&self, now: u64) -> impl Iterator<Item = &T> {
        let now_idx = now / self.width;
        let n = self.slots.len() as u64;
        (now_idx.saturating_sub(self.complete())..now_idx).filter_map(move |idx| {
            let slot = &self.slots[(idx % n) as usize];
            (slot.0 == idx + 1).then_some(&slot.1)
        })
    }
}

impl Ring<u64> {
    /// The sum of the last `complete` buckets including the current one, and the start of the
    /// first of them.
    pub(super) fn recent(&self, now: u64) -> (u64, u64) {
        let now_idx = now / self.width;
        let n = self.slots.len() as u64;
        let first = (now_idx + 1).saturating_sub(self.complete());
        let sum = (first..=now_idx)
            .filter_map(|idx| {
                let slot = &self.slots[(idx % n) as usize];
                (slot.0 == idx + 1).then_some(slot.1)
            })
            .sum();
        (sum, first * self.width)
    }
}
