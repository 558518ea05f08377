//! Escaping untrusted bytes (cgroup names can be chosen by whoever creates the cgroup) for the
//! terminal and for JSON.
use std::io::{self, Write};

/// Unicode bidirectional-text controls (embeddings, overrides, isolates, marks): they reorder
/// what follows on a terminal, so a name could make other text read differently.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

/// Writes `b` for a terminal, the one policy for all terminal text: printable UTF-8 as is; `\n`,
/// `\t`, `\r`, `\\` escaped; other control characters (C0, DEL, C1) and invalid UTF-8 bytes as
/// `\xNN`; bidirectional-text controls as `\u{NNNN}`. Nothing is dropped.
pub fn write_terminal<W: Write>(w: &mut W, b: &[u8]) -> io::Result<()> {
    for chunk in b.utf8_chunks() {
        let valid = chunk.valid();
        let mut start = 0;
        for (i, c) in valid.char_indices() {
            let esc: Option<&str> = match c {
                '\n' => Some("\\n"),
                '\t' => Some("\\t"),
                '\r' => Some("\\r"),
                '\\' => Some("\\\\"),
                _ => None,
            };
            let control = c.is_control() || is_bidi_control(c);
            if esc.is_some() || control {
                w.write_all(&valid.as_bytes()[start..i])?;
                match esc {
                    Some(e) => w.write_all(e.as_bytes())?,
                    None if (c as u32) < 0x100 => write!(w, "\\x{:02x}", c as u32)?,
                    None => write!(w, "\\u{{{:04x}}}", c as u32)?,
                }
                start = i + c.len_utf8();
            }
        }
        w.write_all(&valid.as_bytes()[start..])?;
        for byte in chunk.invalid() {
            write!(w, "\\x{byte:02x}")?;
        }
    }
    Ok(())
}

/// `s` escaped for a terminal ([`write_terminal`]).
pub fn terminal(s: &str) -> String {
    let mut b = Vec::with_capacity(s.len());
    // Writing to a Vec cannot fail.
    let _ = write_terminal(&mut b, s.as_bytes());
    String::from_utf8_lossy(&b).into_owned()
}

/// Writes `b` as the inside of a JSON string (no quotes). Invalid UTF-8 bytes become U+FFFD;
/// returns whether any did, so callers can flag the value as lossy.
pub fn write_json_str<W: Write>(w: &mut W, b: &[u8]) -> io::Result<bool> {
    // The usual case, printable ASCII with nothing to escape, in one write.
    if b.iter()
        .all(|&c| (0x20..0x7f).contains(&c) && c != b'"' && c != b'\\')
    {
        w.write_all(b)?;
        return Ok(false);
    }
    let mut lossy = false;
    for chunk in b.utf8_chunks() {
        let valid = chunk.valid().as_bytes();
        let mut start = 0;
        for (i, &c) in valid.iter().enumerate() {
            let esc: Option<&[u8]> = match c {
                b'"' => Some(b"\\\""),
                b'\\' => Some(b"\\\\"),
                b'\n' => Some(b"\\n"),
                b'\t' => Some(b"\\t"),
                b'\r' => Some(b"\\r"),
                _ => None,
            };
            if esc.is_some() || c < 0x20 || c == 0x7f {
                w.write_all(&valid[start..i])?;
                match esc {
                    Some(e) => w.write_all(e)?,
                    None => write!(w, "\\u{c:04x}")?,
                }
                start = i + 1;
            }
        }
        w.write_all(&valid[start..])?;
        if !chunk.invalid().is_empty() {
            lossy = true;
            w.write_all("\u{fffd}".as_bytes())?;
        }
    }
    Ok(lossy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(b: &[u8]) -> String {
        let mut v = Vec::new();
        write_terminal(&mut v, b).expect("write to Vec");
        String::from_utf8(v).expect("escaped output is UTF-8")
    }

    fn json(b: &[u8]) -> (String, bool) {
        let mut v = b"\"".to_vec();
        let lossy = write_json_str(&mut v, b).expect("write to Vec");
        v.push(b'"');
        (String::from_utf8(v).expect("JSON is UTF-8"), lossy)
    }

    #[test]
    fn terminal_escapes_hostile_names() {
        assert_eq!(term(b"/kubepods/pod1"), "/kubepods/pod1");
        assert_eq!(term(b"a\x1b[31mred"), "a\\x1b[31mred");
        assert_eq!(term(b"tab\there\nnl\\"), "tab\\there\\nnl\\\\");
        assert_eq!(term(b"bad\xff\xfeutf8"), "bad\\xff\\xfeutf8");
        assert_eq!(term("c1\u{9b}x".as_bytes()), "c1\\x9bx");
        assert_eq!(
            term("caf\u{e9} \u{1F600}".as_bytes()),
            "caf\u{e9} \u{1F600}"
        );
        assert_eq!(term(b"del\x7f"), "del\\x7f");
        for s in [&b"\x1b"[..], b"\xff", b"\n", b"\x07bell"] {
            assert!(!term(s).bytes().any(|c| c < 0x20 || c == 0x7f), "{s:?}");
        }
    }

    #[test]
    fn terminal_escapes_bidi_controls() {
        for c in ('\u{202a}'..='\u{202e}')
            .chain('\u{2066}'..='\u{2069}')
            .chain(['\u{200e}', '\u{200f}'])
        {
            let s = format!("a{c}b");
            assert_eq!(
                terminal(&s),
                format!("a\\u{{{:04x}}}b", u32::from(c)),
                "{c:?}"
            );
            assert_eq!(term(s.as_bytes()), terminal(&s));
        }
        assert_eq!(terminal("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        // Neighbours that are not controls stay.
        assert_eq!(
            terminal("\u{2029}\u{2065}\u{206a}\u{200d}"),
            "\u{2029}\u{2065}\u{206a}\u{200d}"
        );
    }

    #[test]
    fn terminal_never_drops_characters() {
        // Every control character comes out escaped, none dropped: the escape of each is as
        // long as or longer than the character, and the text around it stays.
        for c in (0u32..0x100)
            .filter_map(char::from_u32)
            .filter(|c| c.is_control())
        {
            let s = format!("<{c}>");
            let t = terminal(&s);
            assert!(
                t.starts_with('<') && t.ends_with('>') && t.len() >= 4,
                "{c:?} -> {t:?}"
            );
            assert!(!t.chars().any(|x| x.is_control()), "{c:?} -> {t:?}");
        }
        assert_eq!(terminal("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(terminal("a\nb\\"), "a\\nb\\\\");
    }

    #[test]
    fn json_is_always_valid() {
        let cases: [&[u8]; 6] = [
            b"plain",
            b"quote\"back\\slash",
            b"nl\ntab\tesc\x1b",
            b"bad\xff\xc3",
            b"\x00\x01\x7f",
            "\u{2028}ok\u{e9}".as_bytes(),
        ];
        for c in cases {
            let (s, _) = json(c);
            let v: serde_json::Value = serde_json::from_str(&s).expect("valid JSON");
            if let Ok(orig) = std::str::from_utf8(c) {
                assert_eq!(v.as_str(), Some(orig));
            }
        }
        assert!(json(b"bad\xff").1);
        assert!(!json(b"good").1);
    }
}
