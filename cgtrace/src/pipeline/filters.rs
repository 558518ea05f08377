//! `--controller`, `--path-prefix` and `--subtree`: one meaning on every path.
//!
//! The pipeline applies these filters in user space to every event, live or replayed, whatever
//! the tier and the tracepoint kind. The filters the probes set in the kernel are only an
//! optimisation: they may let more through (the classic tracepoints turn `--subtree /kubepods`
//! into the byte prefix `/kubepods`, which `/kubepods.slice` passes too), never less.
use serde::{Deserialize, Serialize};

use crate::kernel::hierarchy::{Hierarchies, HierarchyError};

/// The filters as the user gave them (and as a session header records them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filters {
    /// Only hierarchies holding one of these controllers (`unified` for v2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub controllers: Vec<String>,
    /// Only cgroups whose path (relative to the hierarchy root) starts with these bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Only cgroups at or below this cgroup path: the path itself, or it followed by `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<String>,
}

impl Filters {
    /// No filter at all.
    pub fn is_empty(&self) -> bool {
        self == &Filters::default()
    }

    /// `--subtree` in its one form: no trailing `/`; the root is `/`.
    fn subtree_bytes(&self) -> Option<Vec<u8>> {
        self.subtree.as_ref().map(|s| {
            let t = s.trim_end_matches('/');
            if t.is_empty() {
                b"/".to_vec()
            } else {
                t.as_bytes().to_vec()
            }
        })
    }

    /// Resolves controller names against the hierarchies the events come from.
    pub fn compile(&self, hierarchies: &Hierarchies) -> Result<FilterSet, HierarchyError> {
        let hierarchy_ids = if self.controllers.is_empty() {
            None
        } else {
            Some(hierarchies.select(&self.controllers)?)
        };
        Ok(FilterSet {
            hierarchy_ids,
            path_prefix: self.path_prefix.as_ref().map(|p| p.as_bytes().to_vec()),
            subtree: self.subtree_bytes(),
        })
    }
}

/// [`Filters`] compiled for one set of hierarchies: what the pipeline asks of each event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterSet {
    hierarchy_ids: Option<Vec<u32>>,
    path_prefix: Option<Vec<u8>>,
    subtree: Option<Vec<u8>>,
}

impl FilterSet {
    /// Whether a cgroup of hierarchy `hierarchy_id` at `path` passes.
    pub fn passes(&self, hierarchy_id: u32, path: &[u8]) -> bool {
        self.passes_hierarchy(hierarchy_id) && self.passes_path(path)
    }

    pub fn passes_hierarchy(&self, hierarchy_id: u32) -> bool {
        self.hierarchy_ids
            .as_ref()
            .is_none_or(|ids| ids.contains(&hierarchy_id))
    }

    pub fn passes_path(&self, path: &[u8]) -> bool {
        if let Some(p) = &self.path_prefix
            && !path.starts_with(p)
        {
            return false;
        }
        match &self.subtree {
            None => true,
            Some(s) if s.as_slice() == b"/" => true,
            Some(s) => {
                path == s.as_slice() || (path.starts_with(s) && path.get(s.len()) == Some(&b'/'))
            }
        }
    }

    /// Whether any path filter is set (events without a known path cannot be judged by it).
    pub fn filters_paths(&self) -> bool {
        self.path_prefix.is_some() || self.subtree.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(f: Filters) -> FilterSet {
        f.compile(&Hierarchies::default()).unwrap_or_default()
    }

    #[test]
    fn subtree_has_a_slash_boundary() {
        let s = set(Filters {
            subtree: Some("/kubepods/".into()),
            ..Filters::default()
        });
        assert!(s.passes_path(b"/kubepods"));
        assert!(s.passes_path(b"/kubepods/burstable/pod1"));
        assert!(!s.passes_path(b"/kubepods.slice"));
        assert!(!s.passes_path(b"/kubepods.slice/kubepods-burstable.slice"));
        assert!(!s.passes_path(b"/"));
    }

    #[test]
    fn root_subtree_passes_everything() {
        let s = set(Filters {
            subtree: Some("/".into()),
            ..Filters::default()
        });
        assert!(s.passes_path(b"/"));
        assert!(s.passes_path(b"/anything"));
    }

    #[test]
    fn path_prefix_is_a_byte_prefix() {
        let s = set(Filters {
            path_prefix: Some("/kubepods".into()),
            ..Filters::default()
        });
        assert!(s.passes_path(b"/kubepods.slice"));
        assert!(s.passes_path(b"/kubepods/x"));
        assert!(!s.passes_path(b"/system.slice"));
    }

    #[test]
    fn both_must_pass() {
        let s = set(Filters {
            path_prefix: Some("/kubepods/burst".into()),
            subtree: Some("/kubepods".into()),
            ..Filters::default()
        });
        assert!(s.passes_path(b"/kubepods/burstable"));
        assert!(!s.passes_path(b"/kubepods/besteffort"));
    }

    #[test]
    fn recorded_form_round_trips() {
        let f = Filters {
            controllers: vec!["memory".into()],
            path_prefix: None,
            subtree: Some("/kubepods".into()),
        };
        let j = serde_json::to_string(&f).unwrap_or_default();
        assert_eq!(j, r#"{"controllers":["memory"],"subtree":"/kubepods"}"#);
        let back: Filters = serde_json::from_str(&j).unwrap_or_default();
        assert_eq!(back, f);
        assert!(Filters::default().is_empty());
    }
}
