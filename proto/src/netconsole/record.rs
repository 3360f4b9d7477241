//! One record as the kernel writes it (`/dev/kmsg` and extended netconsole):
//! the header, the text, the dictionary lines, and netconsole's fragment field.

use std::borrow::Cow;

use super::{NetconsoleError, MAX_HEADER_LEN, MAX_RELEASE_LEN};

/// Position of a fragment in its record's body (`ncfrag=<offset>/<total>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fragment {
    /// Byte offset of this fragment's payload in the full body.
    pub offset: u32,
    /// Size of the full body in bytes.
    pub total: u32,
}

/// One parsed extended netconsole datagram, borrowing from it.
///
/// For an unfragmented record `text` is the message line (without its `\n`) and
/// `dict` the dictionary lines after it. For a fragment (`frag` is `Some`) the
/// text/dictionary boundary is only known after reassembly, so `text` is the raw
/// payload (a byte range of the body, possibly holding `\n` and dictionary bytes)
/// and `dict` is empty; feed it to an [`ExtendedAssembler`](super::ExtendedAssembler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtendedRecord<'a> {
    /// Kernel release prepended by netconsole's `r` option, if present.
    pub release: Option<&'a [u8]>,
    /// Syslog severity, 0 (emerg) to 7 (debug).
    pub level: u8,
    /// Syslog facility (0 for the kernel itself, 1 for `/dev/kmsg` writers by default).
    pub facility: u8,
    /// printk sequence number (restarts on reboot).
    pub seq: u64,
    /// Monotonic timestamp in microseconds since boot.
    pub ts_usec: u64,
    /// Continuation hint: flag `c` (or `+` from 3.x/4.x kernels).
    pub cont: bool,
    /// Fragment position when the record was split by netconsole.
    pub frag: Option<Fragment>,
    /// Message text with `\xNN` escapes as sent, or the raw payload of a fragment.
    pub text: &'a [u8],
    /// Raw dictionary lines (` KEY=VALUE\n`...) of an unfragmented record.
    pub dict: &'a [u8],
}

impl<'a> ExtendedRecord<'a> {
    /// The syslog prefix value, `facility << 3 | level`.
    pub fn prefix(&self) -> u16 {
        u16::from(self.facility) << 3 | u16::from(self.level)
    }

    /// The dictionary's `(KEY, VALUE)` pairs, in order (none for a fragment).
    pub fn dict_pairs(&self) -> DictPairs<'a> {
        DictPairs::new(self.dict)
    }
}

/// Iterator over the `(KEY, VALUE)` pairs of raw dictionary lines.
///
/// Each line loses one leading space and splits at its first `=`; a line without
/// `=` yields itself as key with an empty value; empty lines are skipped.
#[derive(Debug, Clone)]
pub struct DictPairs<'a> {
    rest: &'a [u8],
}

impl<'a> DictPairs<'a> {
    /// Iterates over the pairs in `dict`, raw dictionary bytes.
    pub fn new(dict: &'a [u8]) -> Self {
        Self { rest: dict }
    }
}

impl<'a> Iterator for DictPairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        while !self.rest.is_empty() {
            let (line, rest) = match self.rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
                None => (self.rest, &[][..]),
            };
            self.rest = rest;
            let line = line.strip_prefix(b" ").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            return Some(match line.iter().position(|&b| b == b'=') {
                Some(i) => (&line[..i], &line[i + 1..]),
                None => (line, &[][..]),
            });
        }
        None
    }
}

/// Parses one extended netconsole datagram.
///
/// Accepted: `[<release>,]<prefix>,<seq>,<ts_usec>,<flags>[,<field>...];<payload>`
/// where prefix, seq and ts_usec are plain decimal (no sign, no leading zero; the
/// prefix at most 2047), flags is one of `-`, `c`, `+`, extra fields are non-empty
/// printable ASCII (`ncfrag=` is decoded, others such as `caller=` are ignored),
/// and the release, if any, starts with a digit, is not all digits (so it cannot
/// be mistaken for the prefix) and is at most [`MAX_RELEASE_LEN`] printable bytes. An unfragmented record's text must be
/// printable ASCII ended by `\n` (the kernel escapes everything else) and any
/// bytes after it must start with a space (a dictionary line); together with the
/// exact field structure this keeps ordinary text such as `12,3,4 apples;` from
/// being taken for a record. A fragment's payload must fit within its total.
pub fn parse_extended(datagram: &[u8]) -> Result<ExtendedRecord<'_>, NetconsoleError> {
    let window = &datagram[..datagram.len().min(MAX_HEADER_LEN + 1)];
    let semi = memchr::memchr(b';', window).ok_or(NetconsoleError::NoHeader)?;
    let header = &datagram[..semi];
    let payload = &datagram[semi + 1..];

    let (release, h) = match parse_header(header) {
        Ok(h) => (None, h),
        Err(first) => match header.iter().position(|&b| b == b',') {
            Some(i) if is_release(&header[..i]) => {
                (Some(&header[..i]), parse_header(&header[i + 1..])?)
            }
            _ => return Err(first),
        },
    };

    let (text, dict) = match h.frag {
        Some(frag) => {
            let end = u64::from(frag.offset) + payload.len() as u64;
            if frag.offset >= frag.total || end > u64::from(frag.total) {
                return Err(NetconsoleError::FragmentOutOfRange);
            }
            (payload, &[][..])
        }
        None => {
            let nl = memchr::memchr(b'\n', payload).ok_or(NetconsoleError::MissingNewline)?;
            let text = &payload[..nl];
            // Without an early exit, so that it runs many bytes at a time (every
            // record's text passes here).
            if !text
                .iter()
                .fold(true, |ok, &b| ok & (0x20..=0x7e).contains(&b))
            {
                return Err(NetconsoleError::BadText);
            }
            let dict = &payload[nl + 1..];
            if dict.first().is_some_and(|&b| b != b' ') {
                return Err(NetconsoleError::BadDict);
            }
            (text, dict)
        }
    };

    Ok(ExtendedRecord {
        release,
        level: (h.prefix & 7) as u8,
        facility: (h.prefix >> 3) as u8,
        seq: h.seq,
        ts_usec: h.ts_usec,
        cont: h.cont,
        frag: h.frag,
        text,
        dict,
    })
}

/// Header fields after the optional release.
struct Header {
    prefix: u16,
    seq: u64,
    ts_usec: u64,
    cont: bool,
    frag: Option<Fragment>,
}

fn parse_header(header: &[u8]) -> Result<Header, NetconsoleError> {
    let mut fields = header.split(|&b| b == b',');
    let mut next = || fields.next().ok_or(NetconsoleError::BadHeader);
    let prefix = parse_dec(next()?, 4)?;
    if prefix > 2047 {
        return Err(NetconsoleError::BadNumber);
    }
    let seq = parse_dec(next()?, 20)?;
    let ts_usec = parse_dec(next()?, 20)?;
    let cont = match next()? {
        b"-" => false,
        b"c" | b"+" => true,
        _ => return Err(NetconsoleError::BadFlags),
    };
    let mut frag = None;
    for field in fields {
        if field.is_empty() || !field.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
            return Err(NetconsoleError::BadHeader);
        }
        if let Some(v) = field.strip_prefix(b"ncfrag=") {
            if frag.is_some() {
                return Err(NetconsoleError::BadFragment);
            }
            frag = Some(parse_frag(v).ok_or(NetconsoleError::BadFragment)?);
        }
    }
    Ok(Header {
        prefix: prefix as u16,
        seq,
        ts_usec,
        cont,
        frag,
    })
}

/// Parses `<offset>/<total>` with `total > 0`.
fn parse_frag(v: &[u8]) -> Option<Fragment> {
    let slash = v.iter().position(|&b| b == b'/')?;
    let offset = u32::try_from(parse_dec(&v[..slash], 10).ok()?).ok()?;
    let total = u32::try_from(parse_dec(&v[slash + 1..], 10).ok()?).ok()?;
    (total > 0).then_some(Fragment { offset, total })
}

/// Parses a kernel-printed decimal: digits only, no leading zero, bounded length.
pub(super) fn parse_dec(s: &[u8], max_digits: usize) -> Result<u64, NetconsoleError> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) || (s.len() > 1 && s[0] == b'0') {
        return Err(NetconsoleError::BadHeader);
    }
    if s.len() > max_digits {
        return Err(NetconsoleError::BadNumber);
    }
    s.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(d - b'0')))
            .ok_or(NetconsoleError::BadNumber)
    })
}

fn is_release(s: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= MAX_RELEASE_LEN
        && s[0].is_ascii_digit()
        && !s.iter().all(u8::is_ascii_digit)
        && s.iter().all(|&b| (0x21..=0x7e).contains(&b) && b != b';')
}

/// Decodes the kernel's `\xNN` escapes; any other backslash is kept as is.
///
/// Borrows when there is nothing to decode.
pub fn unescape(text: &[u8]) -> Cow<'_, [u8]> {
    if !text.contains(&b'\\') {
        return Cow::Borrowed(text);
    }
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'\\' {
            if let Some(&[b'x', hi, lo]) = text.get(i + 1..i + 4) {
                if let (Some(hi), Some(lo)) = (hex_val(hi), hex_val(lo)) {
                    out.push(hi << 4 | lo);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(text[i]);
        i += 1;
    }
    Cow::Owned(out)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}
