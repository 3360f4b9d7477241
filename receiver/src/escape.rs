//! The one rule for network text in ncu's own words (SECURITY.md, "Text from the
//! network"): a sender name, a HELLO field, a netconsole field or a quoted last line
//! that ncu-recv puts into a marker, a summary, a report, an environment variable or
//! a journal field can neither end the line or field it sits in nor carry a control
//! or escape byte.
//!
//! - [`field`]: the plain rule. Printable text stays as it is; a backslash becomes
//!   `\\`; an ASCII control byte (tab, newline and ESC included) and DEL become
//!   `\xNN`; a C1 control, a line or paragraph separator and a bidirectional
//!   formatting character become `\u{NNNN}`; a byte that is not UTF-8 becomes `\xNN`.
//!   The result is one line of printable text, and the escaping can be undone.
//! - [`markdown`]: [`field`], then ASCII punctuation that Markdown reads anywhere in a
//!   line (`` \ ` * _ [ ] < > ! & ~ | # ``), and any punctuation the text starts with,
//!   is backslash-escaped (CommonMark §2.4), so the text cannot start a heading, a
//!   list, a link, emphasis or HTML of its own wherever it is put in a line.
//! - [`terminal_line`]: a log line shown on a terminal: control bytes other than tab
//!   and bytes that are not UTF-8 are escaped as in [`field`] (so a log line cannot
//!   drive the terminal); everything else, backslashes included, stays as it is.
//!
//! Log lines written to files and pipes are not touched (byte for byte, CONTRACT.md);
//! JSON output is escaped by the JSON encoder.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Characters escaped although Unicode does not call them controls: they end a line
/// in some viewers (U+2028, U+2029) or reorder what a reader sees (bidirectional
/// formatting: U+200E, U+200F, U+202A-U+202E, U+2066-U+2069).
fn is_format_hazard(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// ASCII punctuation that means something to Markdown anywhere in a line (code,
/// emphasis, links, images, HTML, entities, tables, a heading's closing `#`s). The
/// rest (`-`, `+`, `.`, ...) only means something at the start of a line, so it is
/// escaped only there: `db-7` stays readable in the report's source.
const MARKDOWN_INLINE: &str = "\\`*_[]<>!&~|#";

/// How [`escape_into`] treats what it may keep.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// [`field`].
    Field,
    /// [`markdown`].
    Markdown,
    /// [`terminal_line`]: tab and backslash stay.
    Terminal,
}

fn escape_into(bytes: &[u8], mode: Mode, out: &mut String) {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\t' if mode == Mode::Terminal => out.push(c),
                '\\' if mode == Mode::Terminal => out.push(c),
                '\\' => out.push_str("\\\\"),
                c if c.is_ascii_control() => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if c.is_control() || is_format_hazard(c) => {
                    let _ = write!(out, "\\u{{{:04x}}}", c as u32);
                }
                c if mode == Mode::Markdown
                    && c.is_ascii_punctuation()
                    && (out.is_empty() || MARKDOWN_INLINE.contains(c)) =>
                {
                    out.push('\\');
                    out.push(c);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

/// Whether `bytes` pass [`field`] unchanged.
fn is_plain(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(s) => !s
            .chars()
            .any(|c| c == '\\' || c.is_control() || is_format_hazard(c)),
        Err(_) => false,
    }
}

/// Network text as one line of printable text (the module's plain rule).
pub(crate) fn field(bytes: &[u8]) -> Cow<'_, str> {
    if is_plain(bytes) {
        // Checked just above: UTF-8.
        return Cow::Borrowed(std::str::from_utf8(bytes).unwrap_or_default());
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    escape_into(bytes, Mode::Field, &mut out);
    Cow::Owned(out)
}

/// [`field`] of the first `max` bytes, with ` [...]` when there were more.
pub(crate) fn field_cut(bytes: &[u8], max: usize) -> String {
    let mut out = field(&bytes[..bytes.len().min(max)]).into_owned();
    if bytes.len() > max {
        out.push_str(" [...]");
    }
    out
}

/// Network text for a Markdown line: [`field`], with ASCII punctuation escaped.
pub(crate) fn markdown(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 8);
    escape_into(bytes, Mode::Markdown, &mut out);
    out
}

/// Appends a log line as a terminal shows it (see the module doc).
pub(crate) fn terminal_line(bytes: &[u8], out: &mut Vec<u8>) {
    let clean = bytes
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
    if clean {
        out.extend_from_slice(bytes);
        return;
    }
    let mut s = String::with_capacity(bytes.len() + 8);
    escape_into(bytes, Mode::Terminal, &mut s);
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// xorshift64*: the seeded source of the property tests here.
    pub(crate) struct Rng(pub(crate) u64);
    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        /// Bytes that favour what breaks text: controls, escapes, Markdown, UTF-8
        /// pieces, bidi characters.
        pub(crate) fn hostile_bytes(&mut self, max: usize) -> Vec<u8> {
            const PIECES: &[&[u8]] = &[
                b"\n",
                b"\r",
                b"\x1b]0;pwned\x07",
                b"\x1b[2J",
                b"### ncu: end",
                b"# ",
                b"## ",
                b"- ",
                b"* ",
                b"1. ",
                b"> ",
                b"[x](http://e)",
                b"<b>",
                b"`",
                b"```",
                b"~~~",
                b"\\",
                b"|",
                b"\t",
                b"\x00",
                b"\x7f",
                b"\xc2\x9b",
                b"\xe2\x80\xa8",
                b"\xe2\x80\xae",
                b"\xff",
                b"\xe2\x82",
                b"_",
                b"**",
                b"==",
                b"---",
                b"evil",
                b" ",
                b"\xc3\xa9",
            ];
            let n = (self.next() % (max as u64 + 1)) as usize;
            let mut v = Vec::new();
            while v.len() < n {
                if self.next().is_multiple_of(4) {
                    v.push(self.next() as u8);
                } else {
                    v.extend_from_slice(PIECES[(self.next() % PIECES.len() as u64) as usize]);
                }
            }
            v
        }
    }

    /// Undoes [`field`].
    fn unescape(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = s;
        while let Some(i) = rest.find('\\') {
            out.extend_from_slice(&rest.as_bytes()[..i]);
            let tail = &rest[i + 1..];
            if let Some(t) = tail.strip_prefix('\\') {
                out.push(b'\\');
                rest = t;
            } else if let Some(t) = tail.strip_prefix('x') {
                out.push(u8::from_str_radix(&t[..2], 16).expect("two hex digits"));
                rest = &t[2..];
            } else {
                let t = tail.strip_prefix("u{").expect("\\u{");
                let end = t.find('}').expect("closing brace");
                let c = char::from_u32(u32::from_str_radix(&t[..end], 16).expect("hex"))
                    .expect("a char");
                let mut b = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                rest = &t[end + 1..];
            }
        }
        out.extend_from_slice(rest.as_bytes());
        out
    }

    #[test]
    fn the_hostile_name_of_the_issue_becomes_one_inert_line() {
        let name = b"evil\x1b]0;pwned\x07\nfake ### ncu: end";
        assert_eq!(field(name), "evil\\x1b]0;pwned\\x07\\x0afake ### ncu: end");
        assert_eq!(field(b"db-7"), "db-7");
        assert!(matches!(field(b"db-7"), Cow::Borrowed(_)));
        assert_eq!(field(b"a\\b\xffc\xc2\x9bd"), "a\\\\b\\xffc\\u{009b}d");
        assert_eq!(
            field("x\u{202e}y\u{2028}".as_bytes()),
            "x\\u{202e}y\\u{2028}"
        );
        assert_eq!(markdown(b"## [x](y)"), "\\#\\# \\[x\\](y)");
        assert_eq!(markdown(b"- db-7"), "\\- db-7");
        let mut t = Vec::new();
        terminal_line(b"a\tb\\c\x1b[2J\xff", &mut t);
        assert_eq!(t, b"a\tb\\c\\x1b[2J\\xff");
    }

    #[test]
    fn field_is_printable_one_line_and_reversible() {
        let seed = 0x5eed_0001;
        println!("seed {seed:#x}");
        let mut rng = Rng(seed);
        for _ in 0..20_000 {
            let bytes = rng.hostile_bytes(64);
            let f = field(&bytes);
            assert!(
                !f.chars().any(|c| c.is_control() || is_format_hazard(c)),
                "{bytes:?} -> {f:?}"
            );
            assert_eq!(unescape(&f), bytes, "{f:?}");
            let mut t = Vec::new();
            terminal_line(&bytes, &mut t);
            let t = String::from_utf8(t).expect("terminal_line gives UTF-8");
            assert!(!t.chars().any(|c| c != '\t' && c.is_control()), "{t:?}");
        }
    }
}
