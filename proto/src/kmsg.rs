//! The kernel's log read from `/dev/kmsg`, with every record accounted for.
//!
//! `/dev/kmsg` hands out one record per `read(2)`, in the kernel's own format
//! (`<prefix>,<seq>,<ts_usec>,<flags>[,<field>...];<text>\n` then dictionary lines
//! ` KEY=VALUE\n`, as extended netconsole sends), numbered by the kernel. When the
//! ring overwrote records before they were read, `read` fails once with `EPIPE`
//! and then goes on from the oldest record left.
//!
//! [`Reader`] (the sending end) turns the records read into the lines ncu-send
//! sends, flagged [`LINE_KMSG`](crate::wire::LINE_KMSG): each is the record as
//! read (its last newline included) with what was skipped right before it written
//! into its header as two fields of ncu's own, which the kernel format allows
//! ("unknown fields should be ignored"):
//! - `ncu_overwritten=A-B`: records `A..=B` were overwritten in the ring before
//!   ncu-send read them (lost; repeated when there are several ranges);
//! - `ncu_filtered=N`: the `N` records just before this one were left out on
//!   purpose (`--kmsg-level`), not lost.
//!
//! [`Skipped::parse`] (the receiving end) reads them back. Between two records
//! that arrived one after the other, every kernel sequence number is thus either
//! sent, overwritten or filtered: nothing is unaccounted for.
//!
//! ```
//! use ncu_proto::kmsg::{From, Reader, Skipped};
//!
//! let mut reader = Reader::new(From::All, None);
//! let mut line = Vec::new();
//! // The ring had already dropped records 0 to 4 when ncu-send started.
//! assert!(reader.record(b"6,5,100,-;first\n", &mut line));
//! assert_eq!(line, b"6,5,100,-,ncu_overwritten=0-4;first\n");
//! reader.overrun(); // EPIPE: the ring overwrote what came next
//! assert!(reader.record(b"6,9,200,-;after the overrun\n", &mut line));
//! let skipped = Skipped::parse(&line);
//! assert_eq!(skipped.overwritten(), &[(6, 8)]);
//! assert_eq!(skipped.filtered, 0);
//! ```

use crate::netconsole::{parse_extended, ExtendedRecord, NetconsoleError};

/// The largest record `/dev/kmsg` hands out (the kernel's `CONSOLE_EXT_LOG_MAX`
/// is 8 KiB); a read buffer this large never sees `EINVAL`.
pub const MAX_RECORD: usize = 16 * 1024;
/// Most overwritten ranges one line names. Past it (overruns again and again while
/// a level filter leaves out most records), the last range is widened over the
/// filtered records in between: those are then counted overwritten, an upper
/// bound that is still exact in sum.
pub const MAX_RANGES: usize = 16;

/// Where reading starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// The oldest record still in the ring (a boot's first records, when early
    /// enough); records the ring already dropped are reported overwritten.
    All,
    /// Only records written from now on (the caller seeks `/dev/kmsg` to its end).
    Now,
    /// From this kernel sequence number: older records are not sent; if the ring
    /// no longer holds it, what it dropped from there is reported overwritten
    /// (resuming after a restart of ncu-send).
    Seq(u64),
}

/// Counters of a [`Reader`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records read.
    pub read: u64,
    /// Records sent.
    pub sent: u64,
    /// Records left out by the level filter.
    pub filtered: u64,
    /// Records the ring overwrote before they were read.
    pub overwritten: u64,
    /// Overruns (`EPIPE` from `read`).
    pub overruns: u64,
    /// Reads that were not a record (never seen from a real kernel).
    pub malformed: u64,
}

/// Turns `/dev/kmsg` records into ncu lines; see the module docs.
#[derive(Debug, Clone)]
pub struct Reader {
    from: From,
    max_level: Option<u8>,
    /// The sequence number the next record should have (`None`: nothing read yet).
    expected: Option<u64>,
    /// Skipped since the last record sent.
    overwritten: Vec<(u64, u64)>,
    filtered: u64,
    /// Of `filtered`, those after the last overwritten range.
    filtered_after_range: u64,
    last_sent: Option<u64>,
    stats: Stats,
}

impl Reader {
    /// A reader starting at `from`, sending records of level `max_level` and below
    /// (all when `None`).
    pub fn new(from: From, max_level: Option<u8>) -> Reader {
        Reader {
            from,
            max_level,
            expected: None,
            overwritten: Vec::new(),
            filtered: 0,
            filtered_after_range: 0,
            last_sent: None,
            stats: Stats::default(),
        }
    }

    /// The kernel sequence number of the last record turned into a line.
    pub fn last_sent(&self) -> Option<u64> {
        self.last_sent
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// `read` failed with `EPIPE`: the ring overwrote records not yet read. The
    /// next record read says how many.
    pub fn overrun(&mut self) {
        self.stats.overruns += 1;
    }

    /// One record as `read` returned it. Returns true when `line` (cleared first)
    /// holds the line to send; false when the record is left out (filtered, or
    /// before the start).
    pub fn record(&mut self, record: &[u8], line: &mut Vec<u8>) -> bool {
        line.clear();
        self.stats.read += 1;
        let Some((seq, level, semi)) = header(record) else {
            // Not the kernel's format: sent as it is, so that nothing read is lost.
            self.stats.malformed += 1;
            line.extend_from_slice(record);
            return true;
        };
        let expected = match (self.expected, self.from) {
            (Some(e), _) => e,
            (None, From::All) => 0,
            (None, From::Now) => seq,
            (None, From::Seq(start)) => start,
        };
        if seq < expected {
            // Before the start (or a record read again): not ours to send.
            return false;
        }
        if seq > expected {
            self.stats.overwritten += seq - expected;
            self.note_overwritten(expected, seq - 1);
        }
        self.expected = Some(seq + 1);
        if self.max_level.is_some_and(|max| level > max) {
            self.filtered += 1;
            self.filtered_after_range += 1;
            self.stats.filtered += 1;
            return false;
        }
        line.extend_from_slice(&record[..semi]);
        for (first, last) in self.overwritten.drain(..) {
            line.extend_from_slice(format!(",ncu_overwritten={first}-{last}").as_bytes());
        }
        if self.filtered > 0 {
            line.extend_from_slice(format!(",ncu_filtered={}", self.filtered).as_bytes());
            self.filtered = 0;
        }
        self.filtered_after_range = 0;
        line.extend_from_slice(&record[semi..]);
        self.last_sent = Some(seq);
        self.stats.sent += 1;
        true
    }

    fn note_overwritten(&mut self, first: u64, last: u64) {
        let full = self.overwritten.len() >= MAX_RANGES;
        match self.overwritten.last_mut() {
            Some(r) if r.1 + 1 == first => r.1 = last,
            Some(r) if full => {
                // Widened over the filtered records since: they move to overwritten.
                r.1 = last;
                self.filtered -= self.filtered_after_range;
                self.stats.filtered -= self.filtered_after_range;
                self.stats.overwritten += self.filtered_after_range;
            }
            _ => self.overwritten.push((first, last)),
        }
        self.filtered_after_range = 0;
    }
}

/// The sequence number, level and `;` position of a record, when it is one.
fn header(record: &[u8]) -> Option<(u64, u8, usize)> {
    let semi = record.iter().position(|&b| b == b';')?;
    let parsed = parse_extended(record).ok()?;
    Some((parsed.seq, parsed.level, semi))
}

/// What a line's header says was skipped right before its record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skipped {
    overwritten: Vec<(u64, u64)>,
    /// Records left out on purpose (`--kmsg-level`), not losses.
    pub filtered: u64,
}

impl Skipped {
    /// Reads the `ncu_` fields of a line's header (anything malformed is ignored).
    pub fn parse(line: &[u8]) -> Skipped {
        let mut skipped = Skipped::default();
        let Some(semi) = line.iter().position(|&b| b == b';') else {
            return skipped;
        };
        for field in line[..semi].split(|&b| b == b',') {
            if let Some(v) = field.strip_prefix(b"ncu_overwritten=") {
                let range = std::str::from_utf8(v).ok().and_then(|v| {
                    let (a, b) = v.split_once('-')?;
                    Some((a.parse().ok()?, b.parse().ok()?))
                });
                if let Some((a, b)) = range.filter(|(a, b)| a <= b) {
                    if skipped.overwritten.len() < MAX_RANGES {
                        skipped.overwritten.push((a, b));
                    }
                }
            } else if let Some(v) = field.strip_prefix(b"ncu_filtered=") {
                let n = std::str::from_utf8(v).ok().and_then(|v| v.parse().ok());
                skipped.filtered = skipped.filtered.saturating_add(n.unwrap_or(0));
            }
        }
        skipped
    }

    /// Ranges overwritten before ncu-send read them, oldest first.
    pub fn overwritten(&self) -> &[(u64, u64)] {
        &self.overwritten
    }

    /// How many records were overwritten.
    pub fn overwritten_count(&self) -> u64 {
        self.overwritten
            .iter()
            .map(|(a, b)| b - a + 1)
            .fold(0u64, u64::saturating_add)
    }

    /// Nothing was skipped.
    pub fn is_empty(&self) -> bool {
        self.overwritten.is_empty() && self.filtered == 0
    }
}

/// Parses a line flagged [`LINE_KMSG`](crate::wire::LINE_KMSG) as the kernel
/// record it carries (the `ncu_` fields are ignored by the parser).
pub fn parse_line(line: &[u8]) -> Result<ExtendedRecord<'_>, NetconsoleError> {
    parse_extended(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Model: random records, overruns, filters. Between two records sent, every
    /// kernel sequence number is overwritten (named exactly, by range) or filtered
    /// (counted): the model's own record of what it dropped and filtered agrees.
    #[test]
    fn every_sequence_number_is_accounted_for() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut widened = 0;
        for round in 0..200 {
            // Every fourth round: a strict filter and frequent overruns (ranges
            // past MAX_RANGES between two records sent).
            let stormy = round % 4 == 0;
            let max_level = match round % 3 {
                _ if stormy => Some(0),
                0 => None,
                _ => Some((round % 8) as u8),
            };
            let mut reader = Reader::new(From::All, max_level);
            let mut seq = next() % 50;
            let mut line = Vec::new();
            // The model: what the ring dropped, and what the filter left out,
            // since the last record sent.
            let mut dropped: Vec<u64> = (0..seq).collect();
            let mut left_out = 0u64;
            let mut prev: Option<u64> = None;
            for _ in 0..500 {
                if next() % if stormy { 2 } else { 10 } == 0 {
                    let n = 1 + next() % 30;
                    dropped.extend(seq..seq + n); // the ring overwrote these
                    seq += n;
                    reader.overrun();
                }
                let level = (next() % 8) as u8;
                let record = format!("{level},{seq},{},-;text {seq}\n", seq * 10);
                if reader.record(record.as_bytes(), &mut line) {
                    assert!(max_level.is_none_or(|m| level <= m));
                    let skipped = Skipped::parse(&line);
                    let named: Vec<u64> = skipped
                        .overwritten()
                        .iter()
                        .flat_map(|&(a, b)| a..=b)
                        .collect();
                    if skipped.overwritten().len() < MAX_RANGES {
                        assert_eq!(named, dropped, "round {round}: overwritten at {seq}");
                        assert_eq!(skipped.filtered, left_out, "round {round}: filtered");
                    } else {
                        widened += 1;
                        assert!(dropped.iter().all(|d| named.contains(d)), "round {round}");
                    }
                    let sent = parse_line(&line).expect("a record").seq;
                    assert_eq!(sent, seq);
                    let between = sent - prev.map_or(0, |p| p + 1);
                    assert_eq!(between, skipped.overwritten_count() + skipped.filtered);
                    assert!(line.ends_with(format!(";text {seq}\n").as_bytes()));
                    (prev, left_out) = (Some(sent), 0);
                    dropped.clear();
                } else {
                    left_out += 1;
                }
                seq += 1;
            }
            assert_eq!(reader.last_sent(), prev);
            assert_eq!(reader.stats().read, 500);
        }
        assert!(widened > 0, "the widening was exercised");
    }

    #[test]
    fn from_now_and_from_seq() {
        let mut line = Vec::new();
        let mut now = Reader::new(From::Now, None);
        assert!(now.record(b"6,40,1,-;x\n", &mut line));
        assert_eq!(line, b"6,40,1,-;x\n", "nothing before now is reported");
        let mut resume = Reader::new(From::Seq(10), None);
        assert!(!resume.record(b"6,8,1,-;sent before\n", &mut line));
        assert!(!resume.record(b"6,9,1,-;sent before\n", &mut line));
        assert!(resume.record(b"6,10,1,-;first new\n", &mut line));
        assert_eq!(line, b"6,10,1,-;first new\n");
        let mut late = Reader::new(From::Seq(10), None);
        assert!(late.record(b"6,15,1,-;the ring moved on\n", &mut line));
        assert_eq!(Skipped::parse(&line).overwritten(), &[(10, 14)]);
        assert_eq!(late.stats().overwritten, 5);
    }

    #[test]
    fn dictionary_lines_and_fields_survive() {
        let mut reader = Reader::new(From::All, Some(6));
        let mut line = Vec::new();
        assert!(!reader.record(b"7,0,1,-;debug\n", &mut line));
        assert!(!reader.record(b"15,1,1,-;user debug\n", &mut line));
        let rec = b"6,2,3,c,caller=T1;usb 1-1: new device\n SUBSYSTEM=usb\n DEVICE=c189:1\n";
        assert!(reader.record(rec, &mut line));
        let parsed = parse_line(&line).expect("parses");
        assert_eq!(parsed.seq, 2);
        assert!(parsed.cont);
        assert_eq!(parsed.text, b"usb 1-1: new device");
        let dict: Vec<_> = parsed.dict_pairs().collect();
        assert_eq!(
            dict,
            [(&b"SUBSYSTEM"[..], &b"usb"[..]), (b"DEVICE", b"c189:1")]
        );
        assert_eq!(Skipped::parse(&line).filtered, 2);
        assert!(line.starts_with(b"6,2,3,c,caller=T1,ncu_filtered=2;"));
    }

    #[test]
    fn hostile_fields_are_ignored() {
        for line in [
            &b"6,1,1,-,ncu_overwritten=9-3;x"[..],
            b"6,1,1,-,ncu_overwritten=a-b,ncu_filtered=zz;x",
            b"ncu_filtered=5",
            b"6,1,1,-,ncu_overwritten=99999999999999999999999-1;x",
        ] {
            let s = Skipped::parse(line);
            assert!(s.is_empty(), "{line:?}: {s:?}");
        }
        let many = "6,1,1,-".to_owned() + &",ncu_overwritten=1-1".repeat(100) + ";x";
        assert_eq!(
            Skipped::parse(many.as_bytes()).overwritten().len(),
            MAX_RANGES
        );
    }
}
