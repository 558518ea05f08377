//! Names for the tracker: interned strings, packed leaf names (ids as bytes), parent
//! directories.
use super::NO_STR;
use super::store::{IdTable, Slab};
use crate::{format::hex, model::k8s};

pub(super) use crate::model::hash::hash_bytes;

/// [`hash_bytes`] of the concatenation `a ++ b`.
pub(super) fn hash_parts(a: &[u8], b: &[u8]) -> u64 {
    if b.is_empty() {
        return hash_bytes(a);
    }
    let mut buf = [0u8; 256];
    match buf.get_mut(..a.len() + b.len()) {
        Some(both) => {
            let (x, y) = both.split_at_mut(a.len());
            x.copy_from_slice(a);
            y.copy_from_slice(b);
            hash_bytes(both)
        }
        None => hash_bytes(&[a, b].concat()),
    }
}

/// Interned, refcounted byte strings (what surrounds the ids of packed names: `pod`,
/// `cri-containerd-` + `.scope`, `/kubepods/burstable/pod`, …). The empty string is
/// [`NO_STR`] and is not stored.
#[derive(Default)]
pub(super) struct Strings {
    pub(super) index: IdTable,
    pub(super) slots: Slab<(Box<[u8]>, u32)>,
}

impl Strings {
    pub(super) fn get(&self, id: u32) -> &[u8] {
        self.slots.get(id).map_or(b"", |s| &s.0)
    }

    pub(super) fn find_pos(&self, a: &[u8], b: &[u8], hash: u64) -> Option<usize> {
        self.index.find(hash, |id| {
            let s = self.get(id);
            s.len() == a.len() + b.len() && s.starts_with(a) && s.ends_with(b)
        })
    }

    /// The id of `a ++ b`, if interned.
    #[cfg(test)]
    pub(super) fn find(&self, a: &[u8], b: &[u8]) -> Option<u32> {
        if a.is_empty() && b.is_empty() {
            return Some(NO_STR);
        }
        let pos = self.find_pos(a, b, hash_parts(a, b))?;
        Some(self.index.id_at(pos))
    }

    /// Takes a reference on `a ++ b`, interning it if new.
    pub(super) fn intern(&mut self, a: &[u8], b: &[u8]) -> u32 {
        if a.is_empty() && b.is_empty() {
            return NO_STR;
        }
        let hash = hash_parts(a, b);
        if let Some(pos) = self.find_pos(a, b, hash) {
            let id = self.index.id_at(pos);
            if let Some(s) = self.slots.get_mut(id) {
                s.1 += 1;
            }
            return id;
        }
        let id = self.slots.insert(([a, b].concat().into_boxed_slice(), 1));
        self.index.insert(hash, id);
        id
    }

    /// Drops a reference taken by [`Strings::intern`].
    pub(super) fn release(&mut self, id: u32) {
        let Some(s) = self.slots.get_mut(id) else {
            return;
        };
        s.1 = s.1.saturating_sub(1);
        if s.1 > 0 {
            return;
        }
        if let Some(pos) = self.index.find(hash_bytes(&s.0), |x| x == id) {
            self.index.remove_at(pos);
        }
        self.slots.remove(id);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }
}

/// How a [`Packed`] name is stored.
pub(super) const K_RAW: u8 = 0;
/// The whole name is the interned string.
pub(super) const K_STR: u8 = 1;
/// A run of 32 to 64 lowercase hex digits (a container id, a static pod UID), as bytes.
pub(super) const K_HEX: u8 = 2;
/// A lowercase UUID with `-` separators (a pod UID), as 16 bytes.
pub(super) const K_UUID_DASH: u8 = 3;
/// The same with `_` separators (systemd slice names).
pub(super) const K_UUID_UNDERSCORE: u8 = 4;

/// A name packed in 40 bytes: short names as they are; names that carry an id (container id,
/// pod UID) as the id's bytes plus an interned string of what comes before and after it
/// (`prefix_len` bytes of it before); other long names as an interned string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Packed {
    pub(super) id: [u8; 32],
    /// [`K_STR`], [`K_HEX`], [`K_UUID_DASH`], [`K_UUID_UNDERSCORE`]: a reference on a
    /// [`Strings`] entry (or [`NO_STR`]).
    pub(super) affix: u32,
    pub(super) prefix_len: u16,
    /// [`K_RAW`]: bytes; [`K_HEX`]: digits.
    pub(super) len: u8,
    pub(super) kind: u8,
}

impl Packed {
    /// The id as text (`K_HEX`, `K_UUID_*`), in `buf`.
    pub(super) fn id_text<'b>(&self, buf: &'b mut [u8; 64]) -> &'b [u8] {
        let (digits, sep) = match self.kind {
            K_HEX => (usize::from(self.len).min(64), 0),
            K_UUID_DASH => (32, b'-'),
            _ => (32, b'_'),
        };
        for (i, pair) in buf.chunks_exact_mut(2).zip(&self.id) {
            i.copy_from_slice(&hex::digits_of(*pair));
        }
        if sep != 0 {
            // 8-4-4-4-12: move the groups apart, from the end.
            buf.copy_within(20..32, 24);
            buf.copy_within(16..20, 19);
            buf.copy_within(12..16, 14);
            buf.copy_within(8..12, 9);
            for i in [8, 13, 18, 23] {
                buf[i] = sep;
            }
            return &buf[..36];
        }
        &buf[..digits]
    }

    /// The prefix and suffix around the id.
    pub(super) fn affixes<'s>(&self, strings: &'s Strings) -> (&'s [u8], &'s [u8]) {
        let affix = strings.get(self.affix);
        affix.split_at(usize::from(self.prefix_len).min(affix.len()))
    }

    /// Appends the name.
    pub(super) fn write(&self, strings: &Strings, out: &mut Vec<u8>) {
        match self.kind {
            K_RAW => out.extend_from_slice(&self.id[..usize::from(self.len).min(32)]),
            K_STR => out.extend_from_slice(strings.get(self.affix)),
            _ => {
                let (prefix, suffix) = self.affixes(strings);
                out.extend_from_slice(prefix);
                out.extend_from_slice(self.id_text(&mut [0; 64]));
                out.extend_from_slice(suffix);
            }
        }
    }

    /// The name is `s`.
    pub(super) fn eq_bytes(&self, strings: &Strings, s: &[u8]) -> bool {
        match self.kind {
            K_RAW => s == &self.id[..usize::from(self.len).min(32)],
            K_STR => s == strings.get(self.affix),
            _ => {
                let (prefix, suffix) = self.affixes(strings);
                let mut buf = [0; 64];
                let id = self.id_text(&mut buf);
                s.len() == prefix.len() + id.len() + suffix.len()
                    && s.starts_with(prefix)
                    && s.ends_with(suffix)
                    && &s[prefix.len()..prefix.len() + id.len()] == id
            }
        }
    }
}

/// A name taken apart for packing: the id found in it (if any) and what surrounds it.
pub(super) struct Shape<'a> {
    pub(super) kind: u8,
    pub(super) id: [u8; 32],
    pub(super) len: u8,
    pub(super) prefix: &'a [u8],
    pub(super) suffix: &'a [u8],
}

/// The first run of at least 32 lowercase hex digits: (start, length up to 64).
pub(super) fn hex_run(s: &[u8]) -> Option<(usize, usize)> {
    let mut run = 0usize;
    for (i, &c) in s.iter().enumerate() {
        let hex = usize::from(hex::is_lower(c));
        // Bitwise `&`: one branch, almost never taken.
        if (hex == 0) & (run >= 32) {
            return Some((i - run, run));
        }
        run = (run + 1) & hex.wrapping_neg();
        if run == 64 {
            return Some((i + 1 - 64, 64));
        }
    }
    (run >= 32).then(|| (s.len() - run, run))
}

/// The first lowercase UUID (`8-4-4-4-12` hex digits, `-` or `_` separators): (start, separator).
/// Lowercase only: a packed UUID is restored lowercase.
pub(super) fn find_uuid(s: &[u8]) -> Option<(usize, u8)> {
    if s.len() < 36 {
        return None;
    }
    (0..=s.len() - 36).find_map(|p| {
        let w = &s[p..p + 36];
        (k8s::valid_uid(w) && !w.iter().any(u8::is_ascii_uppercase)).then_some((p, w[8]))
    })
}

/// Packs hex digits (lowercase, validated; at most 64) two to a byte.
pub(super) fn pack_hex(digits: &[u8], id: &mut [u8; 32]) {
    for (b, pair) in id.iter_mut().zip(digits.chunks(2)) {
        *b = hex::pack_pair(pair);
    }
}

pub(super) fn shape(s: &[u8]) -> Shape<'_> {
    let mut id = [0u8; 32];
    let found = if (32..=64).contains(&s.len()) && hex::all(&hex::LOWER, s) {
        // The common case, a container id: no need to look for where the run starts.
        pack_hex(s, &mut id);
        Some((K_HEX, 0, s.len(), s.len() as u8))
    } else if let Some((start, n)) = hex_run(s) {
        pack_hex(&s[start..start + n], &mut id);
        Some((K_HEX, start, n, n as u8))
    } else if let Some((start, sep)) = find_uuid(s) {
        let u = &s[start..start + 36];
        let mut digits = [0u8; 32];
        digits[..8].copy_from_slice(&u[..8]);
        digits[8..12].copy_from_slice(&u[9..13]);
        digits[12..16].copy_from_slice(&u[14..18]);
        digits[16..20].copy_from_slice(&u[19..23]);
        digits[20..].copy_from_slice(&u[24..]);
        pack_hex(&digits, &mut id);
        let kind = if sep == b'-' {
            K_UUID_DASH
        } else {
            K_UUID_UNDERSCORE
        };
        Some((kind, start, 36, 16))
    } else {
        None
    };
    match found {
        Some((kind, start, n, len)) if start <= usize::from(u16::MAX) => Shape {
            kind,
            id,
            len,
            prefix: &s[..start],
            suffix: &s[start + n..],
        },
        _ if s.len() <= 32 => {
            let mut id = [0u8; 32];
            id[..s.len()].copy_from_slice(s);
            Shape {
                kind: K_RAW,
                id,
                len: s.len() as u8,
                prefix: b"",
                suffix: b"",
            }
        }
        _ => Shape {
            kind: K_STR,
            id: [0; 32],
            len: 0,
            prefix: s,
            suffix: b"",
        },
    }
}

impl Shape<'_> {
    /// The packed name, `affix` being the id of `prefix ++ suffix` in [`Strings`].
    pub(super) fn packed(&self, affix: u32) -> Packed {
        Packed {
            id: self.id,
            affix,
            prefix_len: if matches!(self.kind, K_RAW | K_STR) {
                0
            } else {
                self.prefix.len() as u16
            },
            len: self.len,
            kind: self.kind,
        }
    }
}

/// What a directory says of the pod of the cgroups in it (see [`k8s::PodMatch`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum DirPod {
    /// No pod in the directory's path: a child's own name may make it a pod.
    #[default]
    None,
    /// The directory is a pod's: children are of that pod, containers if their name says so.
    Pod(u32),
    /// The directory is below a pod's: children are of that pod, and containers (or not) as
    /// the directory's path says.
    Below(u32, bool),
}

/// An interned directory.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Dir {
    /// [`hash_bytes`] of the path.
    pub(super) hash: u64,
    pub(super) name: Packed,
    pub(super) refs: u32,
    pub(super) pod: DirPod,
}

/// Interned parent directories (refcounted), packed, found by their path.
#[derive(Default)]
pub(super) struct Dirs {
    pub(super) index: IdTable,
    pub(super) slots: Slab<Dir>,
}

impl Dirs {
    /// Takes a reference on `dir` if interned (`hash`: its [`hash_bytes`]).
    pub(super) fn find(
        &mut self,
        dir: &[u8],
        hash: u64,
        strings: &Strings,
    ) -> Option<(u32, DirPod)> {
        let slots = &self.slots;
        let pos = self.index.find(hash, |id| {
            slots
                .get(id)
                .is_some_and(|d| d.hash == hash && d.name.eq_bytes(strings, dir))
        })?;
        let id = self.index.id_at(pos);
        let d = self.slots.get_mut(id)?;
        d.refs += 1;
        Some((id, d.pod))
    }

    /// Interns `dir` (not interned yet) with one reference.
    pub(super) fn insert(
        &mut self,
        dir: &[u8],
        hash: u64,
        pod: DirPod,
        strings: &mut Strings,
    ) -> u32 {
        let sh = shape(dir);
        let name = sh.packed(strings.intern(sh.prefix, sh.suffix));
        let id = self.slots.insert(Dir {
            hash,
            name,
            refs: 1,
            pod,
        });
        self.index.insert(hash, id);
        id
    }

    pub(super) fn release(&mut self, id: u32, strings: &mut Strings) {
        let Some(d) = self.slots.get_mut(id) else {
            return;
        };
        d.refs = d.refs.saturating_sub(1);
        if d.refs > 0 {
            return;
        }
        let d = *d;
        if let Some(pos) = self.index.find(d.hash, |x| x == id) {
            self.index.remove_at(pos);
        }
        self.slots.remove(id);
        strings.release(d.name.affix);
    }

    pub(super) fn write(&self, id: u32, strings: &Strings, out: &mut Vec<u8>) {
        if let Some(d) = self.slots.get(id) {
            d.name.write(strings, out);
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tracker::tests::{Lcg, UID};

    fn round_trip(name: &[u8], strings: &mut Strings) -> Packed {
        let sh = shape(name);
        let p = sh.packed(strings.intern(sh.prefix, sh.suffix));
        let mut out = Vec::new();
        p.write(strings, &mut out);
        assert_eq!(out, name, "{:?} -> {p:?}", String::from_utf8_lossy(name));
        p
    }

    #[test]
    fn packed_names_round_trip() {
        let mut strings = Strings::default();
        let id64 = "3b1f2a9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a";
        let uid_ = UID.replace('-', "_");
        let cases: Vec<(String, u8)> = vec![
            (String::new(), K_RAW),
            ("init.scope".into(), K_RAW),
            ("a".repeat(32), K_HEX),
            ("a".repeat(31), K_RAW),
            ("a".repeat(33), K_HEX),
            ("0".repeat(100), K_HEX),
            (id64.into(), K_HEX),
            (id64[..63].into(), K_HEX),
            (id64.to_uppercase(), K_STR),
            (format!("pod{UID}"), K_UUID_DASH),
            (format!("pod{}", UID.to_uppercase()), K_STR),
            ("pod5d1e0f4b2a3c4d5e6f708192a3b4c5d6".into(), K_HEX),
            (
                format!("kubepods-burstable-pod{uid_}.slice"),
                K_UUID_UNDERSCORE,
            ),
            (format!("cri-containerd-{id64}.scope"), K_HEX),
            (format!("crio-conmon-{id64}"), K_HEX),
            (format!("{id64}:{id64}"), K_HEX),
            (format!("pod{}", &UID[..35]), K_STR),
            (format!("/kubepods/burstable/pod{UID}"), K_UUID_DASH),
            (format!("{}_{}", &UID[..8], &UID[9..]), K_STR),
            (
                "a-much-longer-name-without-any-id-in-it.service".into(),
                K_STR,
            ),
            ("x".repeat(70_000), K_STR),
            (format!("{}{id64}", "y".repeat(70_000)), K_STR),
        ];
        for (name, kind) in &cases {
            let p = round_trip(name.as_bytes(), &mut strings);
            assert_eq!(p.kind, *kind, "{name:.80}");
        }
        // Non-UTF-8 and random names over a small alphabet rich in ids.
        round_trip(b"\xff\xfe\x00pod", &mut strings);
        let alphabet = b"0123456789abcdefABCDEF-_./:xyz\xff";
        let mut rng = Lcg(11);
        for _ in 0..20_000 {
            let mut name: Vec<u8> = Vec::new();
            for _ in 0..rng.next() % 5 {
                match rng.next() % 4 {
                    0 => name.extend(format!("pod{UID}").bytes()),
                    1 => name.extend(&id64.as_bytes()[..(rng.next() % 65) as usize]),
                    2 => name.extend(uid_.bytes()),
                    _ => {
                        for _ in 0..rng.next() % 8 {
                            name.push(alphabet[(rng.next() % alphabet.len() as u64) as usize]);
                        }
                    }
                }
            }
            round_trip(&name, &mut strings);
        }
    }

    #[test]
    fn interned_strings_are_shared_and_released() {
        let mut s = Strings::default();
        let a = s.intern(b"cri-containerd-", b".scope");
        let b = s.intern(b"cri-containerd-.sc", b"ope");
        assert_eq!(a, b);
        assert_eq!(s.find(b"", b"cri-containerd-.scope"), Some(a));
        assert_eq!(s.intern(b"", b""), NO_STR);
        let c = s.intern(b"pod", b"");
        assert_ne!(a, c);
        assert_eq!(s.len(), 2);
        s.release(a);
        assert_eq!(s.get(a), b"cri-containerd-.scope");
        s.release(a);
        s.release(NO_STR);
        assert_eq!((s.len(), s.find(b"cri-containerd-", b".scope")), (1, None));
        s.release(c);
        assert_eq!((s.len(), s.slots.len()), (0, 0));
        // A freed slot is reused.
        let x = s.intern(b"x", b"");
        assert!(x == a || x == c);
        assert_eq!(s.slots.chunks.len(), 1);
    }
}
