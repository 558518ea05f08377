//! Hex digits, their values and their text: pod UIDs and container ids in cgroup names, and the
//! ids the tracker and the session format pack two digits to a byte.

/// The digits, lowercase: `DIGITS[v]` is the digit of the value `v`.
pub(crate) const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// The value of each hex digit, `0xff` for other bytes; upper-case digits count when `upper`.
/// Ids are random mixes of digits and letters, on which range tests branch unpredictably: a
/// table does not branch.
const fn table(upper: bool) -> [u8; 256] {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        if upper {
            t[b'A' as usize + i] = 10 + i as u8;
        }
        i += 1;
    }
    t
}

/// The value of each lowercase hex digit, `0xff` for other bytes.
pub(crate) const LOWER: [u8; 256] = table(false);

/// The value of each hex digit of either case, `0xff` for other bytes.
pub(crate) const ANY_CASE: [u8; 256] = table(true);

/// `c` is a lowercase hex digit.
pub(crate) fn is_lower(c: u8) -> bool {
    LOWER[usize::from(c)] < 16
}

/// All of `s` is digits of `values` ([`LOWER`] or [`ANY_CASE`]); true for an empty `s`. One
/// branch for the whole string.
pub(crate) fn all(values: &[u8; 256], s: &[u8]) -> bool {
    s.iter().fold(0u8, |acc, &c| acc | values[usize::from(c)]) < 16
}

/// Up to two lowercase digits (validated) as one byte, the first in the high half; a lone last
/// digit fills the high half.
pub(crate) fn pack_pair(pair: &[u8]) -> u8 {
    let value = |c: &u8| LOWER[usize::from(*c)] & 15;
    pair.first().map_or(0, value) << 4 | pair.get(1).map_or(0, value)
}

/// The two lowercase digits of `byte`, high half first.
pub(crate) fn digits_of(byte: u8) -> [u8; 2] {
    [
        DIGITS[usize::from(byte >> 4)],
        DIGITS[usize::from(byte & 15)],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_packing_and_text() {
        assert!(DIGITS.iter().all(|&c| is_lower(c)));
        assert!(!is_lower(b'A') && !is_lower(b'g') && !is_lower(b'-'));
        assert!(all(&ANY_CASE, b"0aF9") && !all(&LOWER, b"0aF9"));
        assert!(all(&LOWER, b""));
        assert_eq!(pack_pair(b"a7"), 0xa7);
        assert_eq!(pack_pair(b"c"), 0xc0);
        assert_eq!(digits_of(0xa7), *b"a7");
        for b in 0..=255u8 {
            assert_eq!(pack_pair(&digits_of(b)), b);
        }
    }
}
