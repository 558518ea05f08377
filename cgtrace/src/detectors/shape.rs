//! Name shapes: a cgroup leaf name with its ids, numbers and UUIDs replaced by placeholders, so
//! `libcontainer_4242_systemd_test_default.slice` and `..._4243_...` count as one shape.
use crate::model::k8s;

/// Longest name shape kept, in bytes.
pub(super) const MAX_SHAPE_LEN: usize = 200;
/// Hex runs this long inside a name are ids.
const LONG_HEX: usize = 16;

/// A UUID (`-` or `_` separated, any case) starts at `p` of `b` and ends a token.
fn uuid_at(b: &[u8], p: usize) -> bool {
    b.get(p..p + 36).is_some_and(k8s::valid_uid)
        && b.get(p + 36).is_none_or(|c| !c.is_ascii_alphanumeric())
}

/// Writes a leaf name's shape into `out`: UUIDs (`-` or `_` separated) → `<uid>`; alphanumeric
/// tokens of digits → `<n>`; tokens of 8+ hex digits → `<hex>`; inside other tokens, hex runs of
/// 16+ → `<hex>` (a short head before a 32- or 64-digit id stays, so `pod<32 hex>` → `pod<hex>`)
/// and digit runs → `<n>`. Other bytes are kept (invalid UTF-8 as U+FFFD); at most 200 bytes.
pub fn normalise_leaf(leaf: &[u8], out: &mut String) {
    out.clear();
    let n = leaf.len();
    let mut i = 0;
    while i < n && out.len() < MAX_SHAPE_LEN {
        if !leaf[i].is_ascii_alphanumeric() {
            let e = leaf[i..]
                .iter()
                .position(u8::is_ascii_alphanumeric)
                .map_or(n, |k| i + k);
            out.push_str(&String::from_utf8_lossy(&leaf[i..e]));
            i = e;
            continue;
        }
        let k = leaf[i..]
            .iter()
            .position(|c| !c.is_ascii_alphanumeric())
            .map_or(n, |e| i + e);
        // A UUID's first separator ends an alphanumeric run 8 bytes after the UUID starts.
        if k >= i + 8 && uuid_at(leaf, k - 8) {
            shape_token(&leaf[i..k - 8], out);
            out.push_str("<uid>");
            i = k - 8 + 36;
            continue;
        }
        shape_token(&leaf[i..k], out);
        i = k;
    }
    if out.len() > MAX_SHAPE_LEN {
        let mut cut = MAX_SHAPE_LEN;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
}

/// One alphanumeric token of a leaf name.
fn shape_token(t: &[u8], out: &mut String) {
    if t.is_empty() {
        return;
    }
    if t.iter().all(u8::is_ascii_digit) {
        out.push_str("<n>");
        return;
    }
    if t.len() >= 8 && t.iter().all(u8::is_ascii_hexdigit) {
        out.push_str("<hex>");
        return;
    }
    let mut m = 0;
    while m < t.len() {
        if !t[m].is_ascii_hexdigit() {
            out.push(char::from(t[m]));
            m += 1;
            continue;
        }
        let r = t[m..]
            .iter()
            .position(|c| !c.is_ascii_hexdigit())
            .map_or(t.len(), |e| m + e);
        let len = r - m;
        if len >= LONG_HEX {
            let head = if m > 0 {
                [32, 64]
                    .into_iter()
                    .find(|&id| len > id && len - id <= 4)
                    .map_or(0, |id| len - id)
            } else {
                0
            };
            collapse_digits(&t[m..m + head], out);
            out.push_str("<hex>");
        } else {
            collapse_digits(&t[m..r], out);
        }
        m = r;
    }
}

fn collapse_digits(t: &[u8], out: &mut String) {
    let mut in_digits = false;
    for &c in t {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push_str("<n>");
            }
            in_digits = true;
        } else {
            out.push(char::from(c));
            in_digits = false;
        }
    }
}
