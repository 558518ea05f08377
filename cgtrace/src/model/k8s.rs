//! Kubernetes attribution from a cgroup path alone.
//!
//! The kubelet names pod cgroups after the pod UID and QoS class, and container
//! runtimes name container cgroups after the container id, so a cgroup path is
//! enough to tell which pod and container a cgroup belongs to. Both kubelet cgroup
//! drivers are understood:
//!
//! * cgroupfs: `/kubepods[/burstable|/besteffort]/pod<uid>/<container>`
//! * systemd: `/kubepods.slice[/kubepods-<qos>.slice]/kubepods[-<qos>]-pod<uid_>.slice/<runtime>-<id>.scope`
//!
//! Pod and namespace names are not in the path; [`PodLogIndex`] recovers them
//! from the kubelet's `/var/log/pods/<namespace>_<name>_<uid>` directories.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;

use crate::format::hex;

/// Kubernetes QoS class of a pod, as encoded in its cgroup path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Qos {
    /// Pod cgroup sits directly under `kubepods`.
    Guaranteed,
    /// Pod cgroup sits under `kubepods/burstable`.
    Burstable,
    /// Pod cgroup sits under `kubepods/besteffort`.
    Besteffort,
}

impl Qos {
    /// The classes in display order, then `None` ("not a pod" or "not attributed"): what
    /// [`Qos::index`] numbers.
    pub const CLASSES: [Option<Qos>; 4] = [
        Some(Qos::Guaranteed),
        Some(Qos::Burstable),
        Some(Qos::Besteffort),
        None,
    ];

    /// Lowercase name, matching the serde representation.
    pub fn as_str(self) -> &'static str {
        match self {
            Qos::Guaranteed => "guaranteed",
            Qos::Burstable => "burstable",
            Qos::Besteffort => "besteffort",
        }
    }

    /// The name of a class as used in tags, labels and output: `none` for `None`.
    pub fn name(qos: Option<Qos>) -> &'static str {
        qos.map_or("none", Qos::as_str)
    }

    /// The position of a class in [`Qos::CLASSES`].
    pub fn index(qos: Option<Qos>) -> usize {
        match qos {
            Some(Qos::Guaranteed) => 0,
            Some(Qos::Burstable) => 1,
            Some(Qos::Besteffort) => 2,
            None => 3,
        }
    }
}

/// What a cgroup path says about the pod and container owning it.
///
/// Either empty (not a pod cgroup) or `pod_uid` and `qos` are both set;
/// `runtime` is only ever set together with `container_id`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PodRef {
    /// Pod UID, lowercase: dashed `8-4-4-4-12` form, or 32 hex digits for static pods
    /// (whose UID is a hash computed by the kubelet).
    pub pod_uid: Option<String>,
    /// QoS class of the pod.
    pub qos: Option<Qos>,
    /// The runtime's container id (usually 64 hex digits), for container cgroups.
    pub container_id: Option<String>,
    /// `"containerd"`, `"cri-o"`, `"docker"` or `"podman"`; `None` when the cgroup
    /// name does not say (cgroupfs-driver leaves named by the bare id).
    pub runtime: Option<&'static str>,
}

impl PodRef {
    /// True when the path was not attributed to any pod. (tests only)
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.pod_uid.is_none()
            && self.qos.is_none()
            && self.container_id.is_none()
            && self.runtime.is_none()
    }
}

/// Runtime names as they appear in cgroup names, and what we report for them.
const RUNTIMES: [(&[u8], &str); 4] = [
    (b"cri-containerd", "containerd"),
    (b"crio", "cri-o"),
    (b"docker", "docker"),
    (b"libpod", "podman"),
];

/// Parse a cgroup path (relative to its hierarchy root, e.g.
/// `"/kubepods/burstable/pod<uid>/<id>"`) into a [`PodRef`].
///
/// The kubelet's cgroups may sit under any prefix (`--cgroup-root`, nested slices).
/// Paths that name no valid pod give an empty `PodRef`; components below the
/// container cgroup (sub-cgroups created inside a container) are ignored. Never panics.
pub fn parse_path(path: &[u8]) -> PodRef {
    match match_path(path) {
        Some(m) => PodRef {
            pod_uid: Some(uid_string(m.uid)),
            qos: Some(m.qos),
            container_id: m.container.map(|(_, id)| uid_string(id)),
            runtime: m.container.and_then(|(rt, _)| rt),
        },
        None => PodRef::default(),
    }
}

/// What a cgroup path says about its pod, borrowed from the path (no allocation): what
/// [`parse_path`] returns, before the UID and container id are made canonical strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PodMatch<'a> {
    /// The pod UID as written in the path (validated by [`valid_uid`]: any case, `-` or `_`).
    pub uid: &'a [u8],
    pub qos: Qos,
    /// The runtime (if the name says) and the container id as written (12 to 128 hex digits).
    pub container: Option<(Option<&'static str>, &'a [u8])>,
    /// Nothing follows the pod's component: the pod of any path below is the same, and its
    /// container is what [`is_container`] says of the next component.
    pub last: bool,
}

/// [`parse_path`] without allocating: `None` when the path names no pod.
pub(crate) fn match_path(path: &[u8]) -> Option<PodMatch<'_>> {
    let mut comps = path.split(|&b| b == b'/').filter(|c| !c.is_empty());
    let (mut prev2, mut prev): (&[u8], &[u8]) = (b"", b"");
    while let Some(comp) = comps.next() {
        // `<pod slice>:<runtime>:<id>` carries the container in the same component.
        let (head, colon) = match comp.iter().position(|&b| b == b':') {
            Some(i) => (&comp[..i], true),
            None => (comp, false),
        };
        if let Some((uid, qos)) = pod_dir(prev2, prev, head).or_else(|| pod_slice(head)) {
            let leaf = if colon { Some(comp) } else { comps.next() };
            return Some(PodMatch {
                uid,
                qos,
                container: leaf.and_then(container),
                last: leaf.is_none(),
            });
        }
        (prev2, prev) = (prev, comp);
    }
    None
}

/// The pod UID (canonical, [`uid_string`]) when `path` is a pod's own cgroup: a pod's
/// component ([`match_path`]) with nothing below it.
pub(crate) fn pod_cgroup_uid(path: &[u8]) -> Option<String> {
    match_path(path)
        .filter(|m| m.last)
        .map(|m| uid_string(m.uid))
}

/// cgroupfs driver: `pod<uid>` directly under `kubepods` (guaranteed) or under
/// `kubepods/burstable` / `kubepods/besteffort`.
fn pod_dir<'a>(prev2: &[u8], prev: &[u8], comp: &'a [u8]) -> Option<(&'a [u8], Qos)> {
    let qos = match (prev2, prev) {
        (_, KUBEPODS) => Qos::Guaranteed,
        (KUBEPODS, level) => QOS_LEVELS.iter().find(|(_, n)| *n == level)?.0,
        _ => return None,
    };
    let uid = comp.strip_prefix(b"pod")?;
    valid_uid(uid).then_some((uid, qos))
}

/// The kubelet's top cgroup, `kubepods` (cgroupfs driver; `kubepods.slice` with systemd).
const KUBEPODS: &[u8] = b"kubepods";

/// The QoS classes with a cgroup of their own under `kubepods`, by its name with the cgroupfs
/// driver (`kubepods-<name>.slice` with systemd); guaranteed pods sit in `kubepods` itself.
const QOS_LEVELS: [(Qos, &[u8]); 2] = [
    (Qos::Burstable, b"burstable"),
    (Qos::Besteffort, b"besteffort"),
];

/// The cgroup named `leaf` is `kubepods` itself (either driver).
pub(crate) fn is_kubepods(leaf: &[u8]) -> bool {
    leaf == KUBEPODS || leaf.strip_suffix(b".slice") == Some(KUBEPODS)
}

/// The QoS class whose own cgroup under `kubepods` is named `leaf` (`burstable` or
/// `kubepods-burstable.slice`, likewise for besteffort).
pub(crate) fn qos_level(leaf: &[u8]) -> Option<Qos> {
    let systemd = leaf
        .strip_prefix(KUBEPODS)
        .and_then(|r| r.strip_prefix(b"-"))
        .and_then(|r| r.strip_suffix(b".slice"));
    let name = systemd.unwrap_or(leaf);
    QOS_LEVELS.iter().find(|(_, n)| *n == name).map(|(q, _)| *q)
}

/// systemd driver: `[<root>-]kubepods[-burstable|-besteffort]-pod<uid_>.slice`.
/// The slice name is self-describing, so its parents are not checked.
fn pod_slice(comp: &[u8]) -> Option<(&[u8], Qos)> {
    let name = comp.strip_suffix(b".slice")?;
    let dash = name.iter().rposition(|&b| b == b'-')?;
    let uid = name[dash + 1..].strip_prefix(b"pod")?;
    if !valid_uid(uid) {
        return None;
    }
    let parent = &name[..dash];
    let (rest, qos) = QOS_LEVELS
        .iter()
        .find_map(|&(q, n)| Some((parent.strip_suffix(n)?.strip_suffix(b"-")?, q)))
        .unwrap_or((parent, Qos::Guaranteed));
    let root = rest.strip_suffix(KUBEPODS)?;
    (root.is_empty() || root.ends_with(b"-")).then_some((uid, qos))
}

/// A container cgroup name: `<anything>:<runtime>:<id>`, `<runtime>-<id>[.scope]`
/// or a bare hex id. `crio-conmon-<id>` (and `libpod-conmon-<id>`) are runtime
/// monitors, not containers.
fn container(leaf: &[u8]) -> Option<(Option<&'static str>, &[u8])> {
    let mut parts = leaf.rsplitn(3, |&b| b == b':');
    if let (Some(id), Some(rt), Some(_)) = (parts.next(), parts.next(), parts.next()) {
        let runtime = RUNTIMES.iter().find(|(n, _)| *n == rt)?.1;
        return Some((Some(runtime), hex_id(id)?));
    }
    let name = leaf.strip_suffix(b".scope").unwrap_or(leaf);
    for (prefix, runtime) in RUNTIMES {
        if let Some(id) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix(b"-")) {
            if id.starts_with(b"conmon-") {
                return None;
            }
            return Some((Some(runtime), hex_id(id)?));
        }
    }
    Some((None, hex_id(leaf)?))
}

/// The cgroup name `leaf`, right below a pod's, names a container.
pub(crate) fn is_container(leaf: &[u8]) -> bool {
    container(leaf).is_some()
}

/// The container id a container cgroup's own leaf name carries ([`is_container`]); `None` for
/// other names, such as cgroups inside a container (`init.scope`) and runtime monitors
/// (`crio-conmon-<id>.scope`).
pub(crate) fn container_id(leaf: &[u8]) -> Option<&[u8]> {
    container(leaf).map(|(_, id)| id)
}

/// A container id: 12 to 128 hex digits (any case).
fn hex_id(id: &[u8]) -> Option<&[u8]> {
    ((12..=128).contains(&id.len()) && all_hex(id)).then_some(id)
}

/// All of `s` is hex digits (either case); true for an empty `s`.
fn all_hex(s: &[u8]) -> bool {
    hex::all(&hex::ANY_CASE, s)
}

/// Positions of the separators in a dashed UUID.
const UUID_SEPS: [usize; 4] = [8, 13, 18, 23];

/// A pod UID: a UUID with `-` (or, in systemd unit names, `_`) separators, or the
/// 32 hex digits the kubelet uses for static pods (any case).
pub(crate) fn valid_uid(s: &[u8]) -> bool {
    match s.len() {
        32 => all_hex(s),
        36 => {
            let sep = s[8];
            (sep == b'-' || sep == b'_')
                && UUID_SEPS.iter().all(|&i| s[i] == sep)
                && all_hex(&s[..8])
                && all_hex(&s[9..13])
                && all_hex(&s[14..18])
                && all_hex(&s[19..23])
                && all_hex(&s[24..])
        }
        _ => false,
    }
}

/// One byte of a pod UID or container id as matched in a path, in canonical form: lowercase,
/// `_` (systemd slice names) as `-`.
pub(crate) fn id_byte(b: u8) -> u8 {
    if b == b'_' {
        b'-'
    } else {
        b.to_ascii_lowercase()
    }
}

/// A valid UID ([`valid_uid`]) or container id in its canonical form ([`id_byte`]).
pub(crate) fn uid_string(s: &[u8]) -> String {
    s.iter().map(|&b| char::from(id_byte(b))).collect()
}

/// A pod UID as a number: its 128 bits and whether it is a dashed UUID (`true`) or the 32
/// hex digits of a static pod. Two UIDs have the same key exactly when they have the same
/// canonical form ([`uid_string`]). `None` for anything [`valid_uid`] rejects.
pub(crate) fn uid_key(s: &[u8]) -> Option<(u128, bool)> {
    if !valid_uid(s) {
        return None;
    }
    let dashed = s.len() == 36;
    let v = s
        .iter()
        .enumerate()
        .filter(|&(i, _)| !dashed || !UUID_SEPS.contains(&i))
        .fold(0u128, |v, (_, &c)| {
            v << 4 | u128::from(hex::ANY_CASE[usize::from(c)] & 15)
        });
    Some((v, dashed))
}

/// A pod UID: a UUID with `-` (or, in systemd unit names, `_`) separators, or the
/// 32 hex digits the kubelet uses for static pods. Returned lowercase and dashed.
fn parse_uid(s: &[u8]) -> Option<String> {
    valid_uid(s).then(|| uid_string(s))
}

/// Pod namespace and name by UID, from the kubelet's pod log directories
/// (`/var/log/pods/<namespace>_<name>_<uid>`, or `<uid>` alone with old kubelets).
#[derive(Clone, Debug, Default)]
pub struct PodLogIndex {
    pods: HashMap<String, (String, String)>,
    /// UIDs of `<uid>` directories, which name no pod.
    unnamed: HashSet<String>,
}

impl PodLogIndex {
    /// Reads the directory names under `dir` (e.g. `/var/log/pods`).
    /// A missing directory gives an empty index, not an error; names that are not
    /// UTF-8 or not of the form `<namespace>_<name>_<uid>` (or `<uid>`) are skipped.
    pub fn load(dir: &Path) -> io::Result<PodLogIndex> {
        match PodLogIndex::read(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(PodLogIndex::default()),
            r => r,
        }
    }

    /// [`PodLogIndex::load`], for which a missing directory is an error too.
    pub(crate) fn read(dir: &Path) -> io::Result<PodLogIndex> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(PodLogIndex::from_names(names))
    }

    /// Builds the index from directory names of the form `<namespace>_<name>_<uid>` (split at
    /// the first and last `_`) or `<uid>`, skipping anything else.
    pub fn from_names<I: IntoIterator<Item = String>>(names: I) -> PodLogIndex {
        let mut idx = PodLogIndex::default();
        for n in names {
            let Some((ns, rest)) = n.split_once('_') else {
                idx.unnamed.extend(parse_uid(n.as_bytes()));
                continue;
            };
            let Some((name, uid)) = rest.rsplit_once('_') else {
                continue;
            };
            if let Some(uid) = parse_uid(uid.as_bytes())
                && !ns.is_empty()
                && !name.is_empty()
            {
                idx.pods.insert(uid, (ns.to_owned(), name.to_owned()));
            }
        }
        idx
    }

    /// The pod of `pod_uid` (canonical form, [`uid_string`]) has a log directory, named or not.
    pub(crate) fn contains(&self, pod_uid: &str) -> bool {
        self.pods.contains_key(pod_uid) || self.unnamed.contains(pod_uid)
    }

    /// `(namespace, name)` for a pod UID (dashed form; case and `_` separators are tolerated).
    pub fn lookup(&self, pod_uid: &str) -> Option<(&str, &str)> {
        let found = match self.pods.get(pod_uid) {
            Some(found) => found,
            None => self.pods.get(&parse_uid(pod_uid.as_bytes())?)?,
        };
        Some((&found.0, &found.1))
    }

    /// Number of pods indexed. (tests only)
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// True when no pods are indexed. (tests only)
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f3c1a2b-4d5e-4f60-8a9b-0c1d2e3f4a5b";
    const UID_: &str = "0f3c1a2b_4d5e_4f60_8a9b_0c1d2e3f4a5b";
    const ID: &str = "3b1f2a9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a";

    fn pod(qos: Qos, runtime: Option<&'static str>, id: Option<&str>) -> PodRef {
        PodRef {
            pod_uid: Some(UID.into()),
            qos: Some(qos),
            container_id: id.map(Into::into),
            runtime,
        }
    }

    #[test]
    fn table() {
        use Qos::*;
        let id = Some(ID);
        let cases: Vec<(String, PodRef)> = vec![
            // cgroupfs driver, all QoS classes
            (
                format!("/kubepods/burstable/pod{UID}/{ID}"),
                pod(Burstable, None, id),
            ),
            (
                format!("/kubepods/besteffort/pod{UID}/{ID}"),
                pod(Besteffort, None, id),
            ),
            (
                format!("/kubepods/pod{UID}/{ID}"),
                pod(Guaranteed, None, id),
            ),
            (
                format!("/kubepods/burstable/pod{UID}"),
                pod(Burstable, None, None),
            ),
            (format!("/kubepods/pod{UID}/"), pod(Guaranteed, None, None)),
            (
                format!(
                    "kubepods/burstable/pod{}/{}",
                    UID.to_uppercase(),
                    ID.to_uppercase()
                ),
                pod(Burstable, None, id),
            ),
            (
                format!("/kubepods/burstable/pod{UID}/{ID}/init.scope"),
                pod(Burstable, None, id),
            ),
            (
                format!("/kubepods/burstable/pod{UID}/not-a-container"),
                pod(Burstable, None, None),
            ),
            (
                format!("/kubepods/burstable/pod{UID}/abc123"),
                pod(Burstable, None, None),
            ),
            // cgroupfs driver with runtime-prefixed leaves
            (
                format!("/kubepods/pod{UID}/cri-containerd-{ID}"),
                pod(Guaranteed, Some("containerd"), id),
            ),
            (
                format!("/kubepods/besteffort/pod{UID}/crio-{ID}"),
                pod(Besteffort, Some("cri-o"), id),
            ),
            (
                format!("/kubepods/besteffort/pod{UID}/crio-conmon-{ID}"),
                pod(Besteffort, None, None),
            ),
            (
                format!("/kubepods/burstable/pod{UID}/docker-{ID}"),
                pod(Burstable, Some("docker"), id),
            ),
            // systemd driver, all QoS classes and runtimes
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
                ),
                pod(Burstable, Some("containerd"), id),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{ID}.scope"
                ),
                pod(Besteffort, Some("cri-o"), id),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{ID}.scope"),
                pod(Guaranteed, None, None),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_}.slice/docker-{ID}.scope"),
                pod(Guaranteed, Some("docker"), id),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_}.slice/libpod-{ID}.scope"),
                pod(Guaranteed, Some("podman"), id),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_}.slice/libpod-conmon-{ID}.scope"),
                pod(Guaranteed, None, None),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice"
                ),
                pod(Besteffort, None, None),
            ),
            // colon form
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice:cri-containerd:{ID}"
                ),
                pod(Burstable, Some("containerd"), id),
            ),
            (
                format!("/kubepods-pod{UID_}.slice:crio:{ID}"),
                pod(Guaranteed, Some("cri-o"), id),
            ),
            (
                format!("/kubepods/besteffort/pod{UID}:docker:{ID}"),
                pod(Besteffort, Some("docker"), id),
            ),
            (
                format!("/kubepods/besteffort/pod{UID}/x:y:cri-containerd:{ID}"),
                pod(Besteffort, Some("containerd"), id),
            ),
            (
                format!("/kubepods/besteffort/pod{UID}/x:unknown:{ID}"),
                pod(Besteffort, None, None),
            ),
            // prefixes
            (
                format!("/customroot/kubepods/burstable/pod{UID}/{ID}"),
                pod(Burstable, None, id),
            ),
            (
                format!("/cgtrace-test-1234/kubepods/besteffort/pod{UID}/{ID}"),
                pod(Besteffort, None, id),
            ),
            (
                format!(
                    "/system.slice/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"
                ),
                pod(Guaranteed, Some("containerd"), id),
            ),
            (
                format!(
                    "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
                ),
                pod(Burstable, Some("containerd"), id),
            ),
            // static pod (hash UID)
            (
                "/kubepods/burstable/pod5d1e0f4b2a3c4d5e6f708192a3b4c5d6/".into(),
                PodRef {
                    pod_uid: Some("5d1e0f4b2a3c4d5e6f708192a3b4c5d6".into()),
                    qos: Some(Burstable),
                    ..Default::default()
                },
            ),
            // not pods
            ("/".into(), PodRef::default()),
            ("".into(), PodRef::default()),
            ("/kubepods".into(), PodRef::default()),
            ("/kubepods/burstable".into(), PodRef::default()),
            (
                "/kubepods.slice/kubepods-burstable.slice".into(),
                PodRef::default(),
            ),
            ("/system.slice/ssh.service".into(), PodRef::default()),
            (
                "/user.slice/user-0.slice/session-1.scope".into(),
                PodRef::default(),
            ),
            (
                "/libcontainer_1234_systemd_test_default.slice".into(),
                PodRef::default(),
            ),
            (
                format!("/system.slice/docker-{ID}.scope"),
                PodRef::default(),
            ),
            (format!("/pod{UID}/{ID}"), PodRef::default()),
            (format!("/kubepods/other/pod{UID}/{ID}"), PodRef::default()),
            (
                format!("/notkubepods-pod{UID_}.slice/{ID}"),
                PodRef::default(),
            ),
            // invalid uids
            (
                format!("/kubepods/burstable/pod{}/{ID}", &UID[1..]),
                PodRef::default(),
            ),
            (
                format!("/kubepods/burstable/pod{}g/{ID}", &UID[..35]),
                PodRef::default(),
            ),
            (
                format!("/kubepods/pod{}/{ID}", UID.replacen('-', "_", 1)),
                PodRef::default(),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-pod{}.slice",
                    UID_.replacen('_', "-", 1)
                ),
                PodRef::default(),
            ),
        ];
        for (path, want) in cases {
            assert_eq!(parse_path(path.as_bytes()), want, "path {path:?}");
        }
    }

    #[test]
    fn non_utf8_and_long_paths() {
        assert!(parse_path(b"/kubepods/\xff\xfe/pod\x80").is_empty());
        let mut p = format!("/kubepods/burstable/pod{UID}/").into_bytes();
        p.extend_from_slice(b"\xffdocker-\xff");
        assert_eq!(parse_path(&p), pod(Qos::Burstable, None, None));
        let long = "/a".repeat(100_000);
        assert!(parse_path(long.as_bytes()).is_empty());
        let long_hex = format!("/kubepods/pod{UID}/{}", "a".repeat(100_000));
        assert_eq!(
            parse_path(long_hex.as_bytes()),
            pod(Qos::Guaranteed, None, None)
        );
        let prefixed = format!("{long}/kubepods/pod{UID}/{ID}");
        assert_eq!(
            parse_path(prefixed.as_bytes()),
            pod(Qos::Guaranteed, None, Some(ID))
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize
        };
        const ALPHABET: &[u8] = b"/:-_.kubepodsliceburstablepod0123456789abcdefABCDEF\xff\x00 ";
        let seeds = [
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
            ),
            format!("/kubepods/besteffort/pod{UID}/crio-conmon-{ID}"),
            format!("/kubepods-pod{UID_}.slice:docker:{ID}"),
        ];
        for round in 0..20_000 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                (0..next() % 120)
                    .map(|_| ALPHABET[next() % ALPHABET.len()])
                    .collect()
            } else {
                let mut b = seeds[next() % seeds.len()].clone().into_bytes();
                for _ in 0..1 + next() % 4 {
                    let i = next() % b.len();
                    match next() % 3 {
                        0 => b[i] = ALPHABET[next() % ALPHABET.len()],
                        1 => b.truncate(i),
                        _ => b.insert(i, (next() % 256) as u8),
                    }
                    if b.is_empty() {
                        break;
                    }
                }
                b
            };
            let r = parse_path(&bytes);
            if let Some(uid) = &r.pod_uid {
                assert!(uid.len() == 36 || uid.len() == 32, "{bytes:?} -> {r:?}");
            }
            assert_eq!(r.pod_uid.is_some(), r.qos.is_some());
            assert!(r.runtime.is_none() || r.container_id.is_some());
        }
    }

    #[test]
    fn qos_names() {
        for q in [Qos::Guaranteed, Qos::Burstable, Qos::Besteffort] {
            assert_eq!(format!("{q:?}").to_lowercase(), q.as_str());
            assert_eq!(Qos::name(Some(q)), q.as_str());
        }
        assert_eq!(Qos::name(None), "none");
        for (i, q) in Qos::CLASSES.into_iter().enumerate() {
            assert_eq!(Qos::index(q), i);
        }
    }

    #[test]
    fn log_index_from_names() {
        let idx = PodLogIndex::from_names([
            format!("kube-system_coredns-abc_{UID}"),
            "default_web_5d1e0f4b2a3c4d5e6f708192a3b4c5d6".into(),
            "odd_name_with_underscores_1f3c1a2b-4d5e-4f60-8a9b-0c1d2e3f4a5b".into(),
            "default_nouid".into(),
            "default_web_not-a-uid".into(),
            format!("_web_{UID}x"),
            format!("ns_{UID}"),
            String::new(),
        ]);
        assert_eq!(idx.len(), 3);
        assert!(!idx.is_empty());
        assert_eq!(idx.lookup(UID), Some(("kube-system", "coredns-abc")));
        assert_eq!(
            idx.lookup(&UID.to_uppercase()),
            Some(("kube-system", "coredns-abc"))
        );
        assert_eq!(idx.lookup(UID_), Some(("kube-system", "coredns-abc")));
        assert_eq!(
            idx.lookup("5d1e0f4b2a3c4d5e6f708192a3b4c5d6"),
            Some(("default", "web"))
        );
        assert_eq!(
            idx.lookup("1f3c1a2b-4d5e-4f60-8a9b-0c1d2e3f4a5b"),
            Some(("odd", "name_with_underscores"))
        );
        assert_eq!(idx.lookup("00000000-0000-0000-0000-000000000000"), None);
        assert_eq!(idx.lookup("garbage"), None);
    }

    #[test]
    fn log_index_knows_unnamed_uids_and_read_wants_the_directory() {
        let idx = PodLogIndex::from_names([UID.to_uppercase(), format!("ns_{UID}")]);
        assert!(idx.contains(UID));
        assert_eq!(idx.lookup(UID), None);
        assert!(!idx.contains("00000000-0000-0000-0000-000000000000"));
        let missing = std::env::temp_dir().join(format!("cgtrace-k8s-none-{}", std::process::id()));
        assert!(PodLogIndex::read(&missing).is_err());
    }

    #[test]
    fn qos_levels_and_kubepods() {
        for (leaf, qos) in [
            (&b"burstable"[..], Some(Qos::Burstable)),
            (b"kubepods-besteffort.slice", Some(Qos::Besteffort)),
            (b"kubepods-guaranteed.slice", None),
            (b"kubepods", None),
        ] {
            assert_eq!(qos_level(leaf), qos, "{leaf:?}");
        }
        assert!(is_kubepods(b"kubepods") && is_kubepods(b"kubepods.slice"));
        assert!(!is_kubepods(b"kubepods-burstable.slice"));
        assert_eq!(
            pod_cgroup_uid(format!("/kubepods/burstable/pod{UID}").as_bytes()).as_deref(),
            Some(UID)
        );
        assert_eq!(
            pod_cgroup_uid(format!("/kubepods/burstable/pod{UID}/{ID}").as_bytes()),
            None
        );
    }

    #[test]
    fn log_index_load() -> io::Result<()> {
        let dir = std::env::temp_dir().join(format!("cgtrace-k8s-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(PodLogIndex::load(&dir)?.is_empty());
        std::fs::create_dir_all(dir.join(format!("default_nginx_{UID}")))?;
        std::fs::create_dir_all(dir.join("not-a-pod"))?;
        let idx = PodLogIndex::load(&dir);
        std::fs::remove_dir_all(&dir)?;
        let idx = idx?;
        assert_eq!(idx.len(), 1);
        assert_eq!(idx.lookup(UID), Some(("default", "nginx")));
        Ok(())
    }
}
